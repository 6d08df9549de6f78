"""Synthetic images for the tests: good uploads, hostile ones, and odd modes, all made in memory."""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import numpy as np
from PIL import Image, ImageCms

RED = (255, 0, 0)
MARK = 8  # side of the marked corner block, large enough to survive JPEG compression
POLYGLOT_PAYLOAD = b"<html><body><script>alert('polyglot')</script></body></html>"


def encode(img: Image.Image, fmt: str = "PNG", **save_args: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **save_args)
    return buf.getvalue()


def decode(data: bytes) -> Image.Image:
    """Open encoded bytes fully (any format Pillow knows), for checking outputs."""
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def colourful(width: int = 64, height: int = 48) -> Image.Image:
    """A deterministic RGB gradient in which R, G and B differ almost everywhere."""
    y, x = np.mgrid[0:height, 0:width]
    arr = np.stack(
        [(x * 255 // max(1, width - 1)), (y * 255 // max(1, height - 1)), 255 - (x * 3 + y) % 256],
        axis=2,
    )
    return Image.fromarray(arr.astype(np.uint8), "RGB")


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    """Random pixels: they compress badly, so a file of them is long enough to cut in half."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def png_bytes(width: int = 64, height: int = 48) -> bytes:
    return encode(colourful(width, height), "PNG")


def jpeg_bytes(width: int = 64, height: int = 48, **save_args: Any) -> bytes:
    return encode(colourful(width, height), "JPEG", quality=95, **save_args)


def webp_bytes(width: int = 64, height: int = 48) -> bytes:
    return encode(colourful(width, height), "WEBP", lossless=True)


def marked_corner(width: int = 64, height: int = 48) -> Image.Image:
    """Black, with a red MARK x MARK block in the top-left corner."""
    img = Image.new("RGB", (width, height), (0, 0, 0))
    img.paste(RED, (0, 0, MARK, MARK))
    return img


def exif_orientation_6(width: int = 64, height: int = 48, fmt: str = "JPEG") -> bytes:
    """A stored width x height image marked top-left, tagged EXIF Orientation 6 (rotate 90 CW).

    Shown upright it is height x width, and the mark is in the top-right corner.
    """
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    extra: dict[str, Any] = {"quality": 95} if fmt == "JPEG" else {}
    return encode(marked_corner(width, height), fmt, exif=exif.tobytes(), **extra)


def with_exif_and_icc(width: int = 64, height: int = 48, fmt: str = "JPEG") -> bytes:
    """An image carrying an EXIF block (camera make, GPS) and an sRGB ICC profile."""
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # Make
    exif[0x8825] = {1: "N", 2: (52.0, 31.0, 12.0)}  # GPS IFD
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return encode(colourful(width, height), fmt, exif=exif.tobytes(), icc_profile=icc)


def truncated(data: bytes) -> bytes:
    """The first half of a file, as an interrupted upload leaves it."""
    return data[: len(data) // 2]


def truncated_jpeg(width: int = 128, height: int = 96) -> bytes:
    return truncated(encode(noise(width, height), "JPEG", quality=95))


def truncated_png(width: int = 128, height: int = 96) -> bytes:
    return truncated(encode(noise(width, height), "PNG"))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_header_claiming(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG (valid CRCs) whose IHDR claims width x height RGB pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _png_chunk(b"IEND", b"")
    )


def pixel_flood_png(width: int = 50_000, height: int = 50_000) -> bytes:
    """The classic decompression bomb: 2.5 gigapixels claimed in a file of under 100 bytes."""
    return png_header_claiming(width, height)


def palette_png_with_transparency(width: int = 32, height: int = 24) -> bytes:
    """A "P" mode PNG whose palette entry 0 is fully transparent (a tRNS chunk)."""
    img = Image.new("P", (width, height), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0, 0, 0] * 254)
    img.paste(1, (0, 0, width // 2, height))
    return encode(img, "PNG", transparency=0)


def grayscale_png(width: int = 32, height: int = 24) -> bytes:
    return encode(colourful(width, height).convert("L"), "PNG")


def grayscale_alpha_png(width: int = 32, height: int = 24) -> bytes:
    img = colourful(width, height).convert("LA")
    img.putalpha(Image.linear_gradient("L").resize((width, height)))
    return encode(img, "PNG")


def tiff_bytes(width: int = 32, height: int = 24) -> bytes:
    return encode(colourful(width, height), "TIFF")


def ico_bytes(size: int = 32) -> bytes:
    return encode(colourful(size, size), "ICO", sizes=[(size, size)])


def gif_bytes(width: int = 32, height: int = 24) -> bytes:
    return encode(colourful(width, height), "GIF")


def polyglot_gif_html() -> bytes:
    """A GIF header followed by HTML with a script, as served by polyglot attacks."""
    return b"GIF89a\x01\x00\x01\x00\x00\x00\x00" + POLYGLOT_PAYLOAD


def polyglot_jpeg_html() -> bytes:
    """A JPEG start-of-image and JFIF marker, then HTML with a script instead of image data."""
    return jpeg_bytes(8, 8)[:20] + POLYGLOT_PAYLOAD


def magic_then_garbage(magic: bytes, length: int = 2048, seed: int = 0) -> bytes:
    """A valid magic number followed by random bytes."""
    rng = np.random.default_rng(seed)
    return magic + rng.integers(0, 256, length, dtype=np.uint8).tobytes()


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
WEBP_MAGIC = b"RIFF\x00\x08\x00\x00WEBPVP8 "


def image_bytes(width: int, height: int, fmt: str = "PNG") -> bytes:
    """A colourful width x height image in PNG, JPEG or WEBP."""
    makers = {"PNG": png_bytes, "JPEG": jpeg_bytes, "WEBP": webp_bytes}
    return makers[fmt.upper()](width, height)
