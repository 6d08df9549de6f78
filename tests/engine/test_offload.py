"""CPU_OFFLOAD=model with accelerate's real hooks, run on the CPU.

enable_model_cpu_offload takes an explicit device, so diffusers and accelerate build the very
hooks a GPU gets, with the CPU as the "accelerator": every move is a no-op here, but every hook
runs. The load-time check that refuses offload without a GPU is the one thing stood in for.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from accelerate.hooks import CpuOffload

from qie_engine import qwen_loader
from qie_engine.contract import Preset
from qie_engine.errors import Cancelled
from qie_engine.qwen_editor import PresetExtras, QwenEditor
from qie_engine.step_cache import StepCache
from tests.engine.recorders import ProgressLog, spy
from tests.engine.tiny_editors import counting_blocks, dev_editor, edit

QUICK: dict[str, Any] = {"seed": 3, "width": 64, "height": 64}


def offload_editor(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch, **overrides: Any
) -> QwenEditor:
    """The tiny model with CPU_OFFLOAD=model; the GPU check is stood in for, nothing else."""
    monkeypatch.setattr(qwen_loader, "check_memory_modes", lambda *_args: None)
    editor = dev_editor(model_dir, device="cpu", cpu_offload="model", **overrides)
    assert editor.pipe._all_hooks, "accelerate's offload hooks are in place"
    return editor


def sent_to_host(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the components accelerate's CpuOffload hooks send back to the host, in order."""
    sent: list[str] = []
    original = CpuOffload.init_hook

    def init_hook(self: CpuOffload, module: Any) -> Any:
        sent.append(type(module).__name__)
        return original(self, module)

    monkeypatch.setattr(CpuOffload, "init_hook", init_hook)
    return sent


# --- every exit leaves the pipeline as a fresh request expects -------------------------------


def test_a_cancelled_edit_sends_the_transformer_back_to_the_host(
    tiny_edit_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    editor = offload_editor(tiny_edit_dir, monkeypatch)
    frees = spy(monkeypatch, editor.pipe, "maybe_free_model_hooks")
    sent = sent_to_host(monkeypatch)
    with pytest.raises(Cancelled):
        edit(editor, ProgressLog().cancel_after(1), preset="quality", steps=4, **QUICK)
    # diffusers' own call never reached its end; the editor freed the hooks itself.
    assert frees.count == 1
    assert "QwenImageTransformer2DModel" in sent
    _, meta = edit(editor, preset="quality", steps=2, **QUICK)
    assert meta.steps == 2
    assert frees.count == 2  # the next call ends as diffusers ends it


def test_a_failed_edit_sends_every_component_back_too(
    tiny_edit_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    editor = offload_editor(tiny_edit_dir, monkeypatch)

    def out_of_memory(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("CUDA out of memory (stand-in)")

    monkeypatch.setattr(editor.pipe.vae, "decode", out_of_memory)
    frees = spy(monkeypatch, editor.pipe, "maybe_free_model_hooks")
    sent = sent_to_host(monkeypatch)
    with pytest.raises(RuntimeError, match="out of memory"):
        edit(editor, preset="fast", steps=2, **QUICK)
    assert frees.count == 1
    assert {"QwenImageTransformer2DModel", "Qwen2_5_VLForConditionalGeneration"} <= set(sent)


# --- the step cache under the offload hooks ----------------------------------------------------


def test_balanced_keeps_skipping_steps_request_after_request_under_offload(
    tiny_edit_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # diffusers re-hooks at the end of every call; the cache must survive each re-hook.
    editor = offload_editor(
        tiny_edit_dir, monkeypatch, presets=(Preset.BALANCED,), default_preset=Preset.BALANCED
    )
    layers = len(editor.pipe.transformer.transformer_blocks)
    steps = 8
    for _request in range(3):
        with counting_blocks(editor) as blocks:
            _, meta = edit(editor, preset="balanced", steps=steps, **QUICK)
        assert meta.cached_steps > 0
        # A cached call runs only the first block: the count is the run's own, not a stale one.
        assert blocks[0] == (2 * steps - meta.cached_steps) * layers + meta.cached_steps
    # The loader's order keeps it attached through every re-hook: nothing had to re-attach it.
    assert editor.step_cache is not None and editor.step_cache.attached()
    assert "no longer cache-dit's" not in caplog.text


def test_a_cache_attached_under_the_hooks_is_attached_again_by_the_next_request(
    tiny_edit_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The order that lost the cache: offload hooks first, then cache-dit, then diffusers'
    # re-hook at the end of a call, which restores the forward from before cache-dit.
    quality = offload_editor(
        tiny_edit_dir, monkeypatch, presets=(Preset.QUALITY,), default_preset=Preset.QUALITY
    )
    pipe = quality.pipe
    stand_ins = quality.folder.stand_ins
    cache = StepCache(pipe.transformer, stand_ins.cache_threshold if stand_ins else None)
    pipe.maybe_free_model_hooks()
    assert not cache.attached()
    settings = dataclasses.replace(
        quality.settings, presets=(Preset.BALANCED,), default_preset=Preset.BALANCED
    )
    extras = PresetExtras(step_cache=cache)
    editor = QwenEditor("again", pipe, folder=quality.folder, settings=settings, extras=extras)
    layers = len(pipe.transformer.transformer_blocks)
    with counting_blocks(editor) as blocks:
        _, meta = edit(editor, preset="balanced", steps=8, **QUICK)
    assert meta.cached_steps > 0
    assert blocks[0] == (16 - meta.cached_steps) * layers + meta.cached_steps
