"""Decoding uploads under hard limits, and encoding results with no metadata."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image, ImageFile, TiffImagePlugin, WebPImagePlugin

from qie_engine.contract import OutputFormat
from qie_engine.errors import (
    CorruptImage,
    ImageTooComplex,
    ImageTooLarge,
    InvalidInput,
    UnsupportedMediaType,
)
from qie_engine.image_codec import (
    ImageInfo,
    ImageLimits,
    check_cost_bytes,
    check_image,
    decode_cost_bytes,
    decode_image,
    encode_image,
    inspect_image,
    upright_size,
)
from tests import images
from tests.engine.recorders import spy

LIMITS = ImageLimits()
MIB = 1024 * 1024
# Every way an upload is read: the header alone, the gateway's check, the model's decode.
READERS: list[Callable[[bytes, ImageLimits], object]] = [inspect_image, check_image, decode_image]


def count_pixel_decodes(monkeypatch: pytest.MonkeyPatch) -> Callable[[], int]:
    """Spy on Pillow's pixel loads: ImageFile.load (JPEG, PNG) and WebP's, which decodes first."""
    loads = spy(monkeypatch, ImageFile.ImageFile, "load")
    webp_loads = spy(monkeypatch, WebPImagePlugin.WebPImageFile, "load")
    return lambda: loads.count + webp_loads.count


def assert_refused_unread(
    monkeypatch: pytest.MonkeyPatch, data: bytes, limits: ImageLimits, error: type[InvalidInput]
) -> list[InvalidInput]:
    """Every reader refuses data with `error`, and no pixel is decoded on the way."""
    decodes = count_pixel_decodes(monkeypatch)
    refusals = []
    for read in READERS:
        with pytest.raises(error) as info:
            read(data, limits)
        assert info.value.code == error.code
        refusals.append(info.value)
    assert decodes() == 0
    return refusals


def assert_accepted(data: bytes, limits: ImageLimits) -> ImageInfo:
    """Every reader accepts data, and agrees on what it is."""
    header = inspect_image(data, limits)
    assert check_image(data, limits) == header
    img, decoded = decode_image(data, limits)
    assert img.mode in ("RGB", "RGBA")
    assert decoded.format == header.format
    return header


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
    [images.truncated_jpeg(), images.truncated_png(), images.truncated_webp()],
    ids=["jpeg", "png", "webp"],
)
def test_truncated_image_is_corrupt_found_from_its_structure_not_half_decoded(
    monkeypatch: pytest.MonkeyPatch, data: bytes
) -> None:
    # Its header is intact, but the chunk or scan it was cut in runs past the end of the file.
    refusals = assert_refused_unread(monkeypatch, data, LIMITS, CorruptImage)
    assert "truncated" in str(refusals[0])


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


# --- small files that decode big: decided from the container, before any pixel ----------------


@pytest.mark.parametrize(
    "data",
    [
        images.png_header_claiming(5_000, 5_000),
        images.jpeg_header_claiming(5_000, 5_000),
        images.webp_header_claiming(5_000, 5_000),
    ],
    ids=["png", "jpeg", "webp"],
)
def test_a_huge_canvas_in_a_tiny_file_is_refused_before_pillow_opens_it(
    monkeypatch: pytest.MonkeyPatch, data: bytes
) -> None:
    assert len(data) < 1000
    opens = spy(monkeypatch, Image, "open")
    assert_refused_unread(monkeypatch, data, LIMITS, ImageTooLarge)
    assert opens.count == 0  # libwebp allocates its canvas when Pillow opens a WebP


def test_a_jpeg_scan_bomb_is_refused_from_its_markers(monkeypatch: pytest.MonkeyPatch) -> None:
    bomb = images.jpeg_with_scans(2_000)
    refusals = assert_refused_unread(monkeypatch, bomb, LIMITS, ImageTooComplex)
    assert all("baseline" in str(refusal) for refusal in refusals)  # what to do about it


def test_the_scan_limit_is_exact() -> None:
    data = images.jpeg_with_scans(12)
    assert_accepted(data, ImageLimits(max_jpeg_scans=12))
    with pytest.raises(ImageTooComplex) as info:
        check_image(data, ImageLimits(max_jpeg_scans=11))
    assert info.value.code == "image_too_complex"
    assert "11 scans" in str(info.value)


def test_a_scan_marker_inside_a_metadata_segment_is_not_a_scan() -> None:
    data = images.jpeg_with_segment(0xE1, b"Exif\x00\x00" + b"\xff\xda\x00\x08" * 500)
    assert_accepted(data, ImageLimits(max_jpeg_scans=1))


def test_restart_markers_and_stuffed_bytes_inside_a_scan_are_not_markers() -> None:
    data = images.encode(images.noise(64, 256), "JPEG", quality=95, restart_marker_rows=1)
    assert b"\xff\xd3" in data  # restart markers
    assert b"\xff\x00" in data  # stuffed 0xFF bytes
    info = assert_accepted(data, ImageLimits(max_jpeg_scans=1))
    assert info.coefficient_bytes == 0  # one scan: decoded row by row


@pytest.mark.parametrize(
    "data",
    [images.jpeg_bytes(), images.progressive_jpeg(), images.jpeg_with_scans(18)],
    ids=["baseline", "progressive", "18-scans-like-libjpeg-cmyk"],
)
def test_real_encoders_jpegs_are_far_under_the_scan_limit(data: bytes) -> None:
    assert_accepted(data, LIMITS)


def test_a_png_metadata_chunk_over_the_limit_is_refused_without_inflating_the_pixels(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for data in (
        images.png_with_icc_chunk(3 * MIB),
        images.png_with_exif_chunk(3 * MIB),
        images.png_with_chunks((b"tEXt", b"Comment\x00" + b"x" * (2 * MIB))),
        images.png_with_chunks((b"prVt", b"\x00" * (2 * MIB))),  # an unknown ancillary chunk
    ):
        refusals = assert_refused_unread(monkeypatch, data, LIMITS, ImageTooComplex)
        assert "metadata" in str(refusals[0])


def test_a_ztxt_bomb_counts_inflated_and_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    bomb = images.png_with_ztxt_bomb(64 * MIB)
    assert len(bomb) < 100_000
    assert_refused_unread(monkeypatch, bomb, LIMITS, ImageTooComplex)


@pytest.mark.parametrize(
    "data",
    [
        images.png_with_exif_chunk(1000),
        images.png_with_ztxt_bomb(1000),
        images.webp_with_metadata(exif=images.TIFF_HEADER + b"\x00" * 992),
        images.webp_with_metadata(icc_profile=b"\x00" * 600, xmp=b"<x/>" * 100),
        images.jpeg_with_segment(0xE2, b"\x00" * 1000),
    ],
    ids=["png-exif", "png-ztxt-inflated", "webp-exif", "webp-icc-and-xmp", "jpeg-app2"],
)
def test_the_metadata_limit_is_exact(data: bytes) -> None:
    total = inspect_image(data, LIMITS).metadata_bytes
    assert total >= 1000
    assert_accepted(data, ImageLimits(max_metadata_bytes=total))
    with pytest.raises(ImageTooComplex) as info:
        check_image(data, ImageLimits(max_metadata_bytes=total - 1))
    assert info.value.code == "image_too_complex"


def test_a_webp_with_a_huge_exif_chunk_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    data = images.webp_with_metadata(exif=b"\x00" * (2 * MIB))
    assert_refused_unread(monkeypatch, data, LIMITS, ImageTooComplex)


def test_a_jpeg_with_a_huge_icc_profile_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # Pillow splits the profile over APP2 segments of 64 KiB and joins them again on reading.
    data = images.jpeg_bytes(icc_profile=images.incompressible(2 * MIB))
    assert_refused_unread(monkeypatch, data, LIMITS, ImageTooComplex)


@pytest.mark.parametrize(
    "data",
    [images.apng_declaring(1_000_000), images.animated_webp(5_000)],
    ids=["apng-acTL", "webp-anmf"],
)
def test_an_animation_with_too_many_frames_is_refused(
    monkeypatch: pytest.MonkeyPatch, data: bytes
) -> None:
    refusals = assert_refused_unread(monkeypatch, data, LIMITS, ImageTooComplex)
    assert "first frame" in str(refusals[0])


@pytest.mark.parametrize("make", [images.apng, images.animated_webp], ids=["apng", "webp"])
def test_the_frame_limit_is_exact(make: Callable[[int], bytes]) -> None:
    data = make(3)
    assert assert_accepted(data, ImageLimits(max_frames=3)).frames == 3
    with pytest.raises(ImageTooComplex) as info:
        check_image(data, ImageLimits(max_frames=2))
    assert info.value.code == "image_too_complex"


@pytest.mark.parametrize(
    "data",
    [
        images.png_with_chunks(*[(b"prIv", b"")] * 20_000),
        images.jpeg_with_empty_comments(20_000),
    ],
    ids=["png-empty-chunks", "jpeg-empty-comments"],
)
def test_a_file_of_countless_empty_chunks_is_refused(
    monkeypatch: pytest.MonkeyPatch, data: bytes
) -> None:
    assert_refused_unread(monkeypatch, data, LIMITS, ImageTooComplex)


def test_a_webp_whose_chunk_sizes_do_not_fit_the_data_is_corrupt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = images.lossy_webp()
    riff_too_long = data[:4] + (len(data) - 8 + 2).to_bytes(4, "little") + data[8:]
    chunk_too_long = data[:16] + (len(data)).to_bytes(4, "little") + data[20:]
    for damaged in (riff_too_long, chunk_too_long):
        assert_refused_unread(monkeypatch, damaged, LIMITS, CorruptImage)


@pytest.mark.parametrize(
    "data",
    [
        images.jpeg_bytes(),
        images.progressive_jpeg(),
        images.exif_orientation_6(),
        images.with_exif_and_icc(fmt="JPEG"),
        images.with_exif_and_icc(fmt="PNG"),
        images.webp_bytes(),
        images.lossy_webp(),
        images.webp_with_alpha(),
        images.palette_png_with_transparency(),
    ],
    ids=[
        "baseline-jpeg",
        "progressive-jpeg",
        "exif-rotated-jpeg",
        "jpeg-with-icc",
        "png-with-icc",
        "lossless-webp",
        "lossy-webp",
        "webp-with-alpha",
        "palette-png",
    ],
)
def test_ordinary_photos_pass_every_check(data: bytes) -> None:
    assert_accepted(data, LIMITS)


def test_a_tiny_webp_of_a_huge_canvas_is_checked_without_decoding_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = images.flat_webp(4096, 4096)
    assert len(data) < 1000
    decodes = count_pixel_decodes(monkeypatch)
    info = check_image(data, LIMITS)
    assert (info.format, info.width, info.height) == ("WEBP", 4096, 4096)
    assert decodes() == 0
    # The check costs a few MiB; a decode holds four 64 MiB canvases (libwebp's two, Pillow's
    # copy of the frame and the image), which the memory budget must see before it starts.
    assert check_cost_bytes(info) < 16 * MIB
    assert decode_cost_bytes(info) >= 4 * 64 * MIB


def test_a_jpeg_of_several_scans_reports_the_coefficients_a_decoder_holds() -> None:
    # 4:2:0 at 64 x 48: 4 x 3 MCUs of 16 x 16 pixels, each 4 luma and 2 chroma blocks of 128 B.
    progressive = inspect_image(images.progressive_jpeg(64, 48, subsampling=2), LIMITS)
    assert progressive.coefficient_bytes == 4 * 3 * 6 * 128
    baseline = inspect_image(images.jpeg_bytes(64, 48, subsampling=2), LIMITS)
    assert baseline.coefficient_bytes == 0
    assert check_cost_bytes(progressive) > check_cost_bytes(baseline)


@pytest.mark.parametrize(
    "data",
    [images.jpeg_bytes(), images.progressive_jpeg(), images.png_bytes(), images.webp_bytes()],
    ids=["jpeg", "progressive-jpeg", "png", "webp"],
)
def test_a_decode_is_budgeted_at_least_what_the_check_is(data: bytes) -> None:
    info = check_image(data, LIMITS)
    assert 0 < check_cost_bytes(info) <= decode_cost_bytes(info)
    # At least the two 4-byte-a-pixel images decode_image holds at its peak.
    assert decode_cost_bytes(info) > 2 * 4 * info.width * info.height


def test_the_decode_budget_grows_with_the_pixels() -> None:
    small = ImageInfo("PNG", 1024, 1024)
    large = ImageInfo("PNG", 4096, 4096)
    assert decode_cost_bytes(large) - decode_cost_bytes(small) >= 8 * (4096**2 - 1024**2)


def test_a_phone_jpeg_with_more_pictures_behind_it_is_its_first_picture() -> None:
    """The multi-picture format (MPF) that phones write: Pillow calls it MPO; it is a JPEG."""
    data = images.phone_mpo(64, 48)
    assert check_image(data, ImageLimits()).format == "JPEG"
    decoded, info = decode_image(data, ImageLimits())
    assert (info.format, decoded.size) == ("JPEG", (64, 48))
    _, green, blue = decoded.convert("RGB").getpixel((2, 2))
    assert blue > green  # the photo (blue in that corner), not the green picture behind it


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_upright_size_reads_the_exif_orientation_from_the_header_as_the_decode_applies_it(
    fmt: str,
) -> None:
    rotated = images.exif_orientation_6(64, 48, fmt)
    info = inspect_image(rotated, LIMITS)
    assert upright_size(rotated, info) == (48, 64) == decode_image(rotated, LIMITS)[0].size
    plain = images.image_bytes(64, 48, fmt)
    assert upright_size(plain, inspect_image(plain, LIMITS)) == (64, 48)
