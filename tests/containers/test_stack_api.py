"""The stack as a client sees it, through the gateway's published loopback port only."""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import pytest
from PIL import Image

from dev_stack.containers import API_KEY, SERVICES, RunningStack
from qie_client.client import QieError
from tests import images
from tests.gateway_server import wait_for

pytestmark = [pytest.mark.containers, pytest.mark.timeout(1800)]
AUTH = {"Authorization": f"Bearer {API_KEY}"}
BLACK_AND_WHITE = "make it black and white"


def is_grayscale(data: bytes) -> bool:
    pixels = np.asarray(images.decode(data).convert("RGB"))
    return bool(
        (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()
    )


def test_the_seed_photo_has_colour_so_grey_pixels_come_from_the_edit() -> None:
    assert not is_grayscale(images.jpeg_bytes(320, 240))


# --- 35a: healthy, non-root, Triton unpublished ---------------------------------------------


def test_every_service_is_healthy(stack: RunningStack) -> None:
    for service in SERVICES:
        state = stack.container(service)["State"]
        assert state["Status"] == "running", service
        assert state["Health"]["Status"] == "healthy", service
    health = stack.health()
    assert health["status"] == "READY"
    assert health["models"] == {"classic_edit": True, "qwen_image_edit": True}


def test_every_process_of_every_container_runs_as_non_root(stack: RunningStack) -> None:
    for service in SERVICES:
        uids = stack.process_uids(service)
        assert uids, f"{service} runs no process"
        assert 0 not in uids, f"{service} runs a process as root: {uids}"
    # Triton's own Python backend stubs, not just its server, run as the image's user.
    assert set(stack.process_uids("triton-cpu")) == {10001}
    assert len(stack.process_uids("triton-cpu")) >= 3


def test_triton_publishes_no_port_and_the_gateway_only_loopback(stack: RunningStack) -> None:
    triton = stack.container("triton-cpu")
    assert not triton["HostConfig"]["PortBindings"]
    assert all(binding is None for binding in triton["NetworkSettings"]["Ports"].values())
    assert set(triton["NetworkSettings"]["Ports"]) == {"8001/tcp", "8002/tcp", "8003/tcp"}
    bindings = stack.container("qwen-image-edit")["HostConfig"]["PortBindings"]
    assert [b["HostIp"] for b in bindings["8000/tcp"]] == ["127.0.0.1"]


# --- Through the gateway ----------------------------------------------------------------------


def test_no_key_or_a_wrong_key_is_401(stack: RunningStack) -> None:
    for headers in ({}, {"Authorization": "Bearer not-the-key"}):
        response = httpx.get(f"{stack.gateway_url}/models", headers=headers, timeout=10)
        assert response.status_code == 401
        assert response.json()["code"] == "unauthorized"
    with stack.client(key=None) as client, pytest.raises(QieError) as refused:
        client.edit(images.jpeg_bytes(), BLACK_AND_WHITE, model="classic_edit")
    assert refused.value.status == 401


def test_seed_flow_jpeg_to_black_and_white_as_seed_json(stack: RunningStack) -> None:
    response = httpx.post(
        f"{stack.gateway_url}/process",
        headers=AUTH,
        files={"image": ("photo.jpg", images.jpeg_bytes(320, 240), "image/jpeg")},
        data={"prompt": BLACK_AND_WHITE, "model": "classic_edit", "image_id": "seed-1"},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    assert body["model_used"] == "classic_edit"
    assert body["image_id"] == "seed-1"
    edited = base64.b64decode(body["processed_image"])
    assert Image.open(io.BytesIO(edited)).size == (320, 240)
    assert is_grayscale(edited)


def test_seed_flow_jpeg_to_black_and_white_as_the_raw_image(stack: RunningStack) -> None:
    with stack.client() as client:
        result = client.edit(images.jpeg_bytes(320, 240), BLACK_AND_WHITE, model="classic_edit")
    assert result.format == "png"
    assert (result.width, result.height) == (320, 240)
    assert result.operations == ["grayscale"]
    assert is_grayscale(result.image)


def test_a_region_of_a_phone_photo_is_edited_at_full_size_and_the_rest_kept(
    stack: RunningStack,
) -> None:
    photo = images.phone_photo_png(4000, 3000)
    with stack.client() as client:
        result = client.edit(
            photo, BLACK_AND_WHITE, model="classic_edit", region=(1400, 900, 1200, 1000)
        )
    assert (result.width, result.height) == (4000, 3000)
    assert result.local is not None and result.local["crop"][2] < 4000
    out = np.asarray(images.decode(result.image).convert("RGB"))
    original = np.asarray(images.decode(photo).convert("RGB"))
    inside, outside = out[1000:1800, 1500:2500], (slice(0, 800), slice(0, 4000))
    assert (inside[..., 0] == inside[..., 1]).all() and (inside[..., 1] == inside[..., 2]).all()
    assert (out[outside] == original[outside]).all()


def test_tiny_qwen_job_streams_progress_then_cancel_ends_it_cancelled(
    stack: RunningStack,
) -> None:
    with stack.client() as client:
        job_id = client.submit(images.png_bytes(), "make the sky purple", options={"steps": 100})
        seen = []
        for event in client.events(job_id):
            seen.append(event.event)
            if event.event == "progress" and event.data["step"] >= 2:
                assert client.cancel(job_id)["status"] == "cancelled"
        assert seen[:2] == ["queued", "started"]
        assert seen.count("progress") >= 2
        assert seen[-1] == "cancelled"
        job = wait_for(lambda: (j := client.job(job_id))["status"] == "cancelled" and j)
        assert job["progress"]["step"] < 100
        with pytest.raises(QieError) as gone:
            client.result(job_id)
        assert gone.value.status == 410
