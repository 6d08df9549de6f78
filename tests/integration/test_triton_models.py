"""Both models through a real tritonserver, over gRPC streaming as the gateway talks to them."""

from __future__ import annotations

import queue
import time
from typing import Any

import httpx
import numpy as np
import pytest

from dev_stack.processes import ROOT
from dev_stack.triton import SHM_DIR, TritonServer
from dev_stack.triton_stream import EditStream, StreamResult, edit_inputs, stream_edit
from qie_engine import contract
from qie_engine.local_edit import feather_reach
from tests import images
from tests.model_metrics import model_counts, steps_until_cancelled

pytestmark = pytest.mark.integration

QWEN, CLASSIC = "qwen_image_edit", "classic_edit"
QUICK = {"steps": 2, "seed": 1, "true_cfg_scale": 1.0, "width": 64, "height": 64}


def assert_good_qwen_edit(server: TritonServer) -> None:
    result = stream_edit(server.grpc_url, QWEN, [images.png_bytes()], "brighter", options=QUICK)
    assert result.error is None, result.error
    assert result.steps == [1, 2]
    assert result.image is not None
    assert images.decode(result.image).size == (64, 64)


@pytest.mark.parametrize("model", [CLASSIC, QWEN])
def test_triton_serves_each_model_with_the_contracts_tensors(
    triton_server: TritonServer, model: str
) -> None:
    """config.pbtxt names no tensor: Triton took them from the model's auto_complete_config."""
    config = httpx.get(f"{triton_server.http_url}/v2/models/{model}/config", timeout=10).json()
    declared = {
        (t["name"], t["data_type"], tuple(int(d) for d in t["dims"]), t.get("optional", False))
        for t in config["input"] + config["output"]
    }
    expected = {
        (t.name, t.data_type, t.dims, t.optional) for t in contract.INPUTS + contract.OUTPUTS
    }
    assert declared == expected
    assert config["model_transaction_policy"]["decoupled"] is True


def test_classic_edit_streams_progress_then_a_black_and_white_image(
    triton_server: TritonServer,
) -> None:
    result = stream_edit(
        triton_server.grpc_url, CLASSIC, [images.png_bytes(64, 48)], "make it black and white"
    )
    assert result.error is None, result.error
    assert [(e["step"], e["total"], e["message"]) for e in result.events] == [(1, 1, "grayscale")]
    assert result.final_meta is not None
    assert result.final_meta["operations"] == ["grayscale"]
    assert result.image is not None
    arr = np.asarray(images.decode(result.image).convert("RGB")).astype(int)
    assert arr.shape == (48, 64, 3)
    assert (arr[..., 0] == arr[..., 1]).all()
    assert (arr[..., 1] == arr[..., 2]).all()
    assert arr.std() > 10  # a real picture, not a blank one


def test_qwen_edit_streams_every_step_in_order_then_a_png_of_the_reported_size(
    triton_server: TritonServer,
) -> None:
    result = stream_edit(
        triton_server.grpc_url,
        QWEN,
        [images.jpeg_bytes(64, 48)],
        "make it brighter",
        options={"steps": 4, "seed": 5, "true_cfg_scale": 1.0},
    )
    assert result.error is None, result.error
    assert result.steps == [1, 2, 3, 4]
    assert {e["total"] for e in result.events} == {4}
    meta = result.final_meta
    assert meta is not None
    assert meta["type"] == "result"
    assert meta["random_weights"] is True
    assert (meta["seed"], meta["steps"], meta["format"]) == (5, 4, "png")
    assert result.image is not None
    img = images.decode(result.image)
    assert img.format == "PNG"
    assert img.size == (meta["width"], meta["height"])


@pytest.mark.parametrize(
    ("model", "facts"),
    [
        (QWEN, {"variant": "edit", "max_images": 1, "random_weights": True}),
        (CLASSIC, {"variant": "classic", "max_images": 1, "random_weights": False}),
    ],
)
def test_describe_returns_the_model_facts(
    triton_server: TritonServer, model: str, facts: dict[str, Any]
) -> None:
    result = stream_edit(triton_server.grpc_url, model, None, None, describe=True)
    assert result.error is None, result.error
    assert result.events == []
    assert result.image is None
    described = result.final_meta
    assert described is not None
    assert described["type"] == "describe"
    assert described["model"] == model
    assert {key: described[key] for key in facts} == facts
    if model == CLASSIC:
        assert any(entry.startswith("grayscale") for entry in described["vocabulary"])
    else:
        assert described["pipeline"] == "QwenImageEditPipeline"
        assert described["defaults"] == {"preset": "fast", "steps": 8, "true_cfg_scale": 1.0}


def test_cancel_mid_run_stops_within_one_step_and_the_model_serves_the_next_request(
    triton_server: TritonServer,
) -> None:
    request_id = f"cancel-{time.monotonic_ns()}"
    before = model_counts(triton_server, QWEN)
    # 512 x 512 makes a step take long enough (~0.3 s here) to see where the run stopped.
    options = {"steps": 50, "seed": 1, "true_cfg_scale": 1.0, "width": 512, "height": 512}
    stream = EditStream(triton_server.grpc_url)
    stream.send(
        QWEN, edit_inputs([images.png_bytes()], "make it brighter", options=options), request_id
    )
    result = StreamResult()
    while len(result.events) < 2:
        assert stream.next(result, timeout=60), result.error
    stream.cancel()
    late: list[Any] = []
    try:
        while True:
            late.append(stream.responses.get(timeout=1.0))
    except queue.Empty:
        pass
    stream.close()
    late_progress = [got for got, error in late if error is None and got.as_numpy("IMAGE") is None]
    late_images = [
        got for got, error in late if error is None and got.as_numpy("IMAGE") is not None
    ]
    assert len(late_progress) <= 1
    assert late_images == []
    # The model itself stopped: at most one step after the 2nd progress event the client saw.
    assert steps_until_cancelled(triton_server, QWEN, before) <= 3
    assert_good_qwen_edit(triton_server)


BRIGHTER = "make it brighter"
PNG = images.png_bytes()
BAD_REQUESTS = [
    # (model, images, prompt, options, expected code)
    pytest.param(QWEN, [b"I am text"], BRIGHTER, None, "unsupported_media_type", id="not-image"),
    pytest.param(QWEN, [images.tiff_bytes()], BRIGHTER, None, "unsupported_media_type", id="tiff"),
    pytest.param(QWEN, [b""], BRIGHTER, None, "empty_file", id="empty-image"),
    pytest.param(
        QWEN, [images.pixel_flood_png()], BRIGHTER, None, "image_too_large", id="pixel-flood"
    ),
    pytest.param(QWEN, [PNG], None, None, "invalid_input", id="missing-prompt"),
    pytest.param(QWEN, [PNG], "  ", None, "invalid_input", id="empty-prompt"),
    pytest.param(QWEN, [PNG], BRIGHTER, "{steps:", "invalid_options", id="bad-options-json"),
    pytest.param(QWEN, [PNG], BRIGHTER, {"steps": 0}, "invalid_options", id="steps-0"),
    pytest.param(CLASSIC, [PNG], "add a cat", None, "unknown_instruction", id="unknown-op"),
    pytest.param(QWEN, [PNG, PNG], BRIGHTER, None, "image_count", id="two-images-to-edit"),
]


@pytest.mark.parametrize(("model", "image_list", "prompt", "options", "code"), BAD_REQUESTS)
def test_bad_request_gets_a_coded_error_and_the_instance_keeps_serving(
    triton_server: TritonServer,
    model: str,
    image_list: list[bytes],
    prompt: str | None,
    options: Any,
    code: str,
) -> None:
    result = stream_edit(triton_server.grpc_url, model, image_list, prompt, options=options)
    assert result.image is None
    assert result.error is not None
    assert result.error_code == code, result.error
    assert "Traceback" not in result.error
    assert str(ROOT) not in result.error  # no server paths
    if model == CLASSIC:
        good = stream_edit(triton_server.grpc_url, CLASSIC, [images.png_bytes()], "invert")
        assert good.error is None, good.error
        assert good.image is not None
    else:
        assert_good_qwen_edit(triton_server)


def test_classic_edit_with_a_mask_changes_only_the_mask_bit_for_bit_elsewhere(
    triton_server: TritonServer,
) -> None:
    data = images.png_bytes(320, 240)
    left, top, right, bottom = 100, 80, 220, 160
    mask = images.mask_png((320, 240), (left, top, right, bottom))
    result = stream_edit(
        triton_server.grpc_url, CLASSIC, [data], "make it black and white", mask=mask
    )
    assert result.error is None, result.error
    assert result.final_meta is not None
    local = result.final_meta["local"]
    assert local["crop"] == [left - 32, top - 32, right - left + 64, bottom - top + 64]
    assert (result.final_meta["width"], result.final_meta["height"]) == (320, 240)
    assert result.image is not None
    out = np.asarray(images.decode(result.image).convert("RGB")).astype(int)
    original = np.asarray(images.decode(data).convert("RGB")).astype(int)
    reach = feather_reach(local["feather"])
    inside = out[top + reach : bottom - reach, left + reach : right - reach]
    assert (inside[..., 0] == inside[..., 1]).all()
    assert (inside[..., 1] == inside[..., 2]).all()
    kept = np.ones((240, 320), dtype=bool)
    kept[top - reach : bottom + reach, left - reach : right + reach] = False
    assert (out[kept] == original[kept]).all()
    assert (out[~kept] != original[~kept]).any()


@pytest.mark.parametrize(
    ("mask", "code"),
    [
        (b"I am text", "invalid_mask"),
        (images.mask_png((32, 24), (0, 0, 8, 8)), "mask_size_mismatch"),
    ],
    ids=["not-an-image", "wrong-size"],
)
def test_a_bad_mask_gets_its_code_and_the_instance_keeps_serving(
    triton_server: TritonServer, mask: bytes, code: str
) -> None:
    result = stream_edit(
        triton_server.grpc_url, CLASSIC, [images.png_bytes(64, 48)], "invert", mask=mask
    )
    assert result.image is None
    assert result.error_code == code, result.error
    good = stream_edit(triton_server.grpc_url, CLASSIC, [images.png_bytes()], "invert")
    assert good.error is None, good.error


def test_two_concurrent_streams_both_finish_with_their_own_results(
    triton_server: TritonServer,
) -> None:
    sizes = {"first": 64, "second": 96}
    streams = {name: EditStream(triton_server.grpc_url) for name in sizes}
    try:
        for seed, (name, size) in enumerate(sizes.items(), start=1):
            options = {**QUICK, "seed": seed, "width": size, "height": size}
            inputs = edit_inputs([images.png_bytes()], "make it brighter", options=options)
            streams[name].send(QWEN, inputs, request_id=name)
        results = {name: stream.collect(timeout=60) for name, stream in streams.items()}
    finally:
        for stream in streams.values():
            stream.close()
    for seed, (name, size) in enumerate(sizes.items(), start=1):
        result = results[name]
        assert result.error is None, result.error
        assert result.steps == [1, 2]
        assert result.final_meta is not None
        assert result.final_meta["seed"] == seed
        assert result.image is not None
        assert images.decode(result.image).size == (size, size)


def test_restart_on_the_same_ports_loads_cleanly_and_serves_again(
    triton_server: TritonServer,
) -> None:
    ports = (triton_server.http_port, triton_server.grpc_port, triton_server.metrics_port)
    regions = triton_server.shm_regions()
    assert len(regions) == 3  # one per model instance: qwen x1, classic x2
    triton_server.stop()
    # A clean stop leaves nothing behind: no Python-backend stub, no shared memory.
    assert not triton_server.group_alive()
    assert [region for region in regions if (SHM_DIR / region).exists()] == []
    triton_server.start()
    triton_server.wait_ready()
    assert (triton_server.http_port, triton_server.grpc_port, triton_server.metrics_port) == ports
    assert_good_qwen_edit(triton_server)
    classic = stream_edit(triton_server.grpc_url, CLASSIC, [images.png_bytes()], "invert")
    assert classic.error is None, classic.error
