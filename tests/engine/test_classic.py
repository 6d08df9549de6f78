"""The classic editor: its parser, its pixel operations, and the Editor contract."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from qie_engine.classic_editor import ClassicEditor
from qie_engine.classic_instructions import VOCABULARY, parse_instruction
from qie_engine.classic_ops import DEFAULT_LIMITS, Operation, apply_operation
from qie_engine.contract import EditOptions, OutputFormat, ProgressEvent
from qie_engine.edit_request import EditRequest, RawEdit, RequestLimits
from qie_engine.editor import run_edit
from qie_engine.errors import Cancelled, InvalidInput
from qie_engine.image_codec import ImageInfo, ImageLimits

W, H = 40, 30


def gradient(width: int = W, height: int = H, mode: str = "RGB") -> Image.Image:
    """A deterministic image where every pixel differs from its neighbours."""
    y, x = np.mgrid[0:height, 0:width]
    arr = np.stack([(x * 6) % 256, (y * 8) % 256, ((x + y) * 3 + 40) % 256], axis=2)
    img = Image.fromarray(arr.astype(np.uint8), "RGB")
    if mode == "RGBA":
        img.putalpha(Image.fromarray(((x * 5 + 30) % 256).astype(np.uint8), "L"))
    return img


def marked(width: int = W, height: int = H) -> Image.Image:
    """Black, with a red pixel at the top-left corner and a green one at the top-right."""
    img = Image.new("RGB", (width, height), (0, 0, 0))
    img.putpixel((0, 0), (255, 0, 0))
    img.putpixel((width - 1, 0), (0, 255, 0))
    return img


def object_on_white(width: int = W, height: int = H) -> Image.Image:
    """A two-tone object in the middle of a plain white backdrop."""
    img = Image.new("RGB", (width, height), (255, 255, 255))
    arr = np.asarray(img).copy()
    top, bottom = height * 3 // 10, height * 7 // 10
    left, right = width * 3 // 10, width * 7 // 10
    arr[top:bottom, left:right] = (200, 30, 40)
    arr[top + 2 : bottom - 2, left + 2 : (left + right) // 2] = (30, 60, 180)
    return Image.fromarray(arr, "RGB")


def apply_text(img: Image.Image, text: str) -> Image.Image:
    for op in parse_instruction(text):
        img = apply_operation(img, op)
    return img


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img).astype(np.int64)


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def request_for(img: Image.Image, prompt: str, **options: object) -> EditRequest:
    return EditRequest(
        images=[img],
        image_infos=[ImageInfo(format="PNG", width=img.width, height=img.height)],
        prompt=prompt,
        negative_prompt=None,
        options=EditOptions.model_validate(options),
    )


def no_progress(event: ProgressEvent) -> None:
    del event


def never() -> bool:
    return False


# --- parsing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "labels"),
    [
        ("grayscale", ["grayscale"]),
        ("Please make it GREYSCALE.", ["grayscale"]),
        ("black and white", ["grayscale"]),
        ("make the image black-and-white", ["grayscale"]),
        ("B&W", ["grayscale"]),
        ("monochrome", ["grayscale"]),
        ("sepia", ["sepia"]),
        ("invert the colours", ["invert"]),
        ("negative", ["invert"]),
        ("rotate 90", ["rotate 90°"]),
        ("rotate by 45 degrees", ["rotate 45°"]),
        ("rotate 30° clockwise", ["rotate -30°"]),
        ("rotate left", ["rotate 90°"]),
        ("rotate counter-clockwise", ["rotate 90°"]),
        ("rotate right", ["rotate -90°"]),
        ("clockwise", ["rotate -90°"]),
        ("anticlockwise", ["rotate 90°"]),
        ("turn it upside down", ["rotate 180°"]),
        ("flip", ["flip vertically"]),
        ("flip it top-bottom", ["flip vertically"]),
        ("flip horizontally", ["mirror"]),
        ("mirror the image", ["mirror"]),
        ("blur", ["blur radius 2"]),
        ("blur 5", ["blur radius 5"]),
        ("blur by 3", ["blur radius 3"]),
        ("slightly blur", ["blur radius 1"]),
        ("strong blur", ["blur radius 6"]),
        ("sharpen", ["sharpen"]),
        ("brighten", ["brightness +25%"]),
        ("make it brighter", ["brightness +25%"]),
        ("a little darker", ["brightness -10%"]),
        ("darken", ["brightness -25%"]),
        ("increase brightness by 20%", ["brightness +20%"]),
        ("brightness -15 percent", ["brightness -15%"]),
        ("more contrast", ["contrast +25%"]),
        ("reduce the contrast by 30%", ["contrast -30%"]),
        ("more saturated", ["saturation +25%"]),
        ("much more vivid", ["saturation +50%"]),
        ("desaturate", ["saturation -25%"]),
        ("crop to square", ["crop to square"]),
        ("resize to 640x480", ["resize to 640x480"]),
        ("resize 800×600", ["resize to 800x600"]),  # noqa: RUF001
        ("scale 50%", ["scale 50%"]),
        ("scale to 50 %", ["scale 50%"]),
        ("pixelate", ["pixelate 8 px"]),
        ("pixelate with 4px blocks", ["pixelate 4 px"]),
        ("posterize", ["posterize 3 bits"]),
        ("posterize to 2 bits", ["posterize 2 bits"]),
        ("posterize 1 bit", ["posterize 1 bit"]),
        ("a bit brighter", ["brightness +10%"]),
        ("remove the background", ["remove background"]),
        ("make the background transparent", ["remove background"]),
        (
            "make it black and white and rotate 90 degrees",
            ["grayscale", "rotate 90°"],
        ),
        (
            "sepia, then mirror; blur 2 and then scale 50%",
            ["sepia", "mirror", "blur radius 2", "scale 50%"],
        ),
    ],
)
def test_parse_vocabulary(text: str, labels: list[str]) -> None:
    assert [op.label for op in parse_instruction(text)] == labels


def test_operation_is_frozen_and_carries_params() -> None:
    (op,) = parse_instruction("rotate 30 clockwise")
    assert op == Operation("rotate", {"angle": -30.0}, "rotate -30°")
    with pytest.raises(AttributeError):
        op.name = "blur"  # type: ignore[misc]


def test_unknown_instruction_lists_supported_operations() -> None:
    with pytest.raises(InvalidInput) as info:
        parse_instruction("make it look like van gogh")
    assert info.value.code == "unknown_instruction"
    message = str(info.value)
    assert '"make it look like van gogh"' in message
    assert "understood" not in message
    for name in ("grayscale", "rotate", "blur", "remove background", "resize"):
        assert name in message


def test_partly_understood_instruction_is_refused_and_quotes_the_rest() -> None:
    with pytest.raises(InvalidInput) as info:
        parse_instruction("grayscale and add a cat")
    assert info.value.code == "unknown_instruction"
    message = str(info.value)
    assert '"add a cat"' in message
    assert "understood: grayscale" in message


@pytest.mark.parametrize("text", ["please", "and, then ;", "make it"])
def test_instruction_with_no_operation_is_refused(text: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_instruction(text)
    assert info.value.code == "unknown_instruction"


@pytest.mark.parametrize(
    "text",
    ["rotate", "left", "30", "brightness 20%", "slightly grayscale", "blur slightly strongly"],
)
def test_vague_instructions_are_refused(text: str) -> None:
    with pytest.raises(InvalidInput, match="could not understand"):
        parse_instruction(text)


@pytest.mark.parametrize(
    "text", ["blur 500", "scale 5000%", "darken 150%", "posterize 9 bits", "resize 9000x9000"]
)
def test_out_of_range_values_are_refused(text: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_instruction(text)
    assert info.value.code == "invalid_instruction"


def test_too_many_operations_are_refused() -> None:
    with pytest.raises(InvalidInput) as info:
        parse_instruction(", ".join(["invert"] * (DEFAULT_LIMITS.max_operations + 1)))
    assert info.value.code == "too_many_operations"


# --- pixel operations --------------------------------------------------------------------------


def test_grayscale_sets_r_g_b_equal_everywhere() -> None:
    arr = pixels(apply_text(gradient(), "grayscale"))
    assert (arr[..., 0] == arr[..., 1]).all()
    assert (arr[..., 1] == arr[..., 2]).all()
    assert arr[..., 0].std() > 10


def test_grayscale_of_rgba_keeps_alpha() -> None:
    src = gradient(mode="RGBA")
    out = apply_text(src, "black and white")
    assert out.mode == "RGBA"
    arr = pixels(out)
    assert (arr[..., 0] == arr[..., 1]).all()
    assert (arr[..., 1] == arr[..., 2]).all()
    assert (arr[..., 3] == pixels(src)[..., 3]).all()


def test_rotate_90_is_counter_clockwise() -> None:
    out = apply_text(marked(), "rotate 90 degrees")
    assert out.size == (H, W)
    # Counter-clockwise: the top edge becomes the left edge, read bottom to top.
    assert out.getpixel((0, W - 1)) == (255, 0, 0)
    assert out.getpixel((0, 0)) == (0, 255, 0)


def test_rotate_right_is_clockwise() -> None:
    out = apply_text(marked(), "rotate right")
    assert out.size == (H, W)
    assert out.getpixel((H - 1, 0)) == (255, 0, 0)
    assert out.getpixel((H - 1, W - 1)) == (0, 255, 0)


def test_rotate_180_moves_corner_to_opposite_corner() -> None:
    out = apply_text(marked(), "rotate 180")
    assert out.size == (W, H)
    assert out.getpixel((W - 1, H - 1)) == (255, 0, 0)


def test_rotate_45_expands_the_canvas_and_fills_transparent_for_rgba() -> None:
    out = apply_text(gradient(mode="RGBA"), "rotate 45 degrees")
    assert out.mode == "RGBA"
    assert out.width > W
    assert out.height > H
    assert out.getpixel((0, 0))[3] == 0
    rgb = apply_text(gradient(), "rotate 45 degrees")
    assert rgb.mode == "RGB"
    assert rgb.getpixel((0, 0)) == (0, 0, 0)


def test_flip_moves_top_to_bottom() -> None:
    out = apply_text(marked(), "flip")
    assert out.getpixel((0, H - 1)) == (255, 0, 0)
    assert out.getpixel((0, 0)) == (0, 0, 0)


def test_mirror_moves_left_to_right() -> None:
    out = apply_text(marked(), "mirror")
    assert out.getpixel((W - 1, 0)) == (255, 0, 0)
    assert out.getpixel((0, 0)) == (0, 255, 0)


def test_invert() -> None:
    out = apply_text(Image.new("RGB", (4, 4), (10, 20, 30)), "invert")
    assert set(out.getdata()) == {(245, 235, 225)}


def test_invert_keeps_alpha() -> None:
    out = apply_text(Image.new("RGBA", (4, 4), (10, 20, 30, 77)), "negative")
    assert set(out.getdata()) == {(245, 235, 225, 77)}


def test_sepia_is_warm() -> None:
    arr = pixels(apply_text(gradient(), "sepia"))
    assert (arr[..., 0] >= arr[..., 1]).all()
    assert (arr[..., 1] >= arr[..., 2]).all()
    assert (arr[..., 0] > arr[..., 2]).mean() > 0.9


def roughness(img: Image.Image) -> float:
    """Mean difference between horizontal neighbours: high for detail, low for blur."""
    return float(np.abs(np.diff(pixels(img), axis=1)).mean())


def test_blur_reduces_variance() -> None:
    noise = np.random.default_rng(0).integers(0, 256, size=(H, W, 3), dtype=np.uint8)
    src = Image.fromarray(noise, "RGB")
    assert pixels(apply_text(src, "blur")).var() < pixels(src).var() / 4
    assert roughness(apply_text(src, "strong blur")) < roughness(apply_text(src, "blur 1"))


def test_sharpen_increases_local_contrast() -> None:
    soft = apply_text(gradient(), "blur 2")
    sharp = apply_text(soft, "sharpen")
    assert roughness(sharp) > roughness(soft)


def test_brightness_moves_the_mean() -> None:
    src = pixels(gradient()).mean()
    assert pixels(apply_text(gradient(), "make it brighter")).mean() > src
    assert pixels(apply_text(gradient(), "darken")).mean() < src


def test_contrast_and_saturation_move_the_spread() -> None:
    src = gradient()
    assert pixels(apply_text(src, "more contrast")).std() > pixels(src).std()
    assert pixels(apply_text(src, "less contrast")).std() < pixels(src).std()

    def chroma(img: Image.Image) -> float:
        arr = pixels(img)
        return float((arr.max(axis=2) - arr.min(axis=2)).mean())

    assert chroma(apply_text(src, "more saturated")) > chroma(src)
    assert chroma(apply_text(src, "desaturate")) < chroma(src)


def test_crop_to_square_is_a_centre_crop() -> None:
    src = gradient()
    out = apply_text(src, "crop to square")
    assert out.size == (H, H)
    offset = (W - H) // 2
    assert out.getpixel((0, 0)) == src.getpixel((offset, 0))
    assert out.getpixel((H - 1, H - 1)) == src.getpixel((offset + H - 1, H - 1))


def test_scale_and_resize() -> None:
    assert apply_text(gradient(), "scale 50%").size == (W // 2, H // 2)
    assert apply_text(gradient(), "scale to 200 %").size == (W * 2, H * 2)
    assert apply_text(gradient(), "resize to 64x48").size == (64, 48)
    assert apply_text(gradient(mode="RGBA"), "resize 50×70").size == (50, 70)  # noqa: RUF001


def test_scale_beyond_the_pixel_limit_is_refused() -> None:
    big = Image.new("RGB", (3000, 3000))
    with pytest.raises(InvalidInput) as info:
        apply_text(big, "scale 200%")
    assert info.value.code == "invalid_instruction"


def test_pixelate_makes_uniform_blocks() -> None:
    arr = pixels(apply_text(gradient(), "pixelate 8"))
    for top in range(0, H, 8):
        for left in range(0, W, 8):
            block = arr[top : top + 8, left : left + 8].reshape(-1, 3)
            assert (block == block[0]).all()
    assert len({tuple(px) for px in arr.reshape(-1, 3)}) > 1


def test_posterize_reduces_distinct_values() -> None:
    src = pixels(gradient())
    out = pixels(apply_text(gradient(), "posterize 2 bits"))
    assert len(np.unique(out)) < len(np.unique(src))
    assert set(np.unique(out)) <= {0, 64, 128, 192}
    assert len(np.unique(pixels(apply_text(gradient(), "posterize")))) <= 8


@pytest.mark.parametrize("size", [(W, H), (800, 600)])
def test_remove_background_clears_a_plain_border(size: tuple[int, int]) -> None:
    width, height = size
    out = apply_text(object_on_white(width, height), "remove the background")
    assert out.mode == "RGBA"
    alpha = pixels(out)[..., 3]
    border = np.concatenate([alpha[0], alpha[-1], alpha[:, 0], alpha[:, -1]])
    assert (border == 0).all()
    white = (pixels(object_on_white(width, height))[..., :3] == 255).all(axis=2)
    assert (alpha[white] == 0).all()
    assert alpha[height // 2, width // 2] == 255
    assert alpha[height // 2, width * 3 // 10 + 1] == 255
    # Colours are untouched; only the alpha channel changes.
    assert (pixels(out)[..., :3] == pixels(object_on_white(width, height))).all()


def test_remove_background_keeps_existing_transparency() -> None:
    src = object_on_white().convert("RGBA")
    src.putpixel((W // 2, H // 2), (200, 30, 40, 90))
    out = apply_text(src, "transparent background")
    assert out.getpixel((W // 2, H // 2))[3] == 90
    assert out.getpixel((0, 0))[3] == 0


@pytest.mark.parametrize(
    "text",
    [
        "grayscale",
        "sepia",
        "invert",
        "rotate 90",
        "rotate 33",
        "flip",
        "mirror",
        "blur",
        "sharpen",
        "brighten",
        "more contrast",
        "desaturate",
        "crop to square",
        "scale 50%",
        "pixelate",
        "posterize",
    ],
)
@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_mode_is_kept(text: str, mode: str) -> None:
    assert apply_text(gradient(mode=mode), text).mode == mode


def test_combination_applies_in_order() -> None:
    out = apply_text(marked(), "make it black and white and rotate 90 degrees")
    assert out.size == (H, W)
    arr = pixels(out)
    assert (arr[..., 0] == arr[..., 1]).all()
    assert (arr[..., 1] == arr[..., 2]).all()
    assert arr[W - 1, 0, 0] > 0  # the red corner, now gray, went where rotate 90 puts it
    assert apply_text(gradient(), "crop to square then resize to 64x48").size == (64, 48)
    assert apply_text(gradient(), "resize to 64x48 then crop to square").size == (48, 48)


# --- the editor --------------------------------------------------------------------------------


def test_progress_is_reported_once_per_operation() -> None:
    events: list[ProgressEvent] = []
    outcome = ClassicEditor().edit(
        request_for(gradient(), "grayscale, rotate 90 and blur 2"), events.append, never
    )
    assert [e.step for e in events] == [1, 2, 3]
    assert {e.total for e in events} == {3}
    assert [e.message for e in events] == ["grayscale", "rotate 90°", "blur radius 2"]
    assert all(e.elapsed_s >= 0 for e in events)
    meta = outcome.meta
    assert meta.steps == 3
    assert meta.operations == ["grayscale", "rotate 90°", "blur radius 2"]
    assert (meta.width, meta.height) == (H, W) == outcome.image.size
    assert meta.seed is None
    assert meta.random_weights is False
    assert meta.model == "classic_edit"


def test_cancellation_before_the_second_operation() -> None:
    answers = iter([False, True])
    events: list[ProgressEvent] = []
    with pytest.raises(Cancelled):
        ClassicEditor().edit(
            request_for(gradient(), "grayscale and rotate 90"), events.append, lambda: next(answers)
        )
    assert [e.step for e in events] == [1]


def test_width_and_height_options_resize_the_result_exactly() -> None:
    editor = ClassicEditor()
    outcome = editor.edit(
        request_for(gradient(), "invert", width=100, height=70), no_progress, never
    )
    assert outcome.image.size == (100, 70)
    assert outcome.meta.operations == ["invert", "resize to 100x70"]
    assert outcome.meta.steps == 2
    only_width = editor.edit(request_for(gradient(), "invert", width=80), no_progress, never)
    assert only_width.image.size == (80, 60)


def test_generation_options_are_ignored() -> None:
    editor = ClassicEditor()
    plain = editor.edit(request_for(gradient(), "sepia"), no_progress, never)
    tuned = editor.edit(
        request_for(gradient(), "sepia", steps=50, seed=7, true_cfg_scale=4.0, preset="quality"),
        no_progress,
        never,
    )
    assert plain.image.tobytes() == tuned.image.tobytes()
    assert tuned.meta.seed is None
    assert tuned.meta.steps == 1


def test_run_edit_returns_png_that_decodes() -> None:
    data, meta = run_edit(
        ClassicEditor(), RawEdit([png(gradient())], "rotate 90 and grayscale"), no_progress, never
    )
    assert data.startswith(b"\x89PNG")
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        assert img.size == (H, W)
        assert img.mode == "RGB"
    assert meta.format is OutputFormat.PNG
    assert meta.operations == ["rotate 90°", "grayscale"]
    assert "total_s" in meta.timings


def test_run_edit_jpeg_after_background_removal_is_flattened() -> None:
    raw = RawEdit(
        [png(object_on_white())], "remove background", options='{"output_format": "jpeg"}'
    )
    data, meta = run_edit(ClassicEditor(), raw, no_progress, never)
    assert meta.format is OutputFormat.JPEG
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "JPEG"
        assert img.mode == "RGB"


def test_run_edit_refuses_an_unknown_instruction() -> None:
    with pytest.raises(InvalidInput) as info:
        run_edit(ClassicEditor(), RawEdit([png(gradient())], "add a cat"), no_progress, never)
    assert info.value.code == "unknown_instruction"


def test_same_input_gives_identical_bytes() -> None:
    prompt = "remove the background, rotate 33 degrees, blur 1.5, sharpen and pixelate 3"
    first, _ = run_edit(
        ClassicEditor(), RawEdit([png(object_on_white(120, 90))], prompt), no_progress, never
    )
    second, _ = run_edit(
        ClassicEditor(), RawEdit([png(object_on_white(120, 90))], prompt), no_progress, never
    )
    assert first == second


def test_describe_and_limits() -> None:
    editor = ClassicEditor(name="mine", limits=RequestLimits(max_images=3, max_prompt_chars=50))
    assert editor.name == "mine"
    assert editor.limits.max_images == 1
    assert editor.limits.max_prompt_chars == 50
    facts = editor.describe()
    assert facts == {
        "variant": "classic",
        "random_weights": False,
        "max_images": 1,
        "vocabulary": list(VOCABULARY),
        "defaults": {},
    }
    assert any("remove background" in line for line in facts["vocabulary"])


def test_no_instruction_grows_an_image_beyond_the_upload_pixel_limit() -> None:
    editor = ClassicEditor(limits=RequestLimits(image=ImageLimits(max_pixels=2000)))
    assert editor.operation_limits.max_result_pixels == 2000
    with pytest.raises(InvalidInput) as info:
        run_edit(editor, RawEdit([png(gradient())], "scale 200%"), no_progress, never)
    assert info.value.code == "invalid_instruction"
    assert "2000 pixels in all" in str(info.value)
    data, _ = run_edit(editor, RawEdit([png(gradient())], "scale 120%"), no_progress, never)
    assert Image.open(io.BytesIO(data)).size == (48, 36)
