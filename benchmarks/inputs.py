"""The benchmark inputs: a photo-like image (so JPEG and PNG sizes are realistic) and prompts."""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image

# classic_edit only understands its vocabulary (docs/classic-vocabulary.md); Qwen takes anything.
PROMPTS = {
    "classic_edit": "make it black and white",
    "qwen_image_edit": "make the sky a warm sunset and add a small red boat",
}


def photo_like(width: int = 1024, height: int = 1024, seed: int = 0) -> Image.Image:
    """Smooth gradients, a few shapes and mild sensor-like noise.

    A flat gradient compresses to almost nothing, pure noise to far more than a photo; this sits
    near a camera photo: about 250 KB as a 1-megapixel JPEG at quality 90.
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = x / max(1, width - 1), y / max(1, height - 1)
    red = 40 + 180 * u + 20 * np.sin(6.0 * v)
    green = 60 + 120 * v + 30 * np.cos(5.0 * u)
    blue = 200 - 140 * v * u
    arr = np.stack([red, green, blue], axis=2)
    for _ in range(6):  # soft discs: edges for the codecs to spend bits on
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        radius = rng.uniform(0.05, 0.2) * min(width, height)
        mask = ((x - cx) ** 2 + (y - cy) ** 2) < radius**2
        arr[mask] = arr[mask] * 0.5 + rng.uniform(0, 255, 3) * 0.5
    arr += rng.normal(0.0, 6.0, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def encode(img: Image.Image, fmt: str, **save_args: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **save_args)
    return buf.getvalue()


def jpeg(width: int = 1024, height: int = 1024, seed: int = 0, quality: int = 90) -> bytes:
    return encode(photo_like(width, height, seed), "JPEG", quality=quality)


def png(width: int = 1024, height: int = 1024, seed: int = 0) -> bytes:
    """The PNG the engine would return for a photo of this size (same compress level)."""
    return encode(photo_like(width, height, seed), "PNG", compress_level=4)


# --- Files that cost far more to decode than to send (QUALITY.md 39) ---------------------------


def flat_webp(width: int = 4096, height: int = 4096) -> bytes:
    """One flat colour as a lossless WebP: 706 bytes for 4096 x 4096, which decode to 64 MiB."""
    return encode(Image.new("RGB", (width, height), (200, 30, 30)), "WEBP", lossless=True)


def _bits_to_entropy_bytes(bits: str) -> bytes:
    """Pad a bit string with ones to whole bytes; stuff a zero after every 0xFF (T.81 F.1.2.3)."""
    bits += "1" * (-len(bits) % 8)
    raw = int(bits, 2).to_bytes(len(bits) // 8, "big") if bits else b""
    return raw.replace(b"\xff", b"\xff\x00")


def _eob_runs(blocks: int) -> str:
    """Huffman-coded end-of-band runs that skip `blocks` blocks (T.81 G.1.2.2), with the code
    of _EOB_TABLE: symbol r << 4 (a run of 2**r + r extra bits) is the 4-bit code r."""
    bits = []
    while blocks:
        r = min(14, blocks.bit_length() - 1)
        run = min(blocks, (1 << (r + 1)) - 1)
        bits.append(format(r, "04b") + (format(run - (1 << r), f"0{r}b") if r else ""))
        blocks -= run
    return "".join(bits)


# An AC Huffman table (class 1, id 0) holding the fifteen end-of-band run symbols, all 4 bits long.
_EOB_TABLE = bytes([0x10]) + bytes([0, 0, 0, 15] + [0] * 12) + bytes(r << 4 for r in range(15))


def jpeg_with_scans(scans: int, width: int = 256, height: int = 256) -> bytes:
    """A valid progressive JPEG of exactly `scans` scans: libjpeg's ten, then empty luma scans.

    Each added scan is a first AC pass over the luma in which every block ends at once (one
    end-of-band run), so the pixels stay the same, but a decoder walks every block once per scan:
    the decode time grows with scans x blocks from a file that grows by a few bytes a scan.
    """
    base = encode(Image.new("RGB", (width, height), (90, 120, 200)), "JPEG", progressive=True)
    extra = scans - base.count(b"\xff\xda")  # entropy-coded data never holds FF DA (stuffing)
    if extra < 0:
        raise ValueError(f"a progressive JPEG from libjpeg already has more than {scans} scans")
    blocks = -(-width // 8) * -(-height // 8)  # the luma's 8x8 blocks, in a single-component scan
    header = b"\xff\xda" + struct.pack(">HB2B3B", 8, 1, 1, 0x00, 1, 63, 0x00)  # Y, AC 1..63
    scan = header + _bits_to_entropy_bytes(_eob_runs(blocks))
    dht = b"\xff\xc4" + struct.pack(">H", 2 + len(_EOB_TABLE)) + _EOB_TABLE
    return base[:-2] + dht + scan * extra + b"\xff\xd9"
