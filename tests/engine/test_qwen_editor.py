"""QwenEditor on the tiny random-weight models: loading, steps, seeds, sizes, cancel and knobs."""

from __future__ import annotations

import json
import logging
import math
import secrets
from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, QwenImageEditPipeline
from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit as edit_module
from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_plus as plus_module
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict

from qie_engine.contract import MAX_SEED, OutputFormat, Preset, ProgressEvent, ResultMeta
from qie_engine.editor import run_edit
from qie_engine.errors import Cancelled, EngineError, InvalidInput
from qie_engine.qwen_editor import QwenEditor
from tests.engine.recorders import ProgressLog, spy
from tests.engine.tiny_editors import DEV_PIXELS, SMALL, copy_model, dev_settings
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
    return run_edit(
        editor,
        images if images is not None else [png_bytes(64, 48)],
        "make it brighter",
        None,
        json.dumps(options),
        log,
        log.is_cancelled,
    )


# --- loading -----------------------------------------------------------------------------------


def test_tiny_model_loads_from_a_local_folder(edit_editor: QwenEditor, tiny_edit_dir: Path) -> None:
    assert type(edit_editor.pipe).__name__ == "QwenImageEditPipeline"
    assert edit_editor.variant == "edit"
    assert edit_editor.random_weights is True
    assert edit_editor.limits.max_images == 1
    facts = edit_editor.describe()
    assert facts["model_id"] == str(tiny_edit_dir)
    assert facts["pipeline"] == "QwenImageEditPipeline"
    assert facts["random_weights"] is True
    assert facts["defaults"] == {"preset": "quality", "steps": 50, "true_cfg_scale": 4.0}
    assert facts["presets"]["fast"] == {"steps": 8, "true_cfg_scale": 1.0}


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
    editor = QwenEditor("qwen_image_edit", dev_settings(folder))
    assert type(editor.pipe).__name__ == pipeline
    assert editor.limits.max_images == max_images


def test_plus_folder_loads_as_the_plus_pipeline(plus_editor: QwenEditor) -> None:
    assert type(plus_editor.pipe).__name__ == "QwenImageEditPlusPipeline"
    assert plus_editor.variant == "plus"
    assert plus_editor.describe()["max_images"] == 3


def test_folder_without_model_index_is_refused(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match=r"model_index\.json"):
        QwenEditor("qwen_image_edit", dev_settings(tmp_path))


def test_folder_holding_another_pipeline_is_refused(tmp_path: Path, tiny_edit_dir: Path) -> None:
    folder = copy_model(tiny_edit_dir, tmp_path / "model")
    index = json.loads((folder / "model_index.json").read_text())
    index["_class_name"] = "StableDiffusionPipeline"
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(EngineError, match="StableDiffusionPipeline"):
        QwenEditor("qwen_image_edit", dev_settings(folder))


def test_missing_local_folder_is_refused_without_asking_the_hub(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="does not exist"):
        QwenEditor("qwen_image_edit", dev_settings(tmp_path / "nowhere"))


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


# --- the dev-only condition area ---------------------------------------------------------------


def test_dev_condition_pixels_is_ignored_for_real_weights(
    tmp_path: Path,
    tiny_edit_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    folder = copy_model(tiny_edit_dir, tmp_path / "real-looking", as_real_weights=True)
    with caplog.at_level(logging.WARNING, logger="qie_engine.qwen_editor"):
        editor = QwenEditor("qwen_image_edit", dev_settings(folder))
    assert editor.random_weights is False
    assert "DEV_CONDITION_PIXELS is ignored" in caplog.text
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


def test_dev_condition_pixels_caps_the_random_weight_model_and_restores_diffusers(
    edit_editor: QwenEditor, monkeypatch: pytest.MonkeyPatch
) -> None:
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


# --- presets -----------------------------------------------------------------------------------


def scheduler_shifts(editor: QwenEditor) -> tuple[float, float]:
    config = editor.pipe.scheduler.config
    return config["base_shift"], config["max_shift"]


def test_fast_preset_runs_8_steps_without_cfg_on_the_lightning_scheduler(
    edit_editor: QwenEditor, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline_calls = spy(monkeypatch, type(edit_editor.pipe), "__call__")
    shifts: list[tuple[float, float]] = []
    progress = ProgressLog(lambda _event: shifts.append(scheduler_shifts(edit_editor)))
    _, meta = edit(edit_editor, progress=progress, preset="fast", seed=1, width=64, height=64)
    (call,) = pipeline_calls.kwargs
    assert call["num_inference_steps"] == 8
    assert call["true_cfg_scale"] == 1.0
    assert call["negative_prompt"] is None
    assert progress.steps == list(range(1, 9))
    assert meta.steps == 8
    assert shifts == [(math.log(3), math.log(3))] * 8


def test_quality_preset_runs_50_steps_with_cfg_4_on_the_default_scheduler(
    edit_editor: QwenEditor, tiny_edit_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = FlowMatchEulerDiscreteScheduler.from_pretrained(tiny_edit_dir / "scheduler").config
    # A fast call first: the Lightning scheduler must not leak into the next request.
    edit(edit_editor, preset="fast", steps=1, seed=1, width=64, height=64)
    pipeline_calls = spy(monkeypatch, type(edit_editor.pipe), "__call__")
    shifts: list[tuple[float, float]] = []
    progress = ProgressLog(lambda _event: shifts.append(scheduler_shifts(edit_editor)))
    with pytest.raises(Cancelled):  # the first step shows all we need
        edit(edit_editor, progress=progress.cancel_after(1), preset="quality", width=64, height=64)
    (call,) = pipeline_calls.kwargs
    assert call["num_inference_steps"] == 50
    assert call["true_cfg_scale"] == 4.0
    assert call["negative_prompt"] == " "  # true CFG needs one; the model card uses a blank
    assert progress.events[0].total == 50
    assert shifts == [(shipped["base_shift"], shipped["max_shift"])]


def test_explicit_steps_override_the_preset(
    edit_editor: QwenEditor, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline_calls = spy(monkeypatch, type(edit_editor.pipe), "__call__")
    progress = ProgressLog()
    _, meta = edit(
        edit_editor, progress=progress, preset="fast", steps=3, seed=1, width=64, height=64
    )
    (call,) = pipeline_calls.kwargs
    assert call["num_inference_steps"] == 3
    assert call["true_cfg_scale"] == 1.0
    assert progress.steps == [1, 2, 3]
    assert meta.steps == 3


def test_default_preset_comes_from_the_settings(tiny_edit_dir: Path) -> None:
    editor = QwenEditor("qwen_image_edit", dev_settings(tiny_edit_dir, default_preset=Preset.FAST))
    assert editor.describe()["defaults"] == {"preset": "fast", "steps": 8, "true_cfg_scale": 1.0}


# --- knobs -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_lora(tiny_edit_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA for the tiny transformer, built offline with peft in the diffusers format."""
    from diffusers import QwenImageTransformer2DModel

    torch.manual_seed(0)
    transformer = QwenImageTransformer2DModel.from_pretrained(tiny_edit_dir / "transformer")
    # init_lora_weights=False: random A and B, so the LoRA really changes the weights.
    config = LoraConfig(
        r=4, lora_alpha=16, target_modules=["to_q", "to_k"], init_lora_weights=False
    )
    transformer.add_adapter(config)
    target = tmp_path_factory.mktemp("lora")
    QwenImageEditPipeline.save_lora_weights(
        target, transformer_lora_layers=get_peft_model_state_dict(transformer)
    )
    return target


def test_lora_path_loads_fuses_and_changes_the_output(
    edit_editor: QwenEditor, tiny_edit_dir: Path, tiny_lora: Path
) -> None:
    with_lora = QwenEditor("qwen_image_edit", dev_settings(tiny_edit_dir, lora_path=str(tiny_lora)))
    fused = with_lora.pipe.transformer.transformer_blocks[0].attn.to_q.weight
    base = edit_editor.pipe.transformer.transformer_blocks[0].attn.to_q.weight
    assert not torch.equal(fused, base)
    assert edit(with_lora, **SMALL)[0] != edit(edit_editor, **SMALL)[0]


def test_native_attention_backend_is_set_and_runs(tiny_edit_dir: Path) -> None:
    editor = QwenEditor("qwen_image_edit", dev_settings(tiny_edit_dir, attention_backend="native"))
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
        QwenEditor("qwen_image_edit", dev_settings(tiny_edit_dir, attention_backend="warp-drive"))


def test_cpu_offload_on_cpu_is_ignored_with_a_warning_and_still_runs(
    tiny_edit_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    offloads = spy(monkeypatch, QwenImageEditPipeline, "enable_model_cpu_offload")
    with caplog.at_level(logging.WARNING, logger="qie_engine.qwen_editor"):
        editor = QwenEditor(
            "qwen_image_edit", dev_settings(tiny_edit_dir, device="cpu", cpu_offload="model")
        )
    assert "cpu_offload=model needs CUDA" in caplog.text
    assert offloads.count == 0
    data, meta = edit(editor, **SMALL)
    assert_meta_matches_output(data, meta)


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
    QwenEditor("qwen_image_edit", dev_settings(tiny_edit_dir))
    assert compiles.count == 0
    QwenEditor("qwen_image_edit", dev_settings(tiny_edit_dir, compile_blocks=True))
    assert compiles.kwargs == [{"fullgraph": True}]


@pytest.mark.parametrize(("warmup", "runs"), [(True, 1), (False, 0)])
def test_warm_up_runs_once_at_init_unless_disabled(
    tiny_edit_dir: Path, monkeypatch: pytest.MonkeyPatch, warmup: bool, runs: int
) -> None:
    pipeline_calls = spy(monkeypatch, QwenImageEditPipeline, "__call__")
    QwenEditor("qwen_image_edit", dev_settings(tiny_edit_dir, warmup=warmup))
    assert pipeline_calls.count == runs
    assert all(call["num_inference_steps"] == 2 for call in pipeline_calls.kwargs)


def test_drawn_seed_can_be_the_largest_and_is_reported(
    edit_editor: QwenEditor, monkeypatch: pytest.MonkeyPatch
) -> None:
    draws = spy(monkeypatch, secrets, "randbelow", replacement=lambda bound: bound - 1)
    options = {key: value for key, value in SMALL.items() if key != "seed"}
    _, meta = edit(edit_editor, **options)
    assert draws.args == [(MAX_SEED + 1,)]
    assert meta.seed == MAX_SEED
