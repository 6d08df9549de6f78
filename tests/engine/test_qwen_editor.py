"""QwenEditor on the tiny random-weight models: loading, steps, seeds, sizes, cancel and knobs.

The presets (Lightning LoRA, step cache, batched CFG) are in test_presets.py, the memory modes
in test_memory_modes.py.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pytest
from diffusers import DiffusionPipeline, QwenImageEditPipeline
from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit as edit_module
from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_plus as plus_module

from qie_engine.contract import MAX_SEED, OutputFormat, Preset, ProgressEvent, ResultMeta
from qie_engine.edit_request import RawEdit
from qie_engine.editor import run_edit
from qie_engine.errors import Cancelled, EngineError, InvalidInput
from qie_engine.qwen_editor import QwenEditor
from tests.engine.recorders import ProgressLog, spy
from tests.engine.tiny_editors import DEV_PIXELS, SMALL, copy_model, dev_editor
from tests.images import decode, png_bytes

ORIGINAL_EDIT_DIMENSIONS = edit_module.calculate_dimensions
ORIGINAL_PLUS_DIMENSIONS = plus_module.calculate_dimensions


def edit(
    editor: QwenEditor,
    *,
    progress: ProgressLog | None = None,
    images: list[bytes] | None = None,
    **options: Any,
) -> tuple[bytes, ResultMeta]:
    """run_edit with a 64x48 PNG (unless given) and the options as the OPTIONS JSON."""
    log = progress if progress is not None else ProgressLog()
    raw = RawEdit(
        images if images is not None else [png_bytes(64, 48)],
        "make it brighter",
        options=json.dumps(options),
    )
    return run_edit(editor, raw, log, log.is_cancelled)


# --- loading -----------------------------------------------------------------------------------


def test_tiny_model_loads_from_a_local_folder(edit_editor: QwenEditor, tiny_edit_dir: Path) -> None:
    assert type(edit_editor.pipe).__name__ == "QwenImageEditPipeline"
    assert edit_editor.variant == "edit"
    assert edit_editor.random_weights is True
    assert edit_editor.limits.max_images == 1
    facts = edit_editor.describe()
    assert facts["model_id"] == tiny_edit_dir.name  # a local folder by its name, not its path
    assert facts["pipeline"] == "QwenImageEditPipeline"
    assert facts["random_weights"] is True
    assert facts["defaults"] == {"preset": "fast", "steps": 8, "true_cfg_scale": 1.0}
    assert list(facts["presets"]) == ["quality", "balanced", "fast"]
    assert facts["presets"]["quality"]["steps"] == 50
    assert facts["presets"]["balanced"]["step_cache"] is True
    assert facts["presets"]["fast"]["lightning_lora"] is True
    assert facts["lightning_lora"] == "lightning_lora"  # the local folder by its name
    assert str(tiny_edit_dir) not in str(facts)


@pytest.mark.parametrize(
    ("source", "misleading_name", "pipeline", "max_images"),
    [
        ("edit", "tiny-plus-looking-name", "QwenImageEditPipeline", 1),
        ("plus", "tiny-qwen-image-edit", "QwenImageEditPlusPipeline", 3),
    ],
)
def test_pipeline_class_comes_from_model_index_never_from_the_folder_name(
    tmp_path: Path,
    tiny_edit_dir: Path,
    tiny_plus_dir: Path,
    source: str,
    misleading_name: str,
    pipeline: str,
    max_images: int,
) -> None:
    folder = copy_model(
        tiny_edit_dir if source == "edit" else tiny_plus_dir, tmp_path / misleading_name
    )
    editor = dev_editor(folder)
    assert type(editor.pipe).__name__ == pipeline
    assert editor.limits.max_images == max_images


def test_plus_folder_loads_as_the_plus_pipeline(plus_editor: QwenEditor) -> None:
    assert type(plus_editor.pipe).__name__ == "QwenImageEditPlusPipeline"
    assert plus_editor.variant == "plus"
    assert plus_editor.describe()["max_images"] == 3


def test_folder_without_model_index_is_refused(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match=r"model_index\.json"):
        dev_editor(tmp_path)


def test_folder_holding_another_pipeline_is_refused(tmp_path: Path, tiny_edit_dir: Path) -> None:
    folder = copy_model(tiny_edit_dir, tmp_path / "model")
    index = json.loads((folder / "model_index.json").read_text())
    index["_class_name"] = "StableDiffusionPipeline"
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(EngineError, match="StableDiffusionPipeline"):
        dev_editor(folder)


def test_missing_local_folder_is_refused_without_asking_the_hub(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="does not exist"):
        dev_editor(tmp_path / "nowhere")


def test_editor_takes_a_built_pipeline_and_loads_nothing_itself(
    edit_editor: QwenEditor, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads = spy(monkeypatch, DiffusionPipeline, "from_pretrained")
    editor = QwenEditor(
        "given", edit_editor.pipe, folder=edit_editor.folder, settings=edit_editor.settings
    )
    assert editor.pipe is edit_editor.pipe
    assert loads.count == 0
    data, meta = edit(editor, **{**SMALL, "preset": "quality"})
    assert_meta_matches_output(data, meta)


# --- steps, seeds and sizes --------------------------------------------------------------------


def test_one_progress_callback_per_step(edit_editor: QwenEditor) -> None:
    progress = ProgressLog()
    _, meta = edit(edit_editor, progress=progress, **{**SMALL, "steps": 3})
    assert progress.steps == [1, 2, 3]
    assert {event.total for event in progress.events} == {3}
    elapsed = [event.elapsed_s for event in progress.events]
    assert elapsed == sorted(elapsed)
    assert meta.steps == 3


def test_same_seed_gives_identical_bytes(edit_editor: QwenEditor) -> None:
    first, meta = edit(edit_editor, **{**SMALL, "seed": 7})
    second, _ = edit(edit_editor, **{**SMALL, "seed": 7})
    assert first == second
    assert meta.seed == 7


def test_different_seed_gives_different_bytes(edit_editor: QwenEditor) -> None:
    first, _ = edit(edit_editor, **{**SMALL, "seed": 7})
    second, _ = edit(edit_editor, **{**SMALL, "seed": 8})
    assert first != second


def test_missing_seed_is_chosen_reported_and_reproduces_the_image(
    edit_editor: QwenEditor,
) -> None:
    options = {key: value for key, value in SMALL.items() if key != "seed"}
    data, meta = edit(edit_editor, **options)
    assert meta.seed is not None
    assert 0 <= meta.seed <= MAX_SEED
    again, _ = edit(edit_editor, **{**options, "seed": meta.seed})
    assert again == data


def assert_meta_matches_output(data: bytes, meta: ResultMeta) -> None:
    img = decode(data)
    assert (meta.width, meta.height) == img.size
    assert img.format == "PNG"


def test_requested_size_rounds_down_to_the_vae_multiple(edit_editor: QwenEditor) -> None:
    multiple = edit_editor.pipe.vae_scale_factor * 2
    width, height = 12 * multiple + multiple - 1, 9 * multiple + 3
    data, meta = edit(edit_editor, **{**SMALL, "width": width, "height": height})
    assert (meta.width, meta.height) == (12 * multiple, 9 * multiple)
    assert_meta_matches_output(data, meta)


@pytest.mark.parametrize(
    ("side", "expected"),
    [
        # 64x48 input (4:3). width 130 -> height 97.5 -> 97 or 98; both round down to 96.
        ({"width": 130}, (128, 96)),
        # height 100 -> width 133 -> 128.
        ({"height": 100}, (128, 96)),
    ],
)
def test_one_side_given_keeps_the_input_aspect(
    edit_editor: QwenEditor, side: dict[str, int], expected: tuple[int, int]
) -> None:
    assert edit_editor.pipe.vae_scale_factor * 2 == 8  # the tiny VAE; the real one has 16
    options = {key: value for key, value in SMALL.items() if key not in ("width", "height")}
    data, meta = edit(edit_editor, **{**options, **side})
    assert (meta.width, meta.height) == expected
    assert_meta_matches_output(data, meta)


def test_no_size_given_uses_the_pipeline_default(edit_editor: QwenEditor) -> None:
    options = {key: value for key, value in SMALL.items() if key not in ("width", "height")}
    data, meta = edit(edit_editor, images=[png_bytes(64, 48)], **options)
    multiple = edit_editor.pipe.vae_scale_factor * 2
    width, height, _ = ORIGINAL_EDIT_DIMENSIONS(DEV_PIXELS, 64 / 48)
    assert (meta.width, meta.height) == (
        width // multiple * multiple,
        height // multiple * multiple,
    )
    assert_meta_matches_output(data, meta)


def test_output_format_is_honoured(edit_editor: QwenEditor) -> None:
    data, meta = edit(edit_editor, **{**SMALL, "output_format": "webp"})
    assert meta.format is OutputFormat.WEBP
    assert decode(data).format == "WEBP"


# --- image count -------------------------------------------------------------------------------


def test_plus_edits_with_two_reference_images(plus_editor: QwenEditor) -> None:
    progress = ProgressLog()
    data, meta = edit(
        plus_editor, progress=progress, images=[png_bytes(64, 48), png_bytes(40, 40)], **SMALL
    )
    assert progress.steps == [1, 2]
    assert (meta.width, meta.height) == (64, 64)
    assert_meta_matches_output(data, meta)


def test_edit_model_refuses_two_images_before_running(
    edit_editor: QwenEditor, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline_calls = spy(monkeypatch, type(edit_editor.pipe), "__call__")
    with pytest.raises(InvalidInput) as info:
        edit(edit_editor, images=[png_bytes(), png_bytes()], **SMALL)
    assert info.value.code == "image_count"
    assert pipeline_calls.count == 0


def test_plus_model_refuses_a_fourth_image(plus_editor: QwenEditor) -> None:
    with pytest.raises(InvalidInput) as info:
        edit(plus_editor, images=[png_bytes()] * 4, **SMALL)
    assert info.value.code == "image_count"


# --- cancel ------------------------------------------------------------------------------------


def test_cancel_running_request_stops_within_one_step_and_never_decodes(
    edit_editor: QwenEditor, monkeypatch: pytest.MonkeyPatch
) -> None:
    decodes = spy(monkeypatch, edit_editor.pipe.vae, "decode")
    progress = ProgressLog().cancel_after(2)
    with pytest.raises(Cancelled, match="after step 2 of 50"):
        edit(edit_editor, progress=progress, **{**SMALL, "steps": 50})
    assert len(progress.events) <= 3
    assert progress.steps == [1, 2]
    assert decodes.count == 0
    # The dev-only patch of diffusers is undone even when the run is cut short.
    assert edit_module.calculate_dimensions is ORIGINAL_EDIT_DIMENSIONS
    assert plus_module.calculate_dimensions is ORIGINAL_PLUS_DIMENSIONS


def test_cancel_before_the_first_step_never_starts_the_pipeline(
    edit_editor: QwenEditor, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline_calls = spy(monkeypatch, type(edit_editor.pipe), "__call__")
    progress = ProgressLog().cancel_after(0)
    with pytest.raises(Cancelled):
        edit(edit_editor, progress=progress, **SMALL)
    assert pipeline_calls.count == 0
    assert progress.events == []


# --- the dev model's condition area ----------------------------------------------------------


def test_a_real_model_folder_keeps_diffusers_condition_size(
    tmp_path: Path, tiny_edit_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same weights with no dev stand-ins in model_index.json: what a real model looks like.
    folder = copy_model(tiny_edit_dir, tmp_path / "real-looking", as_real_weights=True)
    editor = dev_editor(folder, presets=(Preset.QUALITY,), default_preset=Preset.QUALITY)
    assert editor.random_weights is False
    assert editor.condition_pixels is None
    encodes = spy(monkeypatch, editor.pipe.vae, "encode")
    seen: list[tuple[Any, Any]] = []

    def look_at_diffusers(_event: ProgressEvent) -> None:
        seen.append((edit_module.calculate_dimensions, plus_module.calculate_dimensions))

    # One step at diffusers' real ~1 MP condition size is slow on a CPU: cancel after it.
    progress = ProgressLog(look_at_diffusers).cancel_after(1)
    with pytest.raises(Cancelled):
        edit(editor, progress=progress, **SMALL)
    assert seen == [(ORIGINAL_EDIT_DIMENSIONS, ORIGINAL_PLUS_DIMENSIONS)]
    (condition,) = encodes.args[0]
    condition_pixels = condition.shape[-1] * condition.shape[-2]
    assert condition_pixels > 900_000  # diffusers' own 1024 x 1024 area, untouched


def test_the_dev_models_own_cap_applies_during_the_call_and_diffusers_is_restored(
    edit_editor: QwenEditor, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert edit_editor.condition_pixels == DEV_PIXELS  # read from its model_index.json
    encodes = spy(monkeypatch, edit_editor.pipe.vae, "encode")
    areas: list[int] = []

    def look_at_diffusers(_event: ProgressEvent) -> None:
        width, height, _ = edit_module.calculate_dimensions(1024 * 1024, 1.0)
        areas.append(width * height)

    edit(edit_editor, progress=ProgressLog(look_at_diffusers), **SMALL)
    assert areas == [DEV_PIXELS, DEV_PIXELS]
    (condition,) = encodes.args[0]
    assert condition.shape[-1] * condition.shape[-2] <= DEV_PIXELS * 1.1
    assert edit_module.calculate_dimensions is ORIGINAL_EDIT_DIMENSIONS
    assert plus_module.calculate_dimensions is ORIGINAL_PLUS_DIMENSIONS


# --- knobs -------------------------------------------------------------------------------------


def test_native_attention_backend_is_set_and_runs(tiny_edit_dir: Path) -> None:
    editor = dev_editor(tiny_edit_dir, attention_backend="native")
    backends = {
        processor._attention_backend
        for processor in editor.pipe.transformer.attn_processors.values()
        if hasattr(processor, "_attention_backend")
    }
    assert backends == {"native"}
    data, meta = edit(editor, **SMALL)
    assert_meta_matches_output(data, meta)


def test_unknown_attention_backend_is_refused_by_name(tiny_edit_dir: Path) -> None:
    with pytest.raises(EngineError, match="warp-drive"):
        dev_editor(tiny_edit_dir, attention_backend="warp-drive")


def test_batched_cfg_with_a_backend_that_takes_no_mask_is_refused_at_load(
    tiny_edit_dir: Path,
) -> None:
    # PyTorch's own flash kernel: diffusers refuses a mask for it, as for flash-attn and sage.
    with pytest.raises(EngineError) as info:
        dev_editor(tiny_edit_dir, attention_backend="_native_flash", batched_cfg=True)
    message = str(info.value)
    assert "BATCHED_CFG=true" in message
    assert "ATTENTION_BACKEND=_native_flash" in message
    assert "attn_mask" in message  # diffusers' own words, quoted
    assert "BATCHED_CFG=false" in message
    # Each alone loads; so does batching with a backend that takes the mask.
    dev_editor(tiny_edit_dir, attention_backend="_native_flash")
    dev_editor(tiny_edit_dir, attention_backend="native", batched_cfg=True)


def test_compile_blocks_calls_compile_repeated_blocks_recorded_not_compiled(
    tiny_edit_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from diffusers import QwenImageTransformer2DModel

    compiles = spy(
        monkeypatch,
        QwenImageTransformer2DModel,
        "compile_repeated_blocks",
        replacement=lambda _self, *_args, **_kwargs: None,
    )
    dev_editor(tiny_edit_dir)
    assert compiles.count == 0
    dev_editor(tiny_edit_dir, compile_blocks=True)
    assert compiles.kwargs == [{"fullgraph": True}]


@pytest.mark.parametrize(("warmup", "runs"), [(True, 3), (False, 0)])
def test_load_warms_up_each_served_preset_unless_disabled(
    tiny_edit_dir: Path, monkeypatch: pytest.MonkeyPatch, warmup: bool, runs: int
) -> None:
    pipeline_calls = spy(monkeypatch, QwenImageEditPipeline, "__call__")
    dev_editor(tiny_edit_dir, warmup=warmup)
    assert pipeline_calls.count == runs
    assert all(call["num_inference_steps"] == 2 for call in pipeline_calls.kwargs)
    # quality and balanced warm up with true CFG, fast without.
    assert [call["true_cfg_scale"] for call in pipeline_calls.kwargs] == [4.0, 4.0, 1.0][:runs]


def test_drawn_seed_can_be_the_largest_and_is_reported(
    edit_editor: QwenEditor, monkeypatch: pytest.MonkeyPatch
) -> None:
    draws = spy(monkeypatch, secrets, "randbelow", replacement=lambda bound: bound - 1)
    options = {key: value for key, value in SMALL.items() if key != "seed"}
    _, meta = edit(edit_editor, **options)
    assert draws.args == [(MAX_SEED + 1,)]
    assert meta.seed == MAX_SEED
