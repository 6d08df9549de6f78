"""Decoding uploads under hard limits, and encoding results with no metadata."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageFile, TiffImagePlugin

from qie_engine.contract import OutputFormat
from qie_engine.errors import CorruptImage, ImageTooLarge, InvalidInput, UnsupportedMediaType
from qie_engine.image_codec import (
    ImageLimits,
    check_image,
    decode_image,
    encode_image,
    inspect_image,
)
from tests import images
from tests.engine.recorders import spy

LIMITS = ImageLimits()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_allowed_formats_decode_to_rgb_with_their_size(fmt: str) -> None:
    img, info = decode_image(images.image_bytes(64, 48, fmt), LIMITS)
    assert img.mode == "RGB"
    assert img.size == (64, 48)
    assert (info.format, info.width, info.height) == (fmt, 64, 48)
    assert info.mime_type == f"image/{fmt.lower()}"


# --- bytes -------------------------------------------------------------------------------------


def test_empty_file_is_refused() -> None:
    with pytest.raises(InvalidInput) as info:
        decode_image(b"", LIMITS)
    assert info.value.code == "empty_file"


def test_file_over_the_byte_cap_is_refused_before_it_is_parsed() -> None:
    data = images.png_bytes()
    assert decode_image(data, ImageLimits(max_bytes=len(data)))[0].size == (64, 48)
    with pytest.raises(ImageTooLarge) as info:
        decode_image(data, ImageLimits(max_bytes=len(data) - 1))
    assert info.value.code == "payload_too_large"
    # Garbage over the cap is refused for its size: the bytes are never looked at.
    with pytest.raises(ImageTooLarge):
        inspect_image(b"x" * 101, ImageLimits(max_bytes=100))


# --- pixels ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "height"),
    [(5_000, 5_000), (50_000, 50_000)],
    ids=["25-megapixels", "2.5-gigapixels"],
)
def test_pixel_flood_is_refused_from_the_header_without_decoding(
    monkeypatch: pytest.MonkeyPatch, width: int, height: int
) -> None:
    data = images.png_header_claiming(width, height)
    assert len(data) < 100
    loads = spy(monkeypatch, ImageFile.ImageFile, "load")
    with pytest.raises(ImageTooLarge) as info:
        decode_image(data, LIMITS)
    assert info.value.code == "image_too_large"
    assert loads.count == 0


def test_pixel_limit_boundary_is_exact() -> None:
    data = images.png_bytes(64, 48)
    img, _ = decode_image(data, ImageLimits(max_pixels=64 * 48))
    assert img.size == (64, 48)
    with pytest.raises(ImageTooLarge) as info:
        decode_image(data, ImageLimits(max_pixels=64 * 48 - 1))
    assert info.value.code == "image_too_large"


# --- formats -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        images.tiff_bytes(),
        images.ico_bytes(),
        images.gif_bytes(),
        b"this is a text file, not a photo\n" * 20,
        images.polyglot_gif_html(),
        images.polyglot_jpeg_html(),
    ],
    ids=["tiff", "ico", "gif", "text", "gif-html-polyglot", "jpeg-html-polyglot"],
)
def test_formats_outside_the_allowlist_are_unsupported(data: bytes) -> None:
    with pytest.raises(UnsupportedMediaType) as info:
        decode_image(data, LIMITS)
    assert info.value.code == "unsupported_media_type"


def test_pillow_never_parses_a_disallowed_format(monkeypatch: pytest.MonkeyPatch) -> None:
    tiff_opens = spy(monkeypatch, TiffImagePlugin.TiffImageFile, "_open")
    with pytest.raises(UnsupportedMediaType):
        inspect_image(images.tiff_bytes(), LIMITS)
    assert tiff_opens.count == 0


@pytest.mark.parametrize(
    "data",
    [images.truncated_jpeg(), images.truncated_png()],
    ids=["jpeg", "png"],
)
def test_truncated_image_is_corrupt_not_half_decoded(data: bytes) -> None:
    inspect_image(data, LIMITS)  # the header alone is intact
    with pytest.raises(CorruptImage) as info:
        decode_image(data, LIMITS)
    assert info.value.code == "corrupt_image"


@pytest.mark.parametrize("magic", [images.PNG_MAGIC, images.JPEG_MAGIC, images.WEBP_MAGIC])
@pytest.mark.parametrize("seed", range(5))
def test_random_bytes_after_a_valid_magic_number_are_refused(magic: bytes, seed: int) -> None:
    with pytest.raises(InvalidInput):
        decode_image(images.magic_then_garbage(magic, seed=seed), LIMITS)


# --- orientation and modes ---------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_exif_orientation_6_is_applied(fmt: str) -> None:
    img, info = decode_image(images.exif_orientation_6(64, 48, fmt), LIMITS)
    # Stored 64x48 with the mark top-left; shown upright it is 48x64, mark top-right.
    assert img.size == (48, 64)
    assert (info.width, info.height) == (48, 64)
    half = images.MARK // 2
    red = img.getpixel((48 - 1 - half, half))
    assert isinstance(red, tuple)
    assert red[0] > 200
    assert red[1] < 60
    assert max(img.getpixel((half, half))) < 60  # type: ignore[arg-type]
    assert max(img.getpixel((48 - 1 - half, 64 - 1 - half))) < 60  # type: ignore[arg-type]


def test_palette_png_with_transparency_becomes_rgba_keeping_it() -> None:
    img, _ = decode_image(images.palette_png_with_transparency(32, 24), LIMITS)
    assert img.mode == "RGBA"
    assert img.getpixel((0, 0)) == (255, 0, 0, 255)
    assert img.getpixel((31, 0))[3] == 0  # type: ignore[index]


def test_grayscale_becomes_rgb_with_equal_channels() -> None:
    img, _ = decode_image(images.grayscale_png(32, 24), LIMITS)
    assert img.mode == "RGB"
    arr = np.asarray(img)
    assert (arr[..., 0] == arr[..., 1]).all()
    assert (arr[..., 1] == arr[..., 2]).all()
    assert arr.std() > 10


def test_grayscale_with_alpha_becomes_rgba_keeping_the_alpha() -> None:
    source = images.decode(images.grayscale_alpha_png(32, 24))
    img, _ = decode_image(images.grayscale_alpha_png(32, 24), LIMITS)
    assert img.mode == "RGBA"
    assert np.array_equal(np.asarray(img)[..., 3], np.asarray(source.getchannel("A")))


def test_sixteen_bit_grayscale_is_scaled_to_eight_bits() -> None:
    ramp = (np.arange(32 * 24, dtype=np.uint16).reshape(24, 32) * 80).astype(np.uint16)
    img, _ = decode_image(images.encode(Image.fromarray(ramp), "PNG"), LIMITS)
    assert img.mode == "RGB"
    low, high = img.getextrema()[0]  # type: ignore[misc]
    assert low == 0
    assert high == 61_360 // 256


# --- metadata ----------------------------------------------------------------------------------


def test_decoded_image_carries_no_metadata() -> None:
    img, _ = decode_image(images.with_exif_and_icc(), LIMITS)
    assert img.info == {}
    assert dict(img.getexif()) == {}


def assert_no_metadata(data: bytes) -> None:
    out = Image.open(io.BytesIO(data))
    assert "exif" not in out.info
    assert "icc_profile" not in out.info
    assert dict(out.getexif()) == {}


@pytest.mark.parametrize("fmt", list(OutputFormat))
def test_encode_writes_pixels_only_even_from_an_image_with_metadata(fmt: OutputFormat) -> None:
    source = Image.open(io.BytesIO(images.with_exif_and_icc(fmt="PNG")))
    source.load()
    assert {"exif", "icc_profile"} <= set(source.info)  # the premise
    assert_no_metadata(encode_image(source, fmt))


@pytest.mark.parametrize("fmt", list(OutputFormat))
def test_encode_round_trips_the_pixels_and_format(fmt: OutputFormat) -> None:
    source = images.colourful(64, 48)
    out = images.decode(encode_image(source, fmt))
    assert out.format == fmt.value.upper()
    assert out.size == (64, 48)
    if fmt is OutputFormat.PNG:
        assert np.array_equal(np.asarray(out), np.asarray(source))


def test_jpeg_output_flattens_transparency_on_white() -> None:
    clear = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    out = images.decode(encode_image(clear, OutputFormat.JPEG))
    assert out.mode == "RGB"
    assert min(out.getpixel((8, 8))) > 250  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "data",
    [images.truncated_jpeg(), images.truncated_png(), images.magic_then_garbage(b"RIFF")],
    ids=["jpeg", "png", "webp"],
)
def test_the_gateways_cheap_check_still_catches_damaged_images(data: bytes) -> None:
    with pytest.raises((CorruptImage, UnsupportedMediaType)):
        check_image(data, ImageLimits())


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_the_cheap_check_accepts_good_images_and_reports_their_header(fmt: str) -> None:
    info = check_image(images.image_bytes(80, 60, fmt), ImageLimits())
    assert (info.format, info.width, info.height) == (fmt, 80, 60)


def test_the_cheap_check_never_inflates_png_pixels(monkeypatch: pytest.MonkeyPatch) -> None:
    loads = spy(monkeypatch, ImageFile.ImageFile, "load")
    check_image(images.png_bytes(), ImageLimits())
    assert loads.count == 0
