"""The benchmark inputs: a photo-like image (so JPEG and PNG sizes are realistic) and prompts."""

from __future__ import annotations

import io

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
