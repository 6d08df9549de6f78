"""Local edits end to end: a mask or a region through the gateway and a real tritonserver.

The engine's crop, stitch and feather are tested alone in tests/engine/test_local_edit.py; here a
phone-sized photo goes in, and what comes back is read pixel by pixel.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np
import pytest

from qie_client.client import TERMINAL_EVENTS, QieClient
from qie_engine.local_edit import default_feather, feather_reach
from tests import images
from tests.engine.mask_checks import beyond, pixels, well_inside
from tests.gateway_server import KEY_A, GatewayServer

pytestmark = pytest.mark.integration
AUTH = {"Authorization": f"Bearer {KEY_A}"}
PHONE = (4000, 3000)
# About 10 % of the photo, away from its edges.
REGION = (1400, 900, 1200, 1000)
QUICK = {"steps": 2, "seed": 0, "true_cfg_scale": 1.0}


def region_box(region: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    x, y, w, h = region
    return x, y, x + w, y + h


def grey(rgb: np.ndarray) -> np.ndarray:
    return (rgb[..., 0] == rgb[..., 1]) & (rgb[..., 1] == rgb[..., 2])


def post(gateway: GatewayServer, files: list[tuple[str, Any]], **data: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/process",
        headers={**AUTH, "Accept": "image/*"},
        files=files,
        data={"prompt": "make it black and white", "model": "classic_edit", **data},
        timeout=120,
    )


def test_a_region_of_a_phone_photo_comes_back_at_full_size_grey_inside_identical_outside(
    gateway: GatewayServer,
) -> None:
    photo = images.phone_photo_png(*PHONE)
    response = post(gateway, [("image", ("photo.png", photo))], region="1400,900,1200,1000")
    assert response.status_code == 200, response.text
    out = pixels(images.decode(response.content))
    assert out.shape[:2] == (PHONE[1], PHONE[0])
    local = json.loads(response.headers["X-Local-Edit"])
    assert local["crop"][2] * local["crop"][3] < PHONE[0] * PHONE[1] / 4  # only its crop was edited
    assert local["working_size"] == local["crop"][2:]  # classic_edit edits a crop as it is
    mask = images.rectangle_mask(PHONE, region_box(REGION))
    reach = feather_reach(default_feather(PHONE))
    assert local["feather"] == default_feather(PHONE) == 30
    original = pixels(images.decode(photo))
    outside, inside = beyond(mask, reach), well_inside(mask, reach)
    assert (out[outside] == original[outside]).all()
    assert grey(out[inside]).all()
    assert not grey(original[inside]).all()  # the photo was colourful there


def test_a_painted_mask_on_the_tiny_qwen_model_keeps_every_pixel_outside_it(
    gateway: GatewayServer,
) -> None:
    photo = images.png_bytes(640, 480)
    mask = images.painted_mask((640, 480), (380, 200, 560, 380))
    result = gateway.client().edit(
        photo,
        "make the ball red",
        model="qwen_image_edit",
        options=QUICK,
        mask=images.encode(mask, "PNG"),
    )
    assert (result.width, result.height) == (640, 480)
    assert result.local is not None and result.local["working_size"] != result.local["crop"][2:]
    out, original = pixels(images.decode(result.image)), pixels(images.decode(photo))
    outside = beyond(mask, feather_reach(result.local["feather"]))
    assert (out[outside] == original[outside]).all()
    assert (out[~outside] != original[~outside]).any()  # random weights change the inside


def test_an_exif_rotated_photo_takes_a_mask_of_its_upright_size(gateway: GatewayServer) -> None:
    photo = images.exif_orientation_6(320, 240)  # shown 240x320
    mask = images.mask_png((240, 320), (40, 40, 200, 160))
    response = post(gateway, [("image", ("photo.jpg", photo)), ("mask", ("mask.png", mask))])
    assert response.status_code == 200, response.text
    assert images.decode(response.content).size == (240, 320)


def test_output_size_input_gives_the_tiny_qwen_models_edit_the_inputs_size(
    gateway: GatewayServer,
) -> None:
    result = gateway.client().edit(
        images.png_bytes(640, 480),
        "sharper",
        model="qwen_image_edit",
        options={**QUICK, "output_size": "input"},
    )
    assert (result.width, result.height) == (640, 480)
    assert images.decode(result.image).size == (640, 480)
    assert result.local is None


@pytest.mark.parametrize(
    ("parts", "fields", "code"),
    [
        ({"mask": images.mask_png((32, 24), (0, 0, 8, 8))}, {}, "mask_size_mismatch"),
        ({"mask": images.mask_png((64, 48), (0, 0, 8, 8), value=0)}, {}, "mask_empty"),
        ({"mask": b"this is no image"}, {}, "invalid_mask"),
        ({}, {"region": "60,40,10,10"}, "region_outside_image"),
        (
            {"mask": images.mask_png((64, 48), (0, 0, 8, 8))},
            {"region": "0,0,8,8"},
            "invalid_options",
        ),
    ],
    ids=["size-mismatch", "empty", "not-an-image", "region-outside", "mask-and-region"],
)
def test_each_bad_mask_is_a_422_saying_what_to_do_and_makes_no_job(
    gateway: GatewayServer, parts: dict[str, bytes], fields: dict[str, str], code: str
) -> None:
    jobs = gateway.job_count()
    files = [("image", ("photo.png", images.png_bytes()))]
    files += [(name, (f"{name}.png", data)) for name, data in parts.items()]
    response = post(gateway, files, **fields)
    assert response.status_code == 422
    error = response.json()
    assert error["code"] == code and error["message"]
    assert gateway.job_count() == jobs


def test_a_masked_job_runs_from_redis_on_any_replica(redis_gateway: GatewayServer) -> None:
    """The mask is kept with the job in Redis, as its images are, and reaches the model."""
    client: QieClient = redis_gateway.client()
    photo = images.png_bytes(320, 240)
    mask = images.mask_png((320, 240), (100, 60, 220, 180))
    job_id = client.submit(photo, "make it black and white", model="classic_edit", mask=mask)
    final = [e.event for e in client.events(job_id) if e.event in TERMINAL_EVENTS]
    status = client.job(job_id)
    assert final == ["completed"], status
    assert status["status"] == "completed", status
    assert status["result"]["local"]["crop"]
    out = pixels(images.decode(client.result(job_id)))
    inside = well_inside(images.rectangle_mask((320, 240), (100, 60, 220, 180)), 4)
    assert grey(out[inside]).all()
