"""The classic editor's operations table: name -> deterministic image function, limits passed in."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from qie_engine.errors import InvalidInput
from qie_engine.image_codec import ImageLimits

GRABCUT_ITERATIONS = 5
GRABCUT_MAX_SIDE = 640
GRABCUT_SEED = 0
BORDER_COLOUR_TOLERANCE = 16


@dataclass(frozen=True)
class ClassicLimits:
    """How far an instruction may go; ClassicEditor bounds results by the upload pixel limit."""

    max_result_pixels: int = ImageLimits.max_pixels
    max_result_side: int = 8192
    max_operations: int = 20
    max_blur_radius: float = 50.0
    max_adjust_percent: float = 500.0
    max_scale_factor: float = 16.0
    max_pixelate_block: int = 512

    def check_result_size(self, width: int, height: int) -> None:
        if width < 1 or height < 1:
            raise out_of_range(f"the result would be {width}x{height} pixels, which is empty")
        if (
            width > self.max_result_side
            or height > self.max_result_side
            or width * height > self.max_result_pixels
        ):
            raise out_of_range(
                f"the result would be {width}x{height} pixels; the limit is "
                f"{self.max_result_side} pixels a side and {self.max_result_pixels} pixels in all"
            )


DEFAULT_LIMITS = ClassicLimits()


@dataclass(frozen=True)
class Operation:
    """One parsed step: a name, its parameters, and the label reported to clients."""

    name: str
    params: Mapping[str, float] = field(default_factory=dict, hash=False)
    label: str = ""


def out_of_range(message: str) -> InvalidInput:
    return InvalidInput(message, code="invalid_instruction")


def _split_alpha(img: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    if img.mode == "RGBA":
        return img.convert("RGB"), img.getchannel("A")
    return img.convert("RGB"), None


def _join_alpha(rgb: Image.Image, alpha: Image.Image | None) -> Image.Image:
    if alpha is None:
        return rgb
    out = rgb.convert("RGBA")
    out.putalpha(alpha)
    return out


def _on_colour(img: Image.Image, fn: Callable[[Image.Image], Image.Image]) -> Image.Image:
    """Apply a colour operation to RGB only, so transparency is never altered."""
    rgb, alpha = _split_alpha(img)
    return _join_alpha(fn(rgb), alpha)


def _premultiplied(img: Image.Image, fn: Callable[[Image.Image], Image.Image]) -> Image.Image:
    """Resample RGBA premultiplied, or transparent pixels bleed dark fringes into edges."""
    if img.mode == "RGBA":
        return fn(img.convert("RGBa")).convert("RGBA")
    return fn(img)


def grayscale(img: Image.Image) -> Image.Image:
    """Luma (ITU-R 601) copied into R, G and B."""

    def gray(rgb: Image.Image) -> Image.Image:
        luma = rgb.convert("L")
        return Image.merge("RGB", (luma, luma, luma))

    return _on_colour(img, gray)


_SEPIA_MATRIX = np.array(
    [[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]], dtype=np.float64
)


def sepia(img: Image.Image) -> Image.Image:
    """The classic sepia matrix; every row dominates the next, so R >= G >= B."""

    def tone(rgb: Image.Image) -> Image.Image:
        arr = np.asarray(rgb, dtype=np.float64) @ _SEPIA_MATRIX.T
        return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "RGB")

    return _on_colour(img, tone)


def invert(img: Image.Image) -> Image.Image:
    """Photographic negative of the colours; alpha is kept."""
    return _on_colour(img, ImageOps.invert)


def rotate(img: Image.Image, angle: float, limits: ClassicLimits = DEFAULT_LIMITS) -> Image.Image:
    """Rotate counter-clockwise by angle degrees, expanding the canvas to fit."""
    turn = angle % 360
    exact = {
        90.0: Image.Transpose.ROTATE_90,
        180.0: Image.Transpose.ROTATE_180,
        270.0: Image.Transpose.ROTATE_270,
    }
    if turn == 0:
        return img.copy()
    if turn in exact:
        # Transposition moves pixels exactly; resampling would soften a lossless quarter turn.
        return img.transpose(exact[turn])
    radians = math.radians(turn)
    cos, sin = abs(math.cos(radians)), abs(math.sin(radians))
    limits.check_result_size(
        math.ceil(img.width * cos + img.height * sin), math.ceil(img.width * sin + img.height * cos)
    )
    fill: tuple[int, ...] = (0, 0, 0, 0) if img.mode == "RGBA" else (0, 0, 0)
    return _premultiplied(
        img,
        lambda im: im.rotate(turn, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=fill),
    )


def flip_vertical(img: Image.Image) -> Image.Image:
    """Top becomes bottom."""
    return img.transpose(Image.Transpose.FLIP_TOP_BOTTOM)


def mirror(img: Image.Image) -> Image.Image:
    """Left becomes right."""
    return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


def blur(img: Image.Image, radius: float) -> Image.Image:
    """Gaussian blur with the given radius in pixels."""
    return _premultiplied(img, lambda im: im.filter(ImageFilter.GaussianBlur(radius)))


def sharpen(img: Image.Image, percent: float) -> Image.Image:
    """Unsharp mask; the threshold leaves flat areas (and their noise) alone."""
    mask = ImageFilter.UnsharpMask(radius=2, percent=round(percent), threshold=3)
    return _on_colour(img, lambda rgb: rgb.filter(mask))


_ENHANCERS = {
    "brightness": ImageEnhance.Brightness,
    "contrast": ImageEnhance.Contrast,
    "saturation": ImageEnhance.Color,
}


def adjust(img: Image.Image, prop: str, percent: float) -> Image.Image:
    """Change brightness, contrast or saturation by a signed percentage."""
    enhancer = _ENHANCERS[prop]
    factor = max(0.0, 1 + percent / 100)
    return _on_colour(img, lambda rgb: enhancer(rgb).enhance(factor))


def crop_square(img: Image.Image) -> Image.Image:
    """Centre crop to the largest square."""
    side = min(img.width, img.height)
    left = (img.width - side) // 2
    top = (img.height - side) // 2
    return img.crop((left, top, left + side, top + side))


def resize(
    img: Image.Image, width: int, height: int, limits: ClassicLimits = DEFAULT_LIMITS
) -> Image.Image:
    """Resize to width x height; a 0 in one of them keeps the aspect ratio."""
    if width <= 0 and height <= 0:
        return img.copy()
    if width <= 0:
        width = max(1, math.floor(img.width * height / img.height + 0.5))
    elif height <= 0:
        height = max(1, math.floor(img.height * width / img.width + 0.5))
    limits.check_result_size(width, height)
    if (width, height) == img.size:
        return img.copy()
    return img.resize((width, height), Image.Resampling.LANCZOS)


def scale(img: Image.Image, factor: float, limits: ClassicLimits = DEFAULT_LIMITS) -> Image.Image:
    """Scale both sides by factor, rounding half up."""
    width = max(1, math.floor(img.width * factor + 0.5))
    height = max(1, math.floor(img.height * factor + 0.5))
    return resize(img, width, height, limits)


def pixelate(img: Image.Image, block: int) -> Image.Image:
    """Replace each block x block tile (anchored top-left) with its mean colour."""
    arr = np.asarray(img, dtype=np.float64)
    height, width = arr.shape[:2]
    rows = np.arange(0, height, block)
    cols = np.arange(0, width, block)

    def tile_sums(values: np.ndarray) -> np.ndarray:
        return np.add.reduceat(np.add.reduceat(values, rows, axis=0), cols, axis=1)

    counts = tile_sums(np.ones((height, width, 1)))
    if img.mode == "RGBA":
        # Weighting colour by alpha keeps invisible pixels' colours out of the tile.
        alpha = arr[..., 3:4]
        alpha_sum = tile_sums(alpha)
        colour = tile_sums(arr[..., :3] * alpha) / np.maximum(alpha_sum, 1e-9)
        means = np.concatenate([colour, alpha_sum / counts], axis=2)
    else:
        means = tile_sums(arr) / counts
    tiles = np.clip(np.rint(means), 0, 255).astype(np.uint8)
    full = np.repeat(np.repeat(tiles, block, axis=0), block, axis=1)[:height, :width]
    return Image.fromarray(np.ascontiguousarray(full), img.mode)


def posterize(img: Image.Image, bits: int) -> Image.Image:
    """Keep only the top bits of each colour channel."""
    return _on_colour(img, lambda rgb: ImageOps.posterize(rgb, bits))


def _plain_border_region(rgb: np.ndarray) -> np.ndarray:
    """Pixels of the border's dominant colour that are connected to the border."""
    ring = np.concatenate([rgb[0], rgb[-1], rgb[1:-1, 0], rgb[1:-1, -1]]).astype(np.int16)
    colour = np.median(ring, axis=0)
    near = np.max(np.abs(rgb.astype(np.int16) - colour), axis=2) <= BORDER_COLOUR_TOLERANCE
    ring_near = np.max(np.abs(ring - colour), axis=1) <= BORDER_COLOUR_TOLERANCE
    if ring_near.mean() < 0.5:
        return np.zeros(near.shape, dtype=bool)
    _, labels = cv2.connectedComponents(near.astype(np.uint8), connectivity=4)
    edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    edge_near = np.concatenate([near[0], near[-1], near[:, 0], near[:, -1]])
    touching = np.unique(edge[edge_near])
    return np.isin(labels, touching) & near


def remove_background(img: Image.Image) -> Image.Image:
    """GrabCut from a rectangle just inside the border; background pixels get alpha 0."""
    rgba = img.convert("RGBA")
    rgb = np.asarray(rgba.convert("RGB"))
    height, width = rgb.shape[:2]
    margin = max(2, min(width, height) // 50)
    if min(width, height) < 2 * margin + 4:
        raise out_of_range(
            f"background removal needs an image of at least {2 * margin + 4} pixels a side"
        )
    # Outside the rectangle is certain background, the premise GrabCut starts from.
    mask = np.full((height, width), cv2.GC_BGD, dtype=np.uint8)
    mask[margin:-margin, margin:-margin] = cv2.GC_PR_FGD
    # A plain border colour reaching inwards is background too; telling GrabCut so up front
    # keeps it from keeping a flat backdrop that happens to lie inside the rectangle.
    plain = _plain_border_region(rgb)
    mask[plain] = cv2.GC_BGD
    foreground = mask == cv2.GC_PR_FGD

    shrink = min(1.0, GRABCUT_MAX_SIDE / max(width, height))
    small_size = (max(1, round(width * shrink)), max(1, round(height * shrink)))
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    small_bgr = bgr if shrink == 1.0 else cv2.resize(bgr, small_size, interpolation=cv2.INTER_AREA)
    small_mask = (
        mask if shrink == 1.0 else cv2.resize(mask, small_size, interpolation=cv2.INTER_NEAREST)
    )
    small_mask = np.ascontiguousarray(small_mask)
    # GrabCut's GMMs start from k-means, which needs a few samples of each class.
    if (small_mask == cv2.GC_PR_FGD).sum() >= 10 and (small_mask == cv2.GC_BGD).sum() >= 10:
        # k-means seeds its centres from OpenCV's global RNG; a fixed seed makes the cut repeatable.
        cv2.setRNGSeed(GRABCUT_SEED)
        bgd_model = np.zeros((1, 65), np.float64)
        fgd_model = np.zeros((1, 65), np.float64)
        cv2.grabCut(
            small_bgr,
            small_mask,
            (0, 0, 0, 0),
            bgd_model,
            fgd_model,
            GRABCUT_ITERATIONS,
            cv2.GC_INIT_WITH_MASK,
        )
        small_fg = np.isin(small_mask, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.uint8) * 255
        if shrink == 1.0:
            foreground = small_fg > 0
        else:
            foreground = (
                cv2.resize(small_fg, (width, height), interpolation=cv2.INTER_LINEAR) >= 128
            )
        foreground &= mask != cv2.GC_BGD
    alpha = np.where(foreground, 255, 0).astype(np.uint8)
    alpha = np.minimum(alpha, np.asarray(rgba.getchannel("A")))
    rgba.putalpha(Image.fromarray(alpha, "L"))
    return rgba


def _normalise_mode(img: Image.Image) -> Image.Image:
    if img.mode in ("RGB", "RGBA"):
        return img
    has_alpha = img.mode in ("LA", "PA", "La") or "transparency" in img.info
    return img.convert("RGBA" if has_alpha else "RGB")


Apply = Callable[[Image.Image, Mapping[str, float], ClassicLimits], Image.Image]


def _adjuster(prop: str) -> Apply:
    return lambda img, p, _limits: adjust(img, prop, p["percent"])


# Each entry gets the image, the operation's parameters and the limits.
OPERATIONS: dict[str, Apply] = {
    "grayscale": lambda img, _p, _limits: grayscale(img),
    "sepia": lambda img, _p, _limits: sepia(img),
    "invert": lambda img, _p, _limits: invert(img),
    "rotate": lambda img, p, limits: rotate(img, p["angle"], limits),
    "flip": lambda img, _p, _limits: flip_vertical(img),
    "mirror": lambda img, _p, _limits: mirror(img),
    "blur": lambda img, p, _limits: blur(img, p["radius"]),
    "sharpen": lambda img, p, _limits: sharpen(img, p["percent"]),
    **{prop: _adjuster(prop) for prop in _ENHANCERS},
    "crop_square": lambda img, _p, _limits: crop_square(img),
    "resize": lambda img, p, limits: resize(
        img, int(p.get("width", 0)), int(p.get("height", 0)), limits
    ),
    "scale": lambda img, p, limits: scale(img, p["factor"], limits),
    "pixelate": lambda img, p, _limits: pixelate(img, int(p["block"])),
    "posterize": lambda img, p, _limits: posterize(img, int(p["bits"])),
    "remove_background": lambda img, _p, _limits: remove_background(img),
}


def apply_operation(
    img: Image.Image, op: Operation, limits: ClassicLimits = DEFAULT_LIMITS
) -> Image.Image:
    """Apply one operation; RGB stays RGB and RGBA stays RGBA, except background removal."""
    operation = OPERATIONS.get(op.name)
    if operation is None:
        raise ValueError(f"unknown operation {op.name!r}")
    return operation(_normalise_mode(img), op.params, limits)
