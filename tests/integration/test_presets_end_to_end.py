"""The three presets on the tiny model through a real tritonserver, and through the gateway.

The dev model runs every preset on the production path with its stand-ins (a tiny random LoRA
for fast, a cache threshold random weights can meet for balanced): these tests prove the
presets are wired end to end, not that the pixels are any good.
"""

from __future__ import annotations

from typing import Any

import pytest

from dev_stack.triton import TritonServer
from dev_stack.triton_stream import stream_edit
from qie_client.client import QieClient
from tests import images
from tests.gateway_server import GatewayServer

pytestmark = pytest.mark.integration

QWEN = "qwen_image_edit"
SMALL = {"seed": 2, "width": 64, "height": 64}


@pytest.mark.parametrize(
    ("preset", "options", "steps"),
    [
        ("quality", {"steps": 6}, 6),
        ("balanced", {"steps": 12}, 12),
        ("fast", {}, 8),
    ],
)
def test_each_preset_runs_through_triton_and_says_what_it_ran(
    triton_server: TritonServer, preset: str, options: dict[str, Any], steps: int
) -> None:
    result = stream_edit(
        triton_server.grpc_url,
        QWEN,
        [images.png_bytes()],
        "make the sky purple",
        options={"preset": preset, **SMALL, **options},
    )
    assert result.error is None, result.error
    assert result.steps == list(range(1, steps + 1))
    meta = result.final_meta
    assert meta is not None
    assert (meta["preset"], meta["steps"]) == (preset, steps)
    if preset == "balanced":
        assert meta["cached_steps"] > 0  # the step cache served some transformer calls
    else:
        assert meta["cached_steps"] == 0
    assert result.image is not None
    assert images.decode(result.image).size == (64, 64)


def test_no_preset_named_means_fast(triton_server: TritonServer) -> None:
    result = stream_edit(
        triton_server.grpc_url, QWEN, [images.png_bytes()], "add a hat", options=SMALL
    )
    assert result.error is None, result.error
    assert result.final_meta is not None
    assert (result.final_meta["preset"], result.final_meta["steps"]) == ("fast", 8)


@pytest.mark.parametrize(
    ("options", "steps"),
    [
        ({"preset": "quality", "steps": 4}, 4),
        ({"preset": "balanced", "steps": 10}, 10),
        ({"preset": "fast"}, 8),
        ({"quality": "low"}, 8),  # the seed's words
    ],
)
def test_each_preset_runs_through_the_gateway_with_the_client(
    gateway: GatewayServer, options: dict[str, Any], steps: int
) -> None:
    with gateway.client() as client:
        result = client.edit(
            images.png_bytes(), "make it snowy", model=QWEN, options={**SMALL, **options}
        )
    assert result.steps == steps
    assert result.random_weights is True
    assert images.decode(result.image).size == (64, 64)


def test_models_lists_the_presets_and_the_default(gateway: GatewayServer) -> None:
    client: QieClient
    with gateway.client() as client:
        listed = client.models()
    (qwen,) = [m for m in listed["models"] if m["name"] == QWEN]
    assert list(qwen["presets"]) == ["quality", "balanced", "fast"]
    assert qwen["presets"]["balanced"]["step_cache"] is True
    assert qwen["presets"]["fast"]["lightning_lora"] is True
    assert qwen["presets"]["quality"]["true_cfg_scale"] == 4.0
    assert qwen["defaults"]["preset"] == "fast"
