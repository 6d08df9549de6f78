"""Raw tensor values into a checked EditRequest: prompt, options and image-count guards."""

from __future__ import annotations

import json
from typing import Any

import pytest
from PIL import ImageFile, WebPImagePlugin

from qie_engine.contract import MAX_SEED, OutputFormat, Preset
from qie_engine.edit_request import RawEdit, RequestLimits, parse_request
from qie_engine.errors import CorruptImage, ImageTooComplex, ImageTooLarge, InvalidInput
from qie_engine.image_codec import ImageLimits
from tests import images
from tests.engine.recorders import spy

LIMITS = RequestLimits(max_prompt_chars=50, max_images=2)


def parse(
    prompt: bytes | str = "make it brighter",
    *,
    options: Any = None,
    negative: bytes | str | None = None,
    image_list: list[bytes] | None = None,
    limits: RequestLimits = LIMITS,
) -> Any:
    raw = options if options is None or isinstance(options, str | bytes) else json.dumps(options)
    image_bytes = image_list if image_list is not None else [images.png_bytes()]
    return parse_request(RawEdit(image_bytes, prompt, negative, raw), limits)


def test_valid_request_is_decoded_and_the_prompt_trimmed() -> None:
    request = parse(
        b"  make it brighter \n",
        options={"preset": "fast", "seed": 3, "output_format": "webp"},
        negative="blurry",
    )
    assert request.prompt == "make it brighter"
    assert request.negative_prompt == "blurry"
    assert request.options.preset is Preset.FAST
    assert request.options.seed == 3
    assert request.options.output_format is OutputFormat.WEBP
    assert [img.size for img in request.images] == [(64, 48)]
    assert request.image_infos[0].format == "PNG"


def test_no_options_mean_the_defaults() -> None:
    for raw in (None, b"", ""):
        options = parse(options=raw).options
        assert (options.steps, options.seed, options.preset) == (None, None, None)
        assert options.output_format is OutputFormat.PNG


# --- prompt ------------------------------------------------------------------------------------


@pytest.mark.parametrize("prompt", ["", "   \t\n", b""], ids=["empty", "whitespace", "empty-bytes"])
def test_empty_or_whitespace_prompt_is_refused(prompt: str | bytes) -> None:
    with pytest.raises(InvalidInput, match="prompt is empty") as info:
        parse(prompt)
    assert info.value.code == "invalid_input"


def test_prompt_over_the_cap_is_refused_and_at_the_cap_accepted() -> None:
    assert parse("x" * 50).prompt == "x" * 50
    with pytest.raises(InvalidInput) as info:
        parse("x" * 51)
    assert info.value.code == "prompt_too_long"
    assert "51" in str(info.value)
    assert "50" in str(info.value)


def test_negative_prompt_over_the_cap_is_refused_by_name() -> None:
    with pytest.raises(InvalidInput, match="negative_prompt") as info:
        parse(negative="n" * 51)
    assert info.value.code == "prompt_too_long"


def test_blank_negative_prompt_counts_as_none() -> None:
    assert parse(negative="   ").negative_prompt is None


def test_prompt_that_is_not_utf8_is_refused() -> None:
    with pytest.raises(InvalidInput, match="UTF-8"):
        parse(b"\xff\xfe make it brighter")


# --- options -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"steps": 0}, "steps"),
        ({"steps": -1}, "steps"),
        ({"steps": 10_000}, "steps"),
        ({"steps": 1.5}, "steps"),
        ({"steps": "8"}, "steps"),
        ({"steps": True}, "steps"),
        ({"true_cfg_scale": -1}, "true_cfg_scale"),
        ({"seed": -1}, "seed"),
        ({"seed": MAX_SEED + 1}, "seed"),
        ({"output_format": "gif"}, "output_format"),
        ({"preset": "turbo"}, "preset"),
        ({"width": 32}, "width"),
        ({"height": 4096}, "height"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_invalid_option_is_refused_naming_the_field(options: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse(options=options)
    assert info.value.code == "invalid_options"
    assert f"{field}:" in str(info.value)


@pytest.mark.parametrize("raw", ["{not json", "[1, 2]", '"steps"', b"\xff\xfe"])
def test_options_that_are_not_a_json_object_are_refused(raw: str | bytes) -> None:
    with pytest.raises(InvalidInput) as info:
        parse(options=raw)
    assert info.value.code == "invalid_options"


@pytest.mark.parametrize(
    "options",
    [
        {"steps": 1},
        {"steps": 100},
        {"seed": 0},
        {"seed": MAX_SEED},
        {"true_cfg_scale": 1},
        {"width": 64, "height": 2048},
    ],
)
def test_options_at_their_bounds_are_accepted(options: dict[str, Any]) -> None:
    parsed = parse(options=options).options
    for key, value in options.items():
        assert getattr(parsed, key) == value


# --- image count and order of checks -----------------------------------------------------------


@pytest.mark.parametrize("count", [0, 3])
def test_image_count_outside_the_model_range_is_refused(count: int) -> None:
    with pytest.raises(InvalidInput) as info:
        parse(image_list=[images.png_bytes()] * count)
    assert info.value.code == "image_count"


def test_cheap_checks_run_before_any_image_is_opened() -> None:
    flood = images.png_header_claiming(5_000, 5_000)
    with pytest.raises(InvalidInput) as info:
        parse("", image_list=[flood])
    assert info.value.code == "invalid_input"
    with pytest.raises(InvalidInput) as info:
        parse(options={"steps": 0}, image_list=[flood])
    assert info.value.code == "invalid_options"
    with pytest.raises(ImageTooLarge) as info:
        parse(image_list=[flood])
    assert info.value.code == "image_too_large"


def test_every_image_is_checked() -> None:
    with pytest.raises(InvalidInput) as info:
        parse(image_list=[images.png_bytes(), images.tiff_bytes()])
    assert info.value.code == "unsupported_media_type"


# --- the model keeps its own image checks --------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (images.jpeg_with_scans(2_000), ImageTooComplex),
        (images.png_with_icc_chunk(3 * 1024 * 1024), ImageTooComplex),
        (images.png_with_ztxt_bomb(64 * 1024 * 1024), ImageTooComplex),
        (images.webp_with_metadata(exif=b"\x00" * (2 * 1024 * 1024)), ImageTooComplex),
        (images.apng_declaring(1_000_000), ImageTooComplex),
        (images.animated_webp(5_000), ImageTooComplex),
        (images.truncated_webp(), CorruptImage),
    ],
    ids=[
        "jpeg-scan-bomb",
        "png-huge-icc",
        "png-ztxt-bomb",
        "webp-huge-exif",
        "apng-many-frames",
        "webp-many-frames",
        "webp-truncated",
    ],
)
def test_the_model_refuses_small_files_that_decode_big_before_decoding(
    monkeypatch: pytest.MonkeyPatch, data: bytes, error: type[InvalidInput]
) -> None:
    # What reaches Triton without the gateway's check meets the same limits there.
    loads = spy(monkeypatch, ImageFile.ImageFile, "load")
    webp_loads = spy(monkeypatch, WebPImagePlugin.WebPImageFile, "load")
    with pytest.raises(error) as info:
        parse(image_list=[data])
    assert info.value.code == error.code
    assert loads.count + webp_loads.count == 0


def test_the_model_applies_the_configured_image_limits() -> None:
    data = images.jpeg_with_scans(12)
    strict = RequestLimits(image=ImageLimits(max_jpeg_scans=11))
    with pytest.raises(ImageTooComplex):
        parse(image_list=[data], limits=strict)
    assert parse(image_list=[data]).images[0].size == (256, 256)


def test_ordinary_progressive_and_animated_uploads_still_decode() -> None:
    request = parse(image_list=[images.progressive_jpeg(), images.apng(3)])
    assert [img.size for img in request.images] == [(64, 48), (16, 12)]
    assert [info.frames for info in request.image_infos] == [1, 3]
    assert request.image_infos[0].coefficient_bytes > 0
