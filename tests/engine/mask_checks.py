"""Pixel checks for the local-edit tests: where a mask's feather can reach, and where not."""

from __future__ import annotations

import numpy as np
from PIL import Image


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB")).astype(np.int16)


def marked_within(mask: Image.Image, reach: int) -> np.ndarray:
    """How many marked (non-zero) pixels of the mask lie within `reach` of each pixel, by an
    integral image: a rank filter of that size takes a minute on a phone photo."""
    marked = (np.asarray(mask) > 0).astype(np.int64)
    padded = np.pad(marked, reach + 1)[:-1, :-1].cumsum(0).cumsum(1)
    side = 2 * reach + 1
    return (
        padded[side:, side:]
        - padded[:-side, side:]
        - padded[side:, :-side]
        + padded[:-side, :-side]
    )


def beyond(mask: Image.Image, reach: int) -> np.ndarray:
    """Where no marked pixel of the mask is within `reach` (the feather cannot get there)."""
    return marked_within(mask, reach) == 0


def well_inside(mask: Image.Image, reach: int) -> np.ndarray:
    """Where every pixel within `reach` is fully marked (the feather leaves it fully edited)."""
    full = np.asarray(mask) == 255
    return full & (marked_within(mask, reach) == (2 * reach + 1) ** 2)
