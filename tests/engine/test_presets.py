"""The three presets on the tiny model, through the production code path.

The dev model's stand-ins (a tiny random LoRA, a cache threshold random weights can meet) make
the mechanisms run on a CPU: these tests prove the mechanisms (what runs, what is skipped, what
never leaks into another preset), never the image quality.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from PIL import Image

from qie_engine.batched_cfg import batched_cfg, joined_text
from qie_engine.contract import Preset, ProgressEvent
from qie_engine.edit_request import RawEdit
from qie_engine.editor import run_edit
from qie_engine.errors import Cancelled, EngineError, InvalidInput
from qie_engine.lightning import lightning_source
from qie_engine.model_folder import ModelFolder
from qie_engine.presets import LIGHTNING_LORAS, PRESETS, QUALITY_ALIASES
from qie_engine.qwen_editor import PresetExtras, QwenEditor, capped_condition_area
from tests.engine.recorders import ProgressLog, spy
from tests.engine.tiny_editors import counting_blocks, dev_editor, edit
from tests.images import decode, png_bytes

QUICK = {"seed": 3, "width": 64, "height": 64}


@contextmanager
def counting_transformer_calls(editor: QwenEditor) -> Iterator[list[int]]:
    count = [0]
    handle = editor.pipe.transformer.register_forward_pre_hook(
        lambda *_args: count.__setitem__(0, count[0] + 1)
    )
    try:
        yield count
    finally:
        handle.remove()


def lora_enabled(editor: QwenEditor) -> bool:
    """Whether the Lightning adapter is active in the transformer's first attention layer."""
    layer = editor.pipe.transformer.transformer_blocks[0].attn.to_q
    return not layer.disable_adapters


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(decode(data).convert("RGB")).astype(int)


# --- the facts ---------------------------------------------------------------------------------


def test_presets_are_written_once_and_the_seed_quality_words_map_onto_them() -> None:
    assert [p.value for p in PRESETS] == ["quality", "balanced", "fast"]
    assert PRESETS[Preset.QUALITY].steps == PRESETS[Preset.BALANCED].steps == 50
    assert PRESETS[Preset.QUALITY].true_cfg_scale == PRESETS[Preset.BALANCED].true_cfg_scale == 4
    assert PRESETS[Preset.FAST].true_cfg_scale == 1.0
    assert set(QUALITY_ALIASES.values()) == set(PRESETS)
    assert QUALITY_ALIASES["high"] is Preset.QUALITY
    assert QUALITY_ALIASES["low"] is Preset.FAST


@pytest.mark.parametrize(
    ("zero_cond_t", "family", "steps"),
    [(False, "2509", 40), (True, "2511", 40)],
)
def test_quality_and_balanced_run_the_step_count_of_their_model_card(
    plus_editor: QwenEditor,
    edit_editor: QwenEditor,
    monkeypatch: pytest.MonkeyPatch,
    zero_cond_t: bool,
    family: str,
    steps: int,
) -> None:
    # The 2509 and 2511 cards run 40 steps; the first Qwen-Image-Edit's, 50.
    folder = dataclasses.replace(plus_editor.folder, zero_cond_t=zero_cond_t)
    extras = PresetExtras(lightning=plus_editor.lightning, step_cache=plus_editor.step_cache)
    editor = QwenEditor(
        "plus", plus_editor.pipe, folder=folder, settings=plus_editor.settings, extras=extras
    )
    assert editor.folder.family == family
    facts = editor.describe()
    assert facts["presets"]["quality"]["steps"] == facts["presets"]["balanced"]["steps"] == steps
    assert facts["presets"]["fast"]["steps"] == 8
    assert edit_editor.describe()["presets"]["quality"]["steps"] == 50
    pipeline_calls = spy(monkeypatch, type(editor.pipe), "__call__")
    with pytest.raises(Cancelled):
        edit(editor, ProgressLog().cancel_after(1), preset="balanced", **QUICK)
    assert pipeline_calls.kwargs[0]["num_inference_steps"] == steps


# --- fast: the Lightning LoRA and scheduler ----------------------------------------------------


def test_fast_runs_8_steps_without_cfg_on_the_lightning_scheduler_with_the_lora_on(
    edit_editor: QwenEditor, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline_calls = spy(monkeypatch, type(edit_editor.pipe), "__call__")
    seen: list[tuple[Any, ...]] = []

    def look(_event: ProgressEvent) -> None:
        config = edit_editor.pipe.scheduler.config
        seen.append((config["base_shift"], config["max_shift"], lora_enabled(edit_editor)))

    with counting_transformer_calls(edit_editor) as calls:
        _, meta = edit(edit_editor, ProgressLog(look), preset="fast", **QUICK)
    (call,) = pipeline_calls.kwargs
    assert call["num_inference_steps"] == 8
    assert call["true_cfg_scale"] == 1.0
    assert call["negative_prompt"] is None
    assert calls[0] == 8  # one transformer call per step: no CFG
    assert seen == [(math.log(3), math.log(3), True)] * 8
    assert (meta.steps, meta.preset) == (8, Preset.FAST)
    assert not lora_enabled(edit_editor)  # off again once the request is done


def test_fast_steps_4_runs_4_steps(tiny_edit_dir: Path) -> None:
    editor = dev_editor(tiny_edit_dir, fast_steps=4)
    progress = ProgressLog()
    edit(editor, progress, preset="fast", **QUICK)
    assert progress.steps == [1, 2, 3, 4]
    assert editor.describe()["presets"]["fast"]["steps"] == 4


@pytest.mark.parametrize(
    ("pipeline", "zero_cond_t", "family"),
    [
        ("QwenImageEditPipeline", False, "edit"),
        ("QwenImageEditPlusPipeline", False, "2509"),
        ("QwenImageEditPlusPipeline", True, "2511"),
    ],
)
@pytest.mark.parametrize("steps", [8, 4])
def test_a_real_model_gets_the_hub_lightning_lora_of_its_family(
    pipeline: str, zero_cond_t: bool, family: str, steps: int
) -> None:
    folder = ModelFolder(Path("/m"), pipeline, False, zero_cond_t, stand_ins=None)
    source = lightning_source(None, folder, steps)
    repo, pattern = LIGHTNING_LORAS[family]
    assert (source.location, source.weight_name) == (repo, pattern.format(steps=steps))
    assert f"{steps}steps" in str(source)


def test_lora_path_wins_as_a_local_file_a_folder_or_a_hub_file(tmp_path: Path) -> None:
    folder = ModelFolder(Path("/m"), "QwenImageEditPipeline", True, False, stand_ins=None)
    weights = tmp_path / "mine.safetensors"
    weights.write_bytes(b"")
    assert lightning_source(str(weights), folder, 8).weight_name == "mine.safetensors"
    assert lightning_source(str(tmp_path), folder, 8).location == str(tmp_path)
    hub = lightning_source("someone/loras/sub/file.safetensors", folder, 8)
    assert (hub.location, hub.weight_name) == ("someone/loras", "sub/file.safetensors")


def test_a_lora_that_cannot_be_loaded_fails_the_load_saying_what_to_do(
    tiny_edit_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(EngineError, match=r"LORA_PATH .* does not exist"):
        dev_editor(tiny_edit_dir, lora_path=str(tmp_path / "missing.safetensors"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EngineError, match=r"Lightning LoRA .* leave fast out of PRESETS"):
        dev_editor(tiny_edit_dir, lora_path=str(empty))


def test_quality_gives_the_same_bytes_before_and_after_a_fast_edit_and_without_any_lora(
    edit_editor: QwenEditor, tiny_edit_dir: Path
) -> None:
    options = {"preset": "quality", "steps": 3, **QUICK}
    before, _ = edit(edit_editor, **options)
    fast, _ = edit(edit_editor, preset="fast", steps=3, **QUICK)
    after, _ = edit(edit_editor, **options)
    assert before == after
    # An instance that never loaded the LoRA at all gives those very bytes.
    no_lora = dev_editor(tiny_edit_dir, presets=(Preset.QUALITY,), default_preset=Preset.QUALITY)
    assert no_lora.lightning is None
    assert edit(no_lora, **options)[0] == before
    assert fast != before


def test_an_instance_serving_only_fast_fuses_the_lora_and_gives_the_same_image(
    edit_editor: QwenEditor, tiny_edit_dir: Path
) -> None:
    fused = dev_editor(tiny_edit_dir, presets=(Preset.FAST,), default_preset=Preset.FAST)
    assert fused.lightning is not None and fused.lightning.fused
    layer = fused.pipe.transformer.transformer_blocks[0].attn.to_q
    assert isinstance(layer, torch.nn.Linear)  # no peft wrapper left: the LoRA is in the weights
    base = edit_editor.pipe.transformer.transformer_blocks[0].attn.to_q.base_layer.weight
    assert not torch.equal(layer.weight, base)
    fused_pixels = pixels(edit(fused, preset="fast", **QUICK)[0])
    adapter_pixels = pixels(edit(edit_editor, preset="fast", **QUICK)[0])
    assert np.abs(fused_pixels - adapter_pixels).max() <= 2  # float rounding only
    with pytest.raises(InvalidInput, match="does not serve the quality preset; it serves: fast"):
        edit(fused, preset="quality", **QUICK)


# --- quality: the model card, true CFG really on -----------------------------------------------


def test_quality_runs_50_steps_and_true_cfg_with_a_blank_negative_when_none_is_given(
    edit_editor: QwenEditor, tiny_edit_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = FlowMatchEulerDiscreteScheduler.from_pretrained(tiny_edit_dir / "scheduler").config
    edit(edit_editor, preset="fast", steps=1, **QUICK)  # the Lightning scheduler must not leak
    pipeline_calls = spy(monkeypatch, type(edit_editor.pipe), "__call__")
    shifts: list[tuple[float, float, bool]] = []

    def look(_event: ProgressEvent) -> None:
        config = edit_editor.pipe.scheduler.config
        shifts.append((config["base_shift"], config["max_shift"], lora_enabled(edit_editor)))

    with counting_transformer_calls(edit_editor) as calls, pytest.raises(Cancelled):
        edit(edit_editor, ProgressLog(look).cancel_after(1), preset="quality", **QUICK)
    (call,) = pipeline_calls.kwargs
    assert call["num_inference_steps"] == 50
    assert call["true_cfg_scale"] == 4.0
    assert call["negative_prompt"] == " "  # diffusers runs true CFG only with a negative prompt
    assert calls[0] == 2  # cond and uncond: CFG really ran in the one step before the cancel
    assert shifts == [(shipped["base_shift"], shipped["max_shift"], False)]


def test_an_unserved_preset_is_refused_before_any_work(tiny_edit_dir: Path) -> None:
    editor = dev_editor(tiny_edit_dir, presets=(Preset.QUALITY,), default_preset=Preset.QUALITY)
    with pytest.raises(InvalidInput) as info:
        edit(editor, preset="balanced", **QUICK)
    assert info.value.code == "invalid_options"
    assert list(editor.describe()["presets"]) == ["quality"]


# --- balanced: quality's schedule with the step cache ------------------------------------------


def test_balanced_serves_at_least_half_its_transformer_calls_from_the_cache(
    edit_editor: QwenEditor, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps = 16
    decodes = spy(monkeypatch, edit_editor.pipe.vae, "decode")
    with counting_transformer_calls(edit_editor) as calls, counting_blocks(edit_editor) as blocks:
        data, meta = edit(edit_editor, preset="balanced", steps=steps, **QUICK)
    assert calls[0] == 2 * steps  # true CFG: cond and uncond at every step
    # The tiny model's cache threshold (its own stand-in, above random weights' residual diffs)
    # lets cache-dit's documented policy skip: at most 2 cached steps in a row after a warm-up
    # that computes every other step.
    assert meta.cached_steps >= steps
    layers = len(edit_editor.pipe.transformer.transformer_blocks)
    full_passes = calls[0] - meta.cached_steps
    # A cached call runs only the first block (Fn=1); the rest is served from the cache.
    assert blocks[0] == full_passes * layers + meta.cached_steps
    (latents,) = decodes.args[0]
    assert torch.isfinite(latents).all()
    assert pixels(data).std() > 0


def test_quality_on_an_instance_with_the_step_cache_matches_one_without(
    edit_editor: QwenEditor, tiny_edit_dir: Path
) -> None:
    options = {"preset": "quality", "steps": 12, **QUICK}
    with counting_blocks(edit_editor) as blocks:
        with_cache, meta = edit(edit_editor, **options)
    assert meta.cached_steps == 0
    assert blocks[0] == 2 * 12 * len(edit_editor.pipe.transformer.transformer_blocks)
    no_cache = dev_editor(tiny_edit_dir, presets=(Preset.QUALITY, Preset.FAST))
    assert no_cache.step_cache is None
    assert edit(no_cache, **options)[0] == with_cache


def test_a_cancelled_balanced_run_leaves_no_cache_state_for_the_next(
    edit_editor: QwenEditor,
) -> None:
    first, _ = edit(edit_editor, preset="balanced", steps=10, **QUICK)
    with pytest.raises(Cancelled):
        edit(edit_editor, ProgressLog().cancel_after(5), preset="balanced", steps=10, **QUICK)
    again, _ = edit(edit_editor, preset="balanced", steps=10, **QUICK)
    assert again == first


# --- batched CFG -------------------------------------------------------------------------------


def run_pipeline(editor: QwenEditor, steps: int, *, batched: bool) -> tuple[torch.Tensor, int]:
    """Latents from the pipeline itself, with cond and uncond batched or as two calls."""
    pipe = editor.pipe
    pipe.scheduler = editor.schedulers["default"]
    kwargs = {
        "image": Image.new("RGB", (64, 48), (20, 120, 220)),
        "prompt": "replace the background with a dense green forest at dusk",
        "negative_prompt": " ",  # a much shorter text: the batch needs padding and a mask
        "true_cfg_scale": 4.0,
        "num_inference_steps": steps,
        "width": 64,
        "height": 64,
        "output_type": "latent",
        "generator": torch.Generator("cpu").manual_seed(0),
    }
    assert editor.step_cache is not None
    editor.step_cache.configure(on=False, steps=steps, separate_cfg=not batched)
    with capped_condition_area(editor.condition_pixels), torch.inference_mode():
        if not batched:
            return pipe(**kwargs).images, 0
        with batched_cfg(pipe) as batcher:
            latents = pipe(**kwargs).images
        return latents, batcher.batched_calls


def test_batched_cfg_matches_the_two_call_path(edit_editor: QwenEditor) -> None:
    layers = len(edit_editor.pipe.transformer.transformer_blocks)
    with counting_blocks(edit_editor) as blocks:
        two_calls, _ = run_pipeline(edit_editor, 4, batched=False)
    assert blocks[0] == 2 * 4 * layers
    with counting_blocks(edit_editor) as blocks:
        batched, batched_calls = run_pipeline(edit_editor, 4, batched=True)
    assert batched_calls == 4
    assert blocks[0] == 4 * layers  # each block runs once a step, on a batch of two
    assert torch.allclose(batched, two_calls, atol=1e-4, rtol=1e-4)
    assert not torch.equal(batched, torch.zeros_like(batched))
    # The hook is gone afterwards: the two-call path again.
    with counting_blocks(edit_editor) as blocks:
        run_pipeline(edit_editor, 2, batched=False)
    assert blocks[0] == 2 * 2 * layers


def test_joined_text_pads_the_shorter_prompt_and_masks_only_when_needed() -> None:
    long_text, short_text = torch.ones(1, 5, 3), torch.full((1, 2, 3), 2.0)
    text, mask = joined_text((long_text, None), (short_text, None))
    assert text.shape == (2, 5, 3)
    assert mask is not None
    assert mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    assert torch.equal(text[1, 2:], torch.zeros(3, 3))
    same, no_mask = joined_text((long_text, None), (long_text, None))
    assert no_mask is None
    assert same.shape == (2, 5, 3)


def test_batched_cfg_setting_runs_balanced_with_one_call_per_step(tiny_edit_dir: Path) -> None:
    editor = dev_editor(tiny_edit_dir, batched_cfg=True)
    data, meta = edit(editor, preset="balanced", steps=10, **QUICK)
    assert editor.last_batched_calls == 10  # cond and uncond together at every step
    assert meta.cached_steps > 0
    assert pixels(data).std() > 0
    assert editor.describe()["batched_cfg"] is True


def test_plus_runs_every_preset(plus_editor: QwenEditor) -> None:
    for preset in ("quality", "balanced", "fast"):
        raw = RawEdit(
            [png_bytes(64, 48), png_bytes(40, 40)],
            "combine them",
            options=json.dumps({"preset": preset, "steps": 4, **QUICK}),
        )
        data, meta = run_edit(plus_editor, raw, ProgressLog(), lambda: False)
        assert (meta.preset, meta.steps) == (Preset(preset), 4)
        assert decode(data).size == (64, 64)
