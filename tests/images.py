"""Synthetic images for the tests: good uploads, hostile ones, and odd modes, all made in memory."""

from __future__ import annotations

import functools
import io
import struct
import zlib
from typing import Any

import numpy as np
from PIL import Image, ImageCms, ImageDraw

# The files that cost far more to decode than to send are the benchmarks' inputs too.
from benchmarks.inputs import flat_webp, jpeg_with_scans

__all__ = ["flat_webp", "jpeg_with_scans"]

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


# --- small files that decode big ---------------------------------------------------------------


@functools.cache
def progressive_jpeg(width: int = 64, height: int = 48, **save_args: Any) -> bytes:
    """A progressive JPEG as libjpeg writes it: ten scans for a colour image."""
    return jpeg_bytes(width, height, progressive=True, **save_args)


def png_with_chunks(*chunks: tuple[bytes, bytes], data: bytes | None = None) -> bytes:
    """A PNG (by default png_bytes()) with extra chunks, valid CRCs, inserted after its IHDR."""
    data = data or png_bytes()
    after_ihdr = 8 + 12 + struct.unpack_from(">I", data, 8)[0]
    extra = b"".join(_png_chunk(kind, payload) for kind, payload in chunks)
    return data[:after_ihdr] + extra + data[after_ihdr:]


def incompressible(size: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


def png_with_icc_chunk(profile_bytes: int) -> bytes:
    """A PNG whose iCCP chunk holds `profile_bytes` of (incompressible) profile."""
    profile = incompressible(profile_bytes)
    return png_with_chunks((b"iCCP", b"icc\x00\x00" + zlib.compress(profile)))


def png_with_ztxt_bomb(inflated_bytes: int) -> bytes:
    """A PNG whose zTXt chunk is a few KiB stored but inflates to `inflated_bytes` of text."""
    return png_with_chunks((b"zTXt", b"Comment\x00\x00" + zlib.compress(b"A" * inflated_bytes, 9)))


# The smallest valid EXIF block: a little-endian TIFF header pointing at an empty IFD.
TIFF_HEADER = b"II*\x00\x08\x00\x00\x00"


def png_with_exif_chunk(size: int) -> bytes:
    """A PNG whose eXIf chunk is `size` bytes: a TIFF header, then an empty IFD and padding."""
    return png_with_chunks((b"eXIf", TIFF_HEADER + b"\x00" * (size - len(TIFF_HEADER))))


def apng(frames: int, width: int = 16, height: int = 12) -> bytes:
    """An animated PNG of `frames` frames, each a different colour."""
    stills = [Image.new("RGB", (width, height), (i * 37 % 256, 80, 160)) for i in range(frames)]
    return encode(stills[0], "PNG", save_all=True, append_images=stills[1:])


def apng_declaring(frames: int) -> bytes:
    """A two-frame APNG whose acTL chunk declares `frames` frames."""
    data = apng(2)
    start = data.index(b"acTL") - 4
    actl = _png_chunk(b"acTL", struct.pack(">II", frames, 0))
    return data[:start] + actl + data[start + len(actl) :]


def webp_with_metadata(*, exif: bytes = b"", icc_profile: bytes = b"", xmp: bytes = b"") -> bytes:
    """A small lossy WebP carrying the given EXIF, ICCP and XMP chunks (libwebp writes them)."""
    return encode(colourful(32, 24), "WEBP", exif=exif, icc_profile=icc_profile, xmp=xmp)


def webp_with_alpha(width: int = 32, height: int = 24) -> bytes:
    img = colourful(width, height).convert("RGBA")
    img.putalpha(Image.linear_gradient("L").resize((width, height)))
    return encode(img, "WEBP", quality=90)


def lossy_webp(width: int = 64, height: int = 48) -> bytes:
    return encode(colourful(width, height), "WEBP", quality=90)


def _riff_chunk(kind: bytes, payload: bytes) -> bytes:
    return kind + struct.pack("<I", len(payload)) + payload + b"\x00" * (len(payload) % 2)


def animated_webp(frames: int) -> bytes:
    """An animated WebP of `frames` 1 x 1 frames, laid out as libwebp's muxer writes them."""
    still = encode(Image.new("RGB", (1, 1), (0, 128, 255)), "WEBP", lossless=True)
    bitstream = still[12:]  # the VP8L chunk, header included
    vp8x = struct.pack("<B3x", 0x02) + (0).to_bytes(3, "little") * 2  # animation flag, 1 x 1
    anim = struct.pack("<IH", 0xFFFFFFFF, 0)  # background colour, loop forever
    frame = (0).to_bytes(3, "little") * 4 + (100).to_bytes(3, "little") + b"\x00"
    body = b"WEBP" + _riff_chunk(b"VP8X", vp8x) + _riff_chunk(b"ANIM", anim)
    body += _riff_chunk(b"ANMF", frame + bitstream) * frames
    return b"RIFF" + struct.pack("<I", len(body)) + body


def truncated_webp(width: int = 128, height: int = 96) -> bytes:
    return truncated(encode(noise(width, height), "WEBP", quality=90))


def jpeg_with_segment(marker: int, payload: bytes, data: bytes | None = None) -> bytes:
    """A JPEG (by default jpeg_bytes()) with one more marker segment right after its SOI."""
    data = data or jpeg_bytes()
    return (
        data[:2] + bytes([0xFF, marker]) + struct.pack(">H", 2 + len(payload)) + payload + data[2:]
    )


def jpeg_with_empty_comments(count: int) -> bytes:
    """A small JPEG carrying `count` empty COM segments, 4 bytes each."""
    data = jpeg_bytes()
    return data[:2] + b"\xff\xfe\x00\x02" * count + data[2:]


def jpeg_header_claiming(width: int, height: int) -> bytes:
    """A small baseline JPEG whose frame header claims width x height pixels."""
    data = jpeg_bytes(8, 8)
    sof = data.index(b"\xff\xc0")
    return data[: sof + 5] + struct.pack(">HH", height, width) + data[sof + 9 :]


def webp_header_claiming(width: int, height: int) -> bytes:
    """A 38-byte lossless WebP whose VP8L header claims width x height pixels.

    libwebp's fastest lossless method codes one flat colour with one-symbol Huffman codes, zero
    bits a pixel, so the same bitstream is valid at any size: only the 14-bit sizes change.
    """
    data = bytearray(
        encode(Image.new("RGB", (16, 16), (200, 30, 30)), "WEBP", lossless=True, method=0)
    )
    bits = struct.unpack_from("<I", data, 21)[0] & ~((1 << 28) - 1)  # keep alpha and version bits
    struct.pack_into("<I", data, 21, bits | (width - 1) | (height - 1) << 14)
    return bytes(data)


def phone_mpo(width: int = 64, height: int = 48) -> bytes:
    """A JPEG with a second picture behind it (MPF), as phones write: the photo comes first."""
    photo, depth = colourful(width, height), Image.new("RGB", (width, height), (10, 200, 10))
    buf = io.BytesIO()
    photo.save(buf, "MPO", save_all=True, append_images=[depth])
    return buf.getvalue()


# --- masks and phone-sized photos for local edits -----------------------------------------------


@functools.cache
def phone_photo_png(width: int = 4000, height: int = 3000) -> bytes:
    """A 12 MP colourful PNG, the size of a phone photo (made once a session: ~1.5 s)."""
    return png_bytes(width, height)


def rectangle_mask(
    size: tuple[int, int], box: tuple[int, int, int, int], *, value: int = 255
) -> Image.Image:
    """A mode "L" mask, black with the (left, top, right, bottom) box at `value`."""
    mask = Image.new("L", size, 0)
    mask.paste(value, box)
    return mask


def mask_png(size: tuple[int, int], box: tuple[int, int, int, int], *, value: int = 255) -> bytes:
    """A greyscale PNG mask: black (keep), the box at `value` (255 edits, grey blends)."""
    return encode(rectangle_mask(size, box, value=value), "PNG")


def alpha_mask_png(size: tuple[int, int], box: tuple[int, int, int, int]) -> bytes:
    """An RGBA PNG mask: transparent (keep) with the box opaque, painted black, so that only
    its alpha says what to edit (its luminance would say keep everything)."""
    mask = Image.new("RGBA", size, (255, 255, 255, 0))
    mask.paste((0, 0, 0, 255), box)
    return encode(mask, "PNG")


def painted_mask(size: tuple[int, int], box: tuple[int, int, int, int]) -> Image.Image:
    """A mode "L" mask with a white ellipse in the box, as a brush stroke would leave it."""
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).ellipse(box, fill=255)
    return mask
