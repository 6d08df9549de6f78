"""Decoding uploads under hard limits, and encoding results without metadata."""

from __future__ import annotations

import io
from dataclasses import replace

from PIL import Image, ImageOps, UnidentifiedImageError

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
    "check_image",
    "decode_image",
    "encode_image",
    "inspect_image",
]

OUTPUT_MIME_TYPES = {
    OutputFormat.PNG: "image/png",
    OutputFormat.WEBP: "image/webp",
    OutputFormat.JPEG: "image/jpeg",
}


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
    if fmt != info.format:  # e.g. a JPEG with more pictures behind it, which Pillow calls MPO
        raise UnsupportedMediaType(f"format {fmt!r} is not accepted")
    check_pixel_count(width, height, limits)
    return replace(info, width=width, height=height)


def check_pixel_count(width: int, height: int, limits: ImageLimits) -> None:
    if width * height > limits.max_pixels:
        raise ImageTooLarge(
            f"the image is {width}x{height} = {width * height} pixels; "
            f"the limit is {limits.max_pixels} pixels, so scale it down first"
        )


def check_image(data: bytes, limits: ImageLimits) -> ImageInfo:
    """inspect_image plus a cheap integrity check, for callers that forward the bytes as they are.

    JPEG is decoded at 1/8 scale (every scan is still read, hence the scan limit first), PNG
    chunks and CRCs are verified without inflating the pixels, WebP is decoded. The model decodes
    fully anyway.
    """
    info = inspect_image(data, limits)
    try:
        with _open(data) as img:
            if info.format == "JPEG":
                img.draft("RGB", (max(1, img.width // 8), max(1, img.height // 8)))
                img.load()
            elif info.format == "PNG":
                img.verify()
            else:
                img.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise CorruptImage(
            f"the image could not be decoded (truncated or damaged): {exc}"
        ) from None
    return info


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


def _normalise_mode(img: Image.Image) -> Image.Image:
    has_alpha = img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info
    target = "RGBA" if has_alpha else "RGB"
    if img.mode == target:
        return img.copy()
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
