"""Decoding uploads under hard limits, and encoding results without metadata."""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from qie_engine import limits
from qie_engine.contract import OutputFormat
from qie_engine.errors import CorruptImage, ImageTooLarge, InvalidInput, UnsupportedMediaType

# Pillow opens only these; every other format (TIFF, PSD, EPS, ICO, SVG...) is never parsed.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP")
MIME_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
OUTPUT_MIME_TYPES = {
    OutputFormat.PNG: "image/png",
    OutputFormat.WEBP: "image/webp",
    OutputFormat.JPEG: "image/jpeg",
}


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = limits.MAX_IMAGE_BYTES
    max_pixels: int = limits.MAX_PIXELS


@dataclass(frozen=True)
class ImageInfo:
    """What the header says, read without decoding the pixels."""

    format: str
    width: int
    height: int

    @property
    def mime_type(self) -> str:
        return MIME_TYPES[self.format]


def _open(data: bytes) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError:
        # Pillow's own bomb guard fires above ~179 MP, before our MAX_PIXELS check can.
        raise ImageTooLarge(
            "the image header claims far more pixels than allowed; scale it down first"
        ) from None
    except UnidentifiedImageError:
        raise UnsupportedMediaType(
            "the file is not a JPEG, PNG or WebP image; send one of those formats"
        ) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise CorruptImage(f"the image header could not be read: {exc}") from None


def inspect_image(data: bytes, limits: ImageLimits) -> ImageInfo:
    """Check bytes, type and pixel count from the header alone; raise an InvalidInput subclass."""
    if not data:
        raise InvalidInput("the image file is empty", code="empty_file")
    if len(data) > limits.max_bytes:
        raise ImageTooLarge(
            f"the image is {len(data)} bytes; the limit is {limits.max_bytes} bytes",
            code="payload_too_large",
        )
    with _open(data) as img:
        width, height = img.size
        fmt = img.format or ""
    if fmt not in ALLOWED_FORMATS:  # pragma: no cover - formats= guarantees it
        raise UnsupportedMediaType(f"format {fmt!r} is not accepted")
    if width * height > limits.max_pixels:
        raise ImageTooLarge(
            f"the image is {width}x{height} = {width * height} pixels; "
            f"the limit is {limits.max_pixels} pixels, so scale it down first"
        )
    return ImageInfo(format=fmt, width=width, height=height)


def check_image(data: bytes, limits: ImageLimits) -> ImageInfo:
    """inspect_image plus a cheap integrity check, for callers that forward the bytes as they are.

    JPEG is decoded at 1/8 scale (every entropy-coded byte is still read), PNG chunks and CRCs are
    verified without inflating the pixels, WebP is decoded. The model decodes fully anyway.
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
    return normalised, ImageInfo(
        format=info.format, width=normalised.width, height=normalised.height
    )


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
