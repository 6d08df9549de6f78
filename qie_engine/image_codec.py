"""Decoding uploads under hard limits, and encoding results without metadata."""

from __future__ import annotations

import io
from dataclasses import replace

from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from qie_engine.contract import OutputFormat
from qie_engine.errors import CorruptImage, ImageTooLarge, InvalidInput, UnsupportedMediaType
from qie_engine.image_header import (
    ALLOWED_FORMATS,
    MIME_TYPES,
    NOT_AN_IMAGE,
    ImageInfo,
    ImageLimits,
    read_header,
)

__all__ = [
    "ALLOWED_FORMATS",
    "MIME_TYPES",
    "OUTPUT_MIME_TYPES",
    "ImageInfo",
    "ImageLimits",
    "check_cost_bytes",
    "check_image",
    "decode_cost_bytes",
    "decode_image",
    "encode_image",
    "inspect_image",
    "upright_size",
    "verify_image",
]

OUTPUT_MIME_TYPES = {
    OutputFormat.PNG: "image/png",
    OutputFormat.WEBP: "image/webp",
    OutputFormat.JPEG: "image/jpeg",
}


# Phones write a JPEG with more pictures behind its end (depth maps, previews: the multi-picture
# format, MPF), which Pillow opens as MPO. It is a JPEG: its first picture is the photo.
PILLOW_FORMATS = {"MPO": "JPEG"}


def _open(data: bytes) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError:
        # Pillow's own bomb guard (~179 MP) fires only where max_pixels is set above it.
        raise ImageTooLarge(
            "the image header claims far more pixels than allowed; scale it down first"
        ) from None
    except UnidentifiedImageError:
        raise UnsupportedMediaType(NOT_AN_IMAGE) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise CorruptImage(f"the image header could not be read: {exc}") from None


def inspect_image(data: bytes, limits: ImageLimits) -> ImageInfo:
    """Check bytes, type, pixels, scans, frames, chunks and metadata before any pixel is decoded.

    The container is walked first (image_header), so Pillow never opens a file over a limit;
    Pillow's own header parse then confirms the format and size. Raises an InvalidInput subclass.
    """
    if not data:
        raise InvalidInput("the image file is empty", code="empty_file")
    if len(data) > limits.max_bytes:
        raise ImageTooLarge(
            f"the image is {len(data)} bytes; the limit is {limits.max_bytes} bytes",
            code="payload_too_large",
        )
    info = read_header(data, limits)
    check_pixel_count(info.width, info.height, limits)
    with _open(data) as img:
        width, height = img.size
        fmt = img.format or ""
    if PILLOW_FORMATS.get(fmt, fmt) != info.format:
        raise UnsupportedMediaType(f"format {fmt!r} is not accepted")
    check_pixel_count(width, height, limits)
    return replace(info, width=width, height=height)


# EXIF orientations that turn the picture a quarter: its upright size is its header's, swapped.
_QUARTER_TURNS = {5, 6, 7, 8}


def upright_size(data: bytes, info: ImageInfo) -> tuple[int, int]:
    """Width and height after EXIF orientation, as decode_image will give them, from the header
    alone. A PNG's eXIf chunk is looked for only before its pixels: Pillow would decode the whole
    image to find one after them (the decode still applies it)."""
    with _open(data) as img:
        has_exif = info.format != "PNG" or "exif" in img.info
        orientation = img.getexif().get(ExifTags.Base.Orientation, 1) if has_exif else 1
    if orientation in _QUARTER_TURNS:
        return info.height, info.width
    return info.width, info.height


def check_pixel_count(width: int, height: int, limits: ImageLimits) -> None:
    if width * height > limits.max_pixels:
        raise ImageTooLarge(
            f"the image is {width}x{height} = {width * height} pixels; "
            f"the limit is {limits.max_pixels} pixels, so scale it down first"
        )


def check_image(data: bytes, limits: ImageLimits) -> ImageInfo:
    """inspect_image plus a cheap integrity check, for callers that forward the bytes as they are.

    JPEG is decoded at 1/8 scale (every scan is still read, hence the scan limit first), PNG
    chunks and CRCs are verified without inflating the pixels. WebP is not decoded: Pillow cannot
    decode it at reduced scale, and a full decode holds about 16 bytes a pixel (264 MiB for
    4096 x 4096) for pixels the model decodes again. Its check is the RIFF walk, in which every
    chunk size must fit the data, and libwebp's demuxer, which Pillow runs at open and which
    validates every chunk and the bitstream header; damage inside the compressed pixels is found
    by the model's decode (corrupt_image). check_cost_bytes(info) is what this takes at its peak.
    """
    info = inspect_image(data, limits)
    verify_image(data, info)
    return info


def verify_image(data: bytes, info: ImageInfo) -> None:
    """The integrity step of check_image, for bytes that inspect_image already read as `info`."""
    if info.format == "WEBP":
        return
    try:
        with _open(data) as img:
            if info.format == "JPEG":
                img.draft("RGB", (max(1, img.width // 8), max(1, img.height // 8)))
                img.load()
            else:
                img.verify()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise CorruptImage(
            f"the image could not be decoded (truncated or damaged): {exc}"
        ) from None


def decode_image(data: bytes, limits: ImageLimits) -> tuple[Image.Image, ImageInfo]:
    """Decode an upload fully: upright (EXIF applied), RGB or RGBA, with no metadata kept."""
    info = inspect_image(data, limits)
    try:
        with _open(data) as img:
            img.load()
            upright = ImageOps.exif_transpose(img)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise CorruptImage(
            f"the image could not be decoded (truncated or damaged): {exc}"
        ) from None
    normalised = _normalise_mode(upright)
    normalised.info = {}
    return normalised, replace(info, width=normalised.width, height=normalised.height)


# Peak memory, calibrated with Pillow 13 on 4096 x 4096 images: peak RSS of a fresh process
# running check_image or decode_image, less its RSS before. Pillow holds RGB, RGBA and CMYK at
# 4 bytes a pixel. decode_image's peak is two such images (the decoded one and its upright copy,
# 128 MiB measured for JPEG and PNG); a WebP decode holds four (libwebp's two canvases, Pillow's
# copy of the frame and the image: 262 MiB measured). A JPEG of several scans adds its
# coefficients while the first image is written (4:4:4 progressive: 161 MiB measured).
# Pillow's WebP open copies the file twice (70 MiB traced for a 34 MiB file), PNG's verify and
# decode read one chunk at a time (a chunk may be the whole file), JPEG's a block at a time.
_IMAGE_BYTES_PER_PIXEL = 4
_IMAGES_AT_PEAK = {"JPEG": 2, "PNG": 2, "WEBP": 4}
_FILE_COPIES = {"JPEG": 0, "PNG": 1, "WEBP": 2}
# libjpeg's, libwebp's and zlib's working memory and Pillow's objects: under 6 MiB measured.
_FIXED_COST = 8 * 1024 * 1024


def check_cost_bytes(info: ImageInfo) -> int:
    """Peak memory check_image takes for this image, rounded up, for a caller's memory budget.

    A JPEG's 1/8-scale image, and its coefficients if it has several scans (50 MiB measured for
    a 4096 x 4096 progressive photo, 2 MiB for a baseline one); nothing of a PNG's pixels (verify
    reads chunk by chunk) or of a WebP's (not decoded: 5 MiB measured at 4096 x 4096, where a
    decode took 264 MiB). Animations cost what their first frame does.
    """
    pixels = 0
    if info.format == "JPEG":
        pixels = -(-info.width // 8) * -(-info.height // 8) * _IMAGE_BYTES_PER_PIXEL
    return _with_margin(pixels + info.coefficient_bytes) + _common_cost(info)


def decode_cost_bytes(info: ImageInfo) -> int:
    """Peak memory decode_image takes for this image, rounded up; never less than check_image's.

    At 4096 x 4096: 177 MiB for a baseline JPEG (129 measured), 222 MiB for a 4:4:4 progressive
    one (161), 328 MiB for a small WebP (262 measured).
    """
    image = info.width * info.height * _IMAGE_BYTES_PER_PIXEL
    pixels = max(_IMAGES_AT_PEAK[info.format] * image, image + info.coefficient_bytes)
    return _with_margin(pixels) + _common_cost(info)


def _with_margin(measured: int) -> int:
    return measured * 5 // 4  # a quarter above what was measured


def _common_cost(info: ImageInfo) -> int:
    # Pillow's copies of the file, and the metadata it holds (inflated text, ICC, EXIF).
    return _FIXED_COST + _FILE_COPIES[info.format] * info.file_bytes + info.metadata_bytes


def _normalise_mode(img: Image.Image) -> Image.Image:
    """RGB or RGBA; an image already in its mode is returned as it is (exif_transpose copied it)."""
    has_alpha = img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info
    target = "RGBA" if has_alpha else "RGB"
    if img.mode == target:
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        img = img.point(lambda v: v / 256).convert("L")
    return img.convert(target)


def encode_image(img: Image.Image, fmt: OutputFormat) -> bytes:
    """Encode from pixels only: no EXIF, ICC or text chunks travel to the output."""
    if img.info:
        # Pillow's writers fall back to img.info (icc_profile, exif...): send pixels only.
        img = img.copy()
        img.info = {}
    buf = io.BytesIO()
    if fmt is OutputFormat.JPEG:
        if img.mode != "RGB":
            img = _flatten_on_white(img)
        img.save(buf, format="JPEG", quality=92)
    elif fmt is OutputFormat.WEBP:
        img.save(buf, format="WEBP", quality=90)
    else:
        img.save(buf, format="PNG", compress_level=4)
    return buf.getvalue()


def _flatten_on_white(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    background = Image.new("RGB", rgba.size, (255, 255, 255))
    background.paste(rgba, mask=rgba.getchannel("A"))
    return background
