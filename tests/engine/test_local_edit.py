"""Local edits: reading the mask, the crop, the working size, the feather and the blend, each
alone, then through run_edit with classic_edit (the Qwen models are in test_local_qwen.py)."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from PIL import Image

from qie_engine.classic_editor import ClassicEditor
from qie_engine.contract import EditOptions, ProgressEvent, ResultMeta
from qie_engine.edit_mask import mask_channel, read_mask, region_mask
from qie_engine.edit_request import EditRequest, RawEdit, RequestLimits
from qie_engine.editor import CancelledFn, EditOutcome, ProgressFn, edit_image, run_edit
from qie_engine.errors import Cancelled, InvalidInput
from qie_engine.image_codec import ImageLimits
from qie_engine.local_edit import (
    MAX_CROP_ASPECT,
    LocalPlan,
    crop_box,
    default_feather,
    default_padding,
    feather_mask,
    feather_reach,
    plan_local_edit,
    stitch,
)
from tests import images
from tests.engine.mask_checks import beyond, pixels, well_inside
from tests.engine.recorders import ProgressLog

LIMITS = ImageLimits()


def run(
    data: bytes,
    prompt: str = "invert",
    *,
    mask: bytes | None = None,
    editor: Any = None,
    **options: Any,
) -> tuple[Image.Image, ResultMeta]:
    """run_edit (classic_edit unless given) with PNG output; the result decoded."""
    progress = ProgressLog()
    raw = RawEdit([data], prompt, options=json.dumps(options), mask=mask)
    out, meta = run_edit(editor or ClassicEditor(), raw, progress, progress.is_cancelled)
    return images.decode(out), meta


def code_of(data: bytes, *, mask: bytes | None = None, **options: Any) -> str:
    with pytest.raises(InvalidInput) as info:
        run(data, mask=mask, **options)
    return info.value.code


# --- reading the mask ---------------------------------------------------------------------------


def test_an_alpha_mask_is_read_by_its_alpha_whatever_its_colour() -> None:
    data = images.alpha_mask_png((40, 30), (10, 5, 20, 15))  # black paint, opaque in the box
    mask = read_mask(data, (40, 30), LIMITS)
    assert mask.mode == "L"
    assert mask.getbbox() == (10, 5, 20, 15)
    assert mask.getextrema() == (0, 255)


def test_a_greyscale_mask_is_read_by_its_luminance() -> None:
    mask = read_mask(images.mask_png((40, 30), (10, 5, 20, 15), value=128), (40, 30), LIMITS)
    assert mask.getbbox() == (10, 5, 20, 15)
    assert mask.getpixel((15, 10)) == 128


def test_an_opaque_rgba_mask_is_read_by_its_luminance() -> None:
    painted = Image.new("RGBA", (40, 30), (0, 0, 0, 255))
    painted.paste((255, 255, 255, 255), (10, 5, 20, 15))
    assert mask_channel(painted).getbbox() == (10, 5, 20, 15)


def test_a_region_is_a_rectangle_mask() -> None:
    mask = region_mask((10, 5, 10, 10), (40, 30))
    assert mask.getbbox() == (10, 5, 20, 15)
    assert mask.getextrema() == (0, 255)


def test_mask_of_the_stored_size_of_an_exif_rotated_image_is_refused_saying_both_sizes() -> None:
    upright = images.exif_orientation_6(64, 48, "PNG")  # shown 48 x 64
    with pytest.raises(InvalidInput) as info:
        run(upright, mask=images.mask_png((64, 48), (0, 0, 8, 8)))
    assert info.value.code == "mask_size_mismatch"
    assert "64x48" in str(info.value)
    assert "48x64" in str(info.value)
    assert "upright" in str(info.value)


@pytest.mark.parametrize(
    ("mask", "options", "code"),
    [
        (b"not an image", {}, "invalid_mask"),
        (b"", {}, "invalid_mask"),
        (images.tiff_bytes(64, 48), {}, "invalid_mask"),
        (images.truncated_png(64, 48), {}, "invalid_mask"),
        (images.mask_png((32, 24), (0, 0, 8, 8)), {}, "mask_size_mismatch"),
        (images.mask_png((64, 48), (0, 0, 0, 0)), {}, "mask_empty"),
        (images.alpha_mask_png((64, 48), (0, 0, 0, 0)), {}, "mask_empty"),
        (images.pixel_flood_png(), {}, "image_too_large"),
        (None, {"region": [60, 0, 8, 8]}, "region_outside_image"),
        (None, {"region": [0, 40, 8, 9]}, "region_outside_image"),
        (images.mask_png((64, 48), (0, 0, 8, 8)), {"region": [0, 0, 8, 8]}, "invalid_options"),
        (images.mask_png((64, 48), (0, 0, 8, 8)), {"width": 64}, "invalid_options"),
    ],
    ids=[
        "text",
        "empty",
        "tiff",
        "truncated",
        "wrong-size",
        "all-black",
        "all-transparent",
        "pixel-flood",
        "region-past-the-right",
        "region-past-the-bottom",
        "mask-and-region",
        "mask-and-width",
    ],
)
def test_each_bad_mask_is_refused_with_its_code(
    mask: bytes | None, options: dict[str, Any], code: str
) -> None:
    assert code_of(images.png_bytes(64, 48), mask=mask, **options) == code


def test_a_bad_mask_never_reaches_the_editor() -> None:
    editor = ShrinkingEditor()
    with pytest.raises(InvalidInput):
        run(images.png_bytes(64, 48), mask=b"not an image", editor=editor)
    assert editor.requests == []


# --- the crop -----------------------------------------------------------------------------------


def test_default_padding_is_a_quarter_of_the_longer_side_at_least_32() -> None:
    assert default_padding((100, 100, 500, 200)) == 100
    assert default_padding((0, 0, 10, 20)) == 32
    assert default_padding((0, 0, 129, 1)) == 33


def test_crop_is_the_box_plus_padding_inside_the_image() -> None:
    assert crop_box((100, 100, 140, 140), 32, (1000, 1000)) == (68, 68, 172, 172)


@pytest.mark.parametrize(
    ("box", "crop"),
    [
        ((0, 0, 10, 10), (0, 0, 42, 42)),  # top-left corner
        ((990, 990, 1000, 1000), (958, 958, 1000, 1000)),  # bottom-right corner
        ((0, 480, 20, 500), (0, 448, 52, 532)),  # left edge
        ((480, 980, 500, 1000), (448, 948, 532, 1000)),  # bottom edge
    ],
)
def test_crop_at_edges_and_corners_is_clamped_to_the_image(
    box: tuple[int, int, int, int], crop: tuple[int, int, int, int]
) -> None:
    assert crop_box(box, 32, (1000, 1000)) == crop


@pytest.mark.parametrize(
    ("box", "size"),
    [
        ((100, 500, 900, 510), (1000, 1000)),  # a thin band across the middle
        ((0, 0, 1000, 10), (1000, 1000)),  # along the top edge: widened downwards only
        ((995, 0, 1000, 800), (1000, 1000)),  # along the right edge: widened leftwards only
    ],
)
def test_a_thin_box_is_widened_to_the_models_aspect_within_the_image(
    box: tuple[int, int, int, int], size: tuple[int, int]
) -> None:
    left, top, right, bottom = crop_box(box, 32, size)
    assert left <= box[0] and top <= box[1] and right >= box[2] and bottom >= box[3]
    assert left >= 0 and top >= 0 and right <= size[0] and bottom <= size[1]
    width, height = right - left, bottom - top
    assert max(width / height, height / width) <= MAX_CROP_ASPECT + 0.01


def test_an_image_thinner_than_the_aspect_keeps_its_own() -> None:
    assert crop_box((1000, 10, 1300, 90), 75, (4000, 100)) == (925, 0, 1375, 100)


def test_padding_option_overrides_but_the_crop_always_holds_the_feather() -> None:
    mask = images.rectangle_mask((1000, 1000), (400, 400, 600, 600))

    def plan(**options: Any) -> LocalPlan:
        return plan_local_edit(mask, EditOptions(**options), lambda crop: crop)

    assert plan().padding == 50  # a quarter of 200
    assert plan().crop == (350, 350, 650, 650)
    assert plan(mask_padding=80).crop == (320, 320, 680, 680)
    assert plan(mask_padding=0, mask_feather=0).crop == (400, 400, 600, 600)
    assert plan(mask_padding=0, mask_feather=20).padding == feather_reach(20) == 11


def test_plan_asks_the_editor_for_the_working_size_of_its_crop() -> None:
    mask = images.rectangle_mask((1000, 1000), (400, 400, 600, 600))
    asked: list[tuple[int, int]] = []

    def working_size(crop: tuple[int, int]) -> tuple[int, int]:
        asked.append(crop)
        return 64, 64

    plan = plan_local_edit(mask, EditOptions(), working_size)
    assert asked == [(300, 300)]
    assert plan.working_size == (64, 64)
    assert plan.describe().crop == (350, 350, 300, 300)


def test_classic_edits_the_crop_as_it_is() -> None:
    assert ClassicEditor().working_size((1234, 567)) == (1234, 567)


# --- the feather and the blend ------------------------------------------------------------------


def test_default_feather_is_one_percent_of_the_shorter_side_at_least_4() -> None:
    assert default_feather((4000, 3000)) == 30
    assert default_feather((3000, 4000)) == 30
    assert default_feather((300, 200)) == 4


@pytest.mark.parametrize("feather", [4, 10, 30])
def test_the_blend_zone_spans_the_feather_centred_on_the_edge(feather: int) -> None:
    mask = images.rectangle_mask((200, 20), (0, 0, 100, 20))  # edge between x 99 and 100
    row = np.asarray(feather_mask(mask, feather))[10]
    blending = np.nonzero((row > 0) & (row < 255))[0]
    assert len(blending) == feather
    assert (blending.min(), blending.max()) == (100 - feather // 2, 99 + feather // 2)
    assert row[99 - feather // 2 :: -1].min() == 255
    assert row[100 + feather // 2 :].max() == 0
    assert 100 + feather // 2 < 100 + feather_reach(feather)


def test_feather_0_keeps_the_mask_hard() -> None:
    mask = images.rectangle_mask((50, 50), (10, 10, 20, 20))
    assert feather_mask(mask, 0).tobytes() == mask.tobytes()


def test_stitch_keeps_every_pixel_outside_the_feathered_mask_bit_for_bit() -> None:
    original = images.noise(300, 200)
    mask = images.painted_mask((300, 200), (100, 60, 180, 120))
    plan = plan_local_edit(mask, EditOptions(mask_feather=8), lambda crop: (64, 64))
    edited = Image.new("RGB", (64, 64), (255, 255, 255))
    out = stitch(original, edited, mask, plan)
    assert out.size == original.size
    changed = pixels(out) != pixels(original)
    assert changed.any()
    assert not changed[beyond(mask, feather_reach(8))].any()
    assert (pixels(out)[well_inside(mask, feather_reach(8))] == 255).all()


def test_a_transparent_original_keeps_its_alpha_under_an_opaque_edit() -> None:
    original = images.colourful(100, 80).convert("RGBA")
    original.putalpha(Image.linear_gradient("L").resize((100, 80)))
    mask = images.rectangle_mask((100, 80), (30, 30, 60, 60))
    plan = plan_local_edit(mask, EditOptions(), lambda crop: crop)
    out = stitch(original, Image.new("RGB", plan.crop_size, (0, 0, 0)), mask, plan)
    assert out.mode == "RGBA"
    assert out.getchannel("A").tobytes() == original.getchannel("A").tobytes()


def test_an_edit_that_adds_transparency_keeps_it_and_the_rest_stays_opaque() -> None:
    original = images.colourful(100, 80)
    mask = images.rectangle_mask((100, 80), (30, 30, 60, 60))
    plan = plan_local_edit(mask, EditOptions(mask_feather=0), lambda crop: crop)
    out = stitch(original, Image.new("RGBA", plan.crop_size, (0, 0, 0, 0)), mask, plan)
    assert out.mode == "RGBA"
    alpha = np.asarray(out.getchannel("A"))
    assert (alpha[30:60, 30:60] == 0).all()
    assert alpha[np.asarray(mask) == 0].min() == 255
    assert (pixels(out)[np.asarray(mask) == 0] == pixels(original)[np.asarray(mask) == 0]).all()


# --- through run_edit with classic_edit ---------------------------------------------------------


def test_a_masked_edit_changes_only_the_mask_and_keeps_the_rest_bit_for_bit() -> None:
    data = images.png_bytes(300, 200)
    mask = images.painted_mask((300, 200), (100, 60, 180, 120))
    out, meta = run(data, "invert", mask=images.encode(mask, "PNG"))
    original = pixels(images.decode(data))
    assert out.size == (300, 200)
    assert (meta.width, meta.height) == (300, 200)
    assert meta.local is not None
    reach = feather_reach(meta.local.feather)
    assert (pixels(out)[beyond(mask, reach)] == original[beyond(mask, reach)]).all()
    inside = well_inside(mask, reach)
    assert inside.any()
    assert (pixels(out)[inside] == 255 - original[inside]).all()


def test_a_grey_mask_blends_the_edit_with_the_original() -> None:
    data = images.png_bytes(200, 100)
    out, _ = run(data, "invert", mask=images.mask_png((200, 100), (50, 20, 150, 80), value=128))
    original = pixels(images.decode(data))[40:60, 80:120]
    blended = (original * 127 + (255 - original) * 128) / 255
    assert np.abs(pixels(out)[40:60, 80:120] - blended).max() <= 1


def test_an_alpha_mask_edits_where_it_is_opaque() -> None:
    data = images.png_bytes(200, 100)
    out, meta = run(data, "invert", mask=images.alpha_mask_png((200, 100), (50, 20, 150, 80)))
    original = pixels(images.decode(data))
    assert (pixels(out)[40:60, 80:120] == 255 - original[40:60, 80:120]).all()
    assert (pixels(out)[:10] == original[:10]).all()
    assert meta.local is not None


def test_an_exif_rotated_image_takes_a_mask_drawn_on_the_upright_image() -> None:
    data = images.exif_orientation_6(64, 48, "PNG")  # upright 48 x 64: the red mark top-right
    mask = images.rectangle_mask((48, 64), (48 - images.MARK, 0, 48, images.MARK))
    out, meta = run(data, "invert", mask=images.encode(mask, "PNG"), mask_feather=0)
    assert out.size == (48, 64)
    arr = pixels(out)
    half = images.MARK // 2
    assert tuple(arr[half, 48 - 1 - half]) == (0, 255, 255)  # the red mark, inverted
    assert tuple(arr[half, half]) == (0, 0, 0)  # the black, kept
    assert meta.local is not None
    assert meta.local.crop[:2] == (48 - images.MARK - 32, 0)


def test_a_region_edit_of_a_phone_photo_keeps_its_size_and_everything_outside() -> None:
    data = images.phone_photo_png()
    x, y, w, h = 1200, 900, 1000, 800
    out, meta = run(data, "make it black and white", region=[x, y, w, h])
    assert out.size == (4000, 3000)
    assert (meta.width, meta.height) == (4000, 3000)
    assert meta.local is not None
    assert meta.local.feather == 30
    assert meta.local.padding == 250
    assert meta.local.crop == (x - 250, y - 250, w + 500, h + 500)
    assert meta.local.working_size == (w + 500, h + 500)
    assert "stitch_s" in meta.timings
    arr = pixels(out)
    reach = feather_reach(30)
    inside = arr[y + reach : y + h - reach, x + reach : x + w - reach]
    assert (inside[..., 0] == inside[..., 1]).all()
    assert (inside[..., 1] == inside[..., 2]).all()
    mask = images.rectangle_mask((4000, 3000), (x, y, x + w, y + h))
    outside = beyond(mask, reach)
    assert (arr[outside] == pixels(images.decode(data))[outside]).all()


def test_a_mask_that_marks_everything_is_the_plain_edit() -> None:
    data = images.png_bytes(64, 48)
    plain, plain_meta = run(data, "invert")
    full, meta = run(data, "invert", mask=images.mask_png((64, 48), (0, 0, 64, 48)))
    assert meta.local is None
    assert pixels(full).tolist() == pixels(plain).tolist()
    region, region_meta = run(data, "invert", region=[0, 0, 64, 48])
    assert region_meta.local is None
    assert pixels(region).tolist() == pixels(plain).tolist()
    assert meta.operations == plain_meta.operations == ["invert"]


# --- output_size and the editor's view ----------------------------------------------------------


class ShrinkingEditor:
    """Returns its first image at half the size, as a model's working size would; records."""

    name = "shrinking"

    def __init__(self) -> None:
        self.limits = RequestLimits()
        self.requests: list[EditRequest] = []

    def edit(
        self, request: EditRequest, on_progress: ProgressFn, is_cancelled: CancelledFn
    ) -> EditOutcome:
        self.requests.append(request)
        on_progress(ProgressEvent(step=1, total=1, elapsed_s=0.0))
        image = request.images[0]
        half = image.resize((max(1, image.width // 2), max(1, image.height // 2)))
        meta = ResultMeta(
            model=self.name,
            seed=None,
            steps=1,
            width=half.width,
            height=half.height,
            format=request.options.output_format,
            random_weights=False,
        )
        return EditOutcome(image=Image.new(image.mode, half.size, (0, 0, 0)), meta=meta)

    def working_size(self, crop: tuple[int, int]) -> tuple[int, int]:
        return 64, 32

    def describe(self) -> dict[str, Any]:
        return {}


def test_output_size_model_is_the_editors_size_and_input_resizes_to_the_input() -> None:
    model, model_meta = run(images.png_bytes(64, 48), editor=ShrinkingEditor())
    assert model.size == (model_meta.width, model_meta.height) == (32, 24)
    sized, sized_meta = run(images.png_bytes(64, 48), editor=ShrinkingEditor(), output_size="input")
    assert sized.size == (sized_meta.width, sized_meta.height) == (64, 48)
    assert sized_meta.local is None


def test_the_editor_sees_the_crop_at_its_working_size_and_the_result_fits_back() -> None:
    editor = ShrinkingEditor()
    mask = images.mask_png((300, 200), (100, 60, 180, 120))
    out, meta = run(images.png_bytes(300, 200), mask=mask, editor=editor)
    (request,) = editor.requests
    assert request.images[0].size == request.working_size == (64, 32)
    assert request.mask is None
    assert out.size == (300, 200)
    assert meta.local is not None
    assert meta.local.working_size == (64, 32)
    assert (pixels(out)[70:110, 110:170] == 0).all()  # the editor's black, blended in


def test_a_local_edit_cancelled_during_the_edit_is_never_stitched() -> None:
    progress = ProgressLog().cancel_after(1)
    request = EditRequest(
        images=[images.colourful(100, 80)],
        image_infos=[],
        prompt="invert",
        negative_prompt=None,
        options=EditOptions(),
        mask=images.rectangle_mask((100, 80), (10, 10, 20, 20)),
    )
    with pytest.raises(Cancelled):
        edit_image(ShrinkingEditor(), request, progress, progress.is_cancelled)


def test_crop_boxes_hold_the_mask_whatever_its_place() -> None:
    size = (640, 480)
    rng = np.random.default_rng(3)
    for _ in range(50):
        left, top = int(rng.integers(0, 630)), int(rng.integers(0, 470))
        right, bottom = (
            left + int(rng.integers(1, 640 - left)),
            top + int(rng.integers(1, 480 - top)),
        )
        mask = images.rectangle_mask(size, (left, top, right, bottom))
        plan = plan_local_edit(mask, EditOptions(), lambda crop: crop)
        x0, y0, x1, y1 = plan.crop
        reach = feather_reach(plan.feather)
        assert 0 <= x0 <= max(0, left - reach) and 0 <= y0 <= max(0, top - reach)
        assert min(640, right + reach) <= x1 <= 640 and min(480, bottom + reach) <= y1 <= 480
        assert math.isclose(plan.feather, 5)
