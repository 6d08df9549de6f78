"""QUANTIZATION and CPU_OFFLOAD: int8 for real on the CPU, GPU-only modes refused at load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline
from torchao.quantization import Int8Tensor

from qie_engine.contract import Preset
from qie_engine.edit_request import RawEdit
from qie_engine.editor import run_edit
from qie_engine.errors import EngineError
from qie_engine.quantization import check_memory_modes, pipeline_quantization, quantize_built
from qie_engine.qwen_editor import QwenEditor
from tests.engine.recorders import ProgressLog, spy
from tests.engine.tiny_editors import dev_editor
from tests.images import decode, png_bytes

OPTIONS = {"steps": 3, "seed": 5, "width": 64, "height": 64}


def edit_pixels(editor: QwenEditor, preset: str) -> np.ndarray:
    raw = RawEdit([png_bytes()], "sharper", options=json.dumps({"preset": preset, **OPTIONS}))
    data, meta = run_edit(editor, raw, ProgressLog(), lambda: False)
    assert meta.preset is Preset(preset)
    return np.asarray(decode(data).convert("RGB")).astype(int)


def test_int8_quantizes_the_transformer_on_the_cpu_and_every_preset_runs(
    tiny_edit_dir: Path, edit_editor: QwenEditor
) -> None:
    editor = dev_editor(tiny_edit_dir, quantization="int8")
    block = editor.pipe.transformer.transformer_blocks[0]
    # The LoRA adapter sits on top of the quantized layer; the base weight is int8.
    assert isinstance(block.attn.to_q.base_layer.weight, Int8Tensor)
    assert isinstance(block.img_mlp.net[2].weight, Int8Tensor)
    assert editor.describe()["transformer_weights"] == "Int8Tensor"
    assert edit_editor.describe()["transformer_weights"] == "Parameter"
    for preset in ("quality", "balanced", "fast"):
        quantized = edit_pixels(editor, preset)
        assert quantized.std() > 0
    # Same model, same seed: int8 weights move the pixels a little, not to something else.
    assert np.abs(edit_pixels(editor, "quality") - edit_pixels(edit_editor, "quality")).mean() < 40


@pytest.mark.parametrize(
    ("quantization", "offload", "named", "instead"),
    [
        ("fp8", "none", "QUANTIZATION=fp8", "int8"),
        ("nf4", "none", "QUANTIZATION=nf4", "int8"),
        ("none", "model", "CPU_OFFLOAD=model", "CPU_OFFLOAD=none"),
        ("none", "sequential", "CPU_OFFLOAD=sequential", "CPU_OFFLOAD=none"),
    ],
)
def test_a_gpu_only_mode_on_the_cpu_fails_at_load_before_reading_weights(
    tiny_edit_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    quantization: str,
    offload: str,
    named: str,
    instead: str,
) -> None:
    loads = spy(monkeypatch, DiffusionPipeline, "from_pretrained")
    with pytest.raises(EngineError) as info:
        dev_editor(tiny_edit_dir, device="cpu", quantization=quantization, cpu_offload=offload)
    message = str(info.value)
    assert named in message
    assert instead in message
    assert "CPU" in message
    assert loads.count == 0


def test_fp8_on_a_gpu_older_than_ada_is_refused_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # No such GPU here: the capability query is the one thing stood in for.
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda _device=None: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda _device=None: "NVIDIA A100")
    with pytest.raises(EngineError, match=r"A100 has 8\.0\. Use QUANTIZATION=int8"):
        check_memory_modes("fp8", "none", "cuda:0")


def test_quantization_configs_are_diffusers_own() -> None:
    from diffusers.quantizers import PipelineQuantizationConfig

    assert pipeline_quantization("none") is None
    for mode, components in (
        ("fp8", {"transformer"}),
        ("int8", {"transformer"}),
        ("nf4", {"transformer", "text_encoder"}),
    ):
        config = pipeline_quantization(mode)  # type: ignore[arg-type]
        assert isinstance(config, PipelineQuantizationConfig)
        assert set(config.quant_mapping) == components


def test_a_pipeline_built_in_memory_is_quantized_with_the_same_config(
    tiny_edit_dir: Path,
) -> None:
    pipe = DiffusionPipeline.from_pretrained(tiny_edit_dir)
    quantize_built(pipe, "int8")
    assert isinstance(pipe.transformer.transformer_blocks[0].attn.to_q.weight, Int8Tensor)
    with pytest.raises(EngineError, match="nf4 applies while loading"):
        quantize_built(pipe, "nf4")
