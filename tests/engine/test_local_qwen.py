"""Local edits with the tiny Qwen models: the working size, the crop the pipeline sees, the
blend into the original and the output size."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from diffusers import QwenImageEditPipeline, QwenImageEditPlusPipeline
from diffusers.pipelines.qwenimage.pipeline_qwenimage_edit import calculate_dimensions
from PIL import Image

from qie_engine.contract import ResultMeta
from qie_engine.edit_request import RawEdit
from qie_engine.editor import run_edit
from qie_engine.local_edit import crop_box, feather_reach
from qie_engine.qwen_editor import QwenEditor
from tests import images
from tests.engine.mask_checks import beyond, pixels
from tests.engine.recorders import ProgressLog, spy
from tests.engine.tiny_editors import DEV_PIXELS

QUICK: dict[str, Any] = {"steps": 2, "seed": 0, "true_cfg_scale": 1.0}


def edit(
    editor: QwenEditor, image_list: list[bytes], *, mask: bytes | None = None, **options: Any
) -> tuple[Image.Image, ResultMeta]:
    progress = ProgressLog()
    raw = RawEdit(image_list, "make it brighter", options=json.dumps(QUICK | options), mask=mask)
    out, meta = run_edit(editor, raw, progress, progress.is_cancelled)
    return images.decode(out), meta


# --- the working size ---------------------------------------------------------------------------


@pytest.mark.parametrize("crop", [(1000, 1000), (4000, 3000), (300, 1000), (124, 114)])
def test_the_dev_working_size_is_its_capped_area_at_the_crops_aspect(
    edit_editor: QwenEditor, crop: tuple[int, int]
) -> None:
    width, height = edit_editor.working_size(crop)
    assert (width, height) == calculate_dimensions(DEV_PIXELS, crop[0] / crop[1])[:2]
    assert width % 16 == 0
    assert height % 16 == 0
    assert abs(width * height - DEV_PIXELS) / DEV_PIXELS < 0.15
    assert abs((width / height) / (crop[0] / crop[1]) - 1) < 0.15


@pytest.mark.parametrize(
    ("crop", "expected"),
    [((1000, 1000), (1024, 1024)), ((4000, 3000), (1184, 896)), ((1500, 1300), (1088, 960))],
)
def test_the_real_working_size_is_about_one_megapixel_at_the_crops_aspect(
    edit_editor: QwenEditor,
    monkeypatch: pytest.MonkeyPatch,
    crop: tuple[int, int],
    expected: tuple[int, int],
) -> None:
    monkeypatch.setattr(edit_editor, "condition_pixels", None)  # as the real weights load
    width, height = edit_editor.working_size(crop)
    assert (width, height) == expected
    assert width % 16 == 0
    assert height % 16 == 0
    assert abs(width * height - 1024 * 1024) / (1024 * 1024) < 0.1
    assert abs((width / height) / (crop[0] / crop[1]) - 1) < 0.05


# --- edits --------------------------------------------------------------------------------------


def test_a_painted_mask_edits_its_crop_at_the_working_size_and_keeps_the_rest(
    edit_editor: QwenEditor, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = spy(monkeypatch, QwenImageEditPipeline, "__call__")
    data = images.png_bytes(320, 240)
    mask = images.painted_mask((320, 240), (200, 150, 260, 200))
    out, meta = edit(edit_editor, [data], mask=images.encode(mask, "PNG"))
    assert out.size == (320, 240)
    assert (meta.width, meta.height) == (320, 240)
    local = meta.local
    assert local is not None
    assert (local.padding, local.feather) == (32, 4)
    left, top, right, bottom = crop_box((200, 150, 261, 201), 32, (320, 240))
    assert local.crop == (left, top, right - left, bottom - top) == (168, 118, 125, 115)
    assert local.working_size == calculate_dimensions(DEV_PIXELS, 125 / 115)[:2]
    (kwargs,) = calls.kwargs
    assert kwargs["image"].size == local.working_size
    assert (kwargs["width"], kwargs["height"]) == local.working_size
    original = pixels(images.decode(data))
    outside = beyond(mask, feather_reach(local.feather))
    assert (pixels(out)[outside] == original[outside]).all()
    assert (pixels(out)[~outside] != original[~outside]).any()  # random weights change pixels


def test_a_mask_that_marks_everything_is_the_plain_edit_at_the_inputs_size(
    edit_editor: QwenEditor,
) -> None:
    data = images.png_bytes(64, 48)
    plain, plain_meta = edit(edit_editor, [data], output_size="input")
    full, meta = edit(edit_editor, [data], mask=images.mask_png((64, 48), (0, 0, 64, 48)))
    assert meta.local is None
    assert full.size == plain.size == (64, 48)
    assert np.array_equal(pixels(full), pixels(plain))
    assert (meta.width, meta.height) == (plain_meta.width, plain_meta.height) == (64, 48)


def test_output_size_input_resizes_the_models_result_to_the_input(
    edit_editor: QwenEditor,
) -> None:
    data = images.png_bytes(64, 48)
    model, model_meta = edit(edit_editor, [data])
    assert model.size == (model_meta.width, model_meta.height)
    assert model.size != (64, 48)  # the model's own size
    sized, sized_meta = edit(edit_editor, [data], output_size="input")
    assert sized.size == (sized_meta.width, sized_meta.height) == (64, 48)
    assert sized_meta.local is None


def test_a_plus_model_applies_the_mask_to_the_first_image_and_keeps_the_others_whole(
    plus_editor: QwenEditor, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = spy(monkeypatch, QwenImageEditPlusPipeline, "__call__")
    first, reference = images.png_bytes(320, 240), images.png_bytes(100, 80)
    mask = images.mask_png((320, 240), (40, 40, 100, 100))
    out, meta = edit(plus_editor, [first, reference], mask=mask)
    assert out.size == (320, 240)
    assert meta.local is not None
    (kwargs,) = calls.kwargs
    crop, whole = kwargs["image"]
    assert crop.size == meta.local.working_size
    assert whole.size == (100, 80)
    outside = beyond(images.rectangle_mask((320, 240), (40, 40, 100, 100)), 3)
    assert (pixels(out)[outside] == pixels(images.decode(first))[outside]).all()
