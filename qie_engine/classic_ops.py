"""The classic editor's instruction parser and its deterministic image operations."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from qie_engine.errors import InvalidInput

# Shown to clients by describe() and the gateway; docs/classic-vocabulary.md has the long form.
VOCABULARY: tuple[str, ...] = (
    "grayscale: 'grayscale', 'black and white', 'b&w', 'monochrome'",
    "sepia: 'sepia', 'sepia tone'",
    "invert: 'invert', 'invert colors', 'negative'",
    "rotate: 'rotate 90' (positive = counter-clockwise), 'rotate by 45 degrees', "
    "'rotate 30 clockwise', 'rotate left', 'rotate right', 'upside down'",
    "flip: 'flip' or 'flip vertically' (top-bottom), 'flip horizontally' or 'mirror' (left-right)",
    "blur: 'blur', 'blur 5', 'blur by 3', 'slightly blur', 'strong blur'",
    "sharpen: 'sharpen', 'slightly sharpen', 'strongly sharpen'",
    "brightness: 'brighten', 'make it brighter', 'darken', 'increase brightness by 20%'",
    "contrast: 'more contrast', 'increase contrast by 30%', 'less contrast'",
    "saturation: 'more saturated', 'more vivid', 'desaturate', 'saturation -40%'",
    "crop: 'crop to square' (centre crop)",
    "resize: 'resize to 640x480', 'resize 800\u00d7600', 'scale 50%', 'scale to 50 %', 'scale 2x'",
    "pixelate: 'pixelate', 'pixelate 12', 'pixelate with 4px blocks'",
    "posterize: 'posterize' (3 bits), 'posterize 2 bits'",
    "remove background: 'remove the background', 'transparent background'",
    "combine: join steps with 'and', ',', ';' or 'then'; they run in the order written",
)

SUPPORTED_SUMMARY = (
    "grayscale, sepia, invert, rotate N degrees / left / right, flip, mirror, blur [N], sharpen, "
    "brighter / darker [N%], more / less contrast [N%], more / less saturated [N%], "
    "crop to square, resize WxH, scale N%, pixelate [N], posterize [bits], remove background"
)

# The uploads' own pixel limit: no instruction may grow an image beyond what could be uploaded.
MAX_RESULT_PIXELS = 4096 * 4096
MAX_RESULT_SIDE = 8192
MAX_OPERATIONS = 20
MAX_BLUR_RADIUS = 50.0
MAX_ADJUST_PERCENT = 500.0
MAX_SCALE_FACTOR = 16.0
MAX_PIXELATE_BLOCK = 512

DEFAULT_BLUR = {None: 2.0, "slight": 1.0, "strong": 6.0}
DEFAULT_SHARPEN = {None: 150.0, "slight": 80.0, "strong": 300.0}
DEFAULT_ADJUST = {None: 25.0, "slight": 10.0, "strong": 50.0}
DEFAULT_PIXELATE = {None: 8, "slight": 4, "strong": 16}
DEFAULT_POSTERIZE = {None: 3, "slight": 4, "strong": 2}

GRABCUT_ITERATIONS = 5
GRABCUT_MAX_SIDE = 640
GRABCUT_SEED = 0
BORDER_COLOUR_TOLERANCE = 16


@dataclass(frozen=True)
class Operation:
    """One parsed step: a name, its parameters, and the label reported to clients."""

    name: str
    params: Mapping[str, float] = field(default_factory=dict, hash=False)
    label: str = ""


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------

# "black and white" and "b&w" hold the joining words, so those two are kept whole.
_SEPARATOR = re.compile(
    r"\s*(?:[,;]+|\.(?=\s|$)|\bthen\b|(?<!black )(?<!black-)\band\b|&(?!\s*w(?:hite)?\b))\s*",
    re.IGNORECASE,
)

# fmt: off
_FILLERS = frozenset((
    "please", "pls", "kindly", "can", "could", "would", "will", "you", "make", "makes", "it",
    "its", "the", "image", "img", "photo", "picture", "pic", "photograph", "this", "that", "a",
    "an", "me", "my", "for", "apply", "give", "convert", "converted", "into", "to", "by", "of",
    "effect", "filter", "look", "looking", "version", "style", "mode", "just", "some", "now",
    "also", "with", "in", "so", "is", "be", "should", "i", "want", "need", "direction",
))
_SLIGHT = frozenset((
    "slightly", "slight", "little", "somewhat", "gently", "gentle", "subtle", "subtly",
    "mild", "mildly",
))
_STRONG = frozenset((
    "strong", "strongly", "heavy", "heavily", "lot", "lots", "much", "very", "really",
    "extremely", "intense", "intensely", "way",
))
# fmt: on
_SPELLING = {
    "grey": "gray",
    "greyscale": "grayscale",
    "centre": "center",
    "central": "center",
    "middle": "center",
    "colour": "color",
    "colours": "color",
    "colors": "color",
    "colourful": "colorful",
    "percent": "%",
    "pct": "%",
    "degree": "degrees",
    "deg": "degrees",
    "posterise": "posterize",
    "posterised": "posterize",
    "posterized": "posterize",
    "pixelise": "pixelate",
    "pixelize": "pixelate",
    "pixellate": "pixelate",
    "pixelated": "pixelate",
}

_NUM = r"([+-]?\d+(?:\.\d+)?)"


def _normalise(clause: str) -> list[str]:
    s = clause.lower().replace("\u2019", "").replace("'", "")
    s = s.replace("\u00d7", "x").replace("°", " degrees ").replace("%", " % ")
    s = re.sub(r"\bb\s*[&/]\s*w\b", " grayscale ", s)
    s = s.replace("&", " and ")
    s = re.sub(r"\bper\s+cent\b", " % ", s)
    # Only "a bit" means slightly; a bare "bit" is posterize's unit ("posterize 1 bit").
    s = re.sub(r"\ba (?:tiny |little )?bit\b", " slightly ", s)
    s = re.sub(r"\b(counter|anti)[\s-]+clockwise\b", " counterclockwise ", s)
    s = re.sub(r"\bgr[ae]y[\s-]+scale\b", " grayscale ", s)
    s = re.sub(r"(\d)\s*x\s*(\d)", r"\1x\2", s)
    # "8px", "3bits", "90deg" carry their unit; "2x" and "640x480" are kept whole.
    s = re.sub(r"(\d)(?=[a-wyz])", r"\1 ", s)
    s = re.sub(r"[-_](?![\d.])", " ", s)
    s = re.sub(r"[^a-z0-9.%+\- ]", " ", s)
    words = [_SPELLING.get(w, w) for w in s.split()]
    return [w for w in words if w not in _FILLERS and w not in (".", "+", "-")]


def _op(name: str, label: str, **params: float) -> Operation:
    return Operation(name=name, params=dict(params), label=label)


def _fmt(value: float) -> str:
    return f"{value:g}"


def _out_of_range(message: str) -> InvalidInput:
    return InvalidInput(message, code="invalid_instruction")


def _simple(
    pattern: str, build: Callable[[], Operation]
) -> Callable[[str, str | None], Operation | None]:
    regex = re.compile(pattern)

    def match(text: str, intensity: str | None) -> Operation | None:
        if intensity is None and regex.fullmatch(text):
            return build()
        return None

    return match


_match_grayscale = _simple(
    r"grayscale|gray|black and white|black white|monochrome|mono|monochromatic"
    r"|no color|remove color|without color",
    lambda: _op("grayscale", "grayscale"),
)
_match_sepia = _simple(r"sepia(?: tone| tones| toned)?", lambda: _op("sepia", "sepia"))
_match_invert = _simple(
    r"invert(?:ed)?(?: color)?|inverse|negative|color invert",
    lambda: _op("invert", "invert"),
)
_match_flip = _simple(
    r"(?:flip|flipped)(?: (?:vertical|vertically|top bottom|upside down|up down|over))?"
    r"|vertical(?:ly)? flip(?:ped)?|mirror(?:ed)? (?:vertical|vertically|top bottom)",
    lambda: _op("flip", "flip vertically"),
)
_match_mirror = _simple(
    r"(?:flip|flipped) (?:horizontal|horizontally|left right|sideways)"
    r"|horizontal(?:ly)? flip(?:ped)?|mirror(?:ed)?(?: (?:horizontal|horizontally|left right))?",
    lambda: _op("mirror", "mirror"),
)
_match_crop = _simple(
    r"(?:center )?(?:crop(?:ped)? (?:center )?square|square(?: crop(?:ped)?)?|crop(?:ped)? center)"
    r"|center crop(?:ped)?",
    lambda: _op("crop_square", "crop to square"),
)
_match_remove_background = _simple(
    r"(?:remove|removed|delete|erase|drop|strip|without|no|transparent|clear)"
    r" (?:background|bg|backdrop)"
    r"|(?:background|bg|backdrop) (?:removal|removed|remove|transparent|gone)"
    r"|cut out(?: subject| object)?|cutout|isolate (?:subject|object)",
    lambda: _op("remove_background", "remove background"),
)

_ROTATE_VERBS = ("rotate", "rotated", "rotation", "turn", "spin")
_COUNTERCLOCKWISE = ("counterclockwise", "anticlockwise", "ccw", "left")
_CLOCKWISE = ("clockwise", "cw", "right")
_NUMBER = re.compile(_NUM)


def _match_rotate(text: str, intensity: str | None) -> Operation | None:
    if intensity is not None:
        return None
    words = text.split()
    if words in (["upside", "down"], ["rotate", "upside", "down"]):
        return _op("rotate", "rotate 180°", angle=180.0)
    verb = bool(words) and words[0] in _ROTATE_VERBS
    if verb:
        words = words[1:]
    direction: str | None = None
    number: str | None = None
    degrees = False
    for i, word in enumerate(words):
        if word in _COUNTERCLOCKWISE + _CLOCKWISE and direction is None:
            direction = word
        elif _NUMBER.fullmatch(word) and number is None:
            number = word
        elif word == "degrees" and i > 0 and words[i - 1] == number and not degrees:
            degrees = True
        else:
            return None
    if number is None and direction is None:
        return None
    # A bare "left" or "30" is too vague; a verb, "degrees" or a named sense makes it a rotation.
    if not verb and not degrees and direction in (None, "left", "right"):
        return None
    angle = float(number) if number is not None else 90.0
    if direction in _CLOCKWISE:
        angle = -angle
    if abs(angle) > 3600:
        raise _out_of_range(f"rotation angle {_fmt(angle)} is out of range (-3600 to 3600 degrees)")
    return _op("rotate", f"rotate {_fmt(angle)}°", angle=angle)


_BLUR = re.compile(
    r"(?:more )?(?:blur|blurred|blurry|blurrier|gaussian blur|soften|softer)"
    r"(?: radius)?(?: " + _NUM + r")?(?: (?:px|pixel|pixels))?"
)


def _match_blur(text: str, intensity: str | None) -> Operation | None:
    m = _BLUR.fullmatch(text)
    if not m:
        return None
    if m.group(1) is not None:
        if intensity is not None:
            return None
        radius = float(m.group(1))
    else:
        radius = DEFAULT_BLUR[intensity]
    if not 0 < radius <= MAX_BLUR_RADIUS:
        raise _out_of_range(f"blur radius {_fmt(radius)} is out of range (above 0, at most 50)")
    return _op("blur", f"blur radius {_fmt(radius)}", radius=radius)


_SHARPEN = re.compile(r"sharpen|sharpened|sharper|more sharp|sharp|crisp|crisper|more crisp")


def _match_sharpen(text: str, intensity: str | None) -> Operation | None:
    if not _SHARPEN.fullmatch(text):
        return None
    label = "sharpen" if intensity is None else f"sharpen ({intensity})"
    return _op("sharpen", label, percent=DEFAULT_SHARPEN[intensity])


# fmt: off
_UP = (
    "increase", "increased", "raise", "raised", "boost", "boosted", "more", "higher", "up",
    "add", "enhance", "enhanced",
)
_DOWN = (
    "decrease", "decreased", "reduce", "reduced", "lower", "lowered", "less", "down", "drop",
    "cut",
)
# fmt: on
_PROPERTY_NOUNS = {
    "brightness": "brightness",
    "exposure": "brightness",
    "contrast": "contrast",
    "saturation": "saturation",
    "color saturation": "saturation",
    "vibrance": "saturation",
    "color": "saturation",
    "colorfulness": "saturation",
}
_PROPERTY_ADJECTIVES = {
    "brighten": ("brightness", 1),
    "brighter": ("brightness", 1),
    "bright": ("brightness", 1),
    "lighten": ("brightness", 1),
    "lighter": ("brightness", 1),
    "darken": ("brightness", -1),
    "darker": ("brightness", -1),
    "dark": ("brightness", -1),
    "dim": ("brightness", -1),
    "dimmer": ("brightness", -1),
    "contrasty": ("contrast", 1),
    "saturate": ("saturation", 1),
    "saturated": ("saturation", 1),
    "vivid": ("saturation", 1),
    "vivider": ("saturation", 1),
    "vibrant": ("saturation", 1),
    "colorful": ("saturation", 1),
    "desaturate": ("saturation", -1),
    "desaturated": ("saturation", -1),
    "muted": ("saturation", -1),
    "dull": ("saturation", -1),
    "duller": ("saturation", -1),
}


def _alternatives(words: Iterable[str]) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


_DIRECTION = _alternatives(_UP + _DOWN)
_ADJUST = re.compile(
    rf"(?:({_DIRECTION}) )?({_alternatives(list(_PROPERTY_NOUNS) + list(_PROPERTY_ADJECTIVES))})"
    rf"(?: ({_DIRECTION}))?(?: {_NUM}(?: %)?)?"
)


def _match_adjust(text: str, intensity: str | None) -> Operation | None:
    m = _ADJUST.fullmatch(text)
    if not m:
        return None
    before, word, after, number = m.groups()
    if before is not None and after is not None:
        return None
    modifier = before or after
    if word in _PROPERTY_ADJECTIVES:
        prop, sign = _PROPERTY_ADJECTIVES[word]
    else:
        prop, sign = _PROPERTY_NOUNS[word], 0
    if modifier is not None:
        sign = (sign or 1) * (1 if modifier in _UP else -1)
    if number is not None:
        if intensity is not None:
            return None
        value = float(number)
        if number.startswith(("+", "-")):
            sign = (sign or 1) * (1 if value > 0 else -1)
        percent = abs(value)
    else:
        percent = DEFAULT_ADJUST[intensity]
    if sign == 0:
        return None
    if not 0 < percent <= MAX_ADJUST_PERCENT or (sign < 0 and percent > 100):
        raise _out_of_range(
            f"{prop} change of {_fmt(percent)}% is out of range "
            "(up to +500% or down to -100%, and not 0)"
        )
    delta = sign * percent
    return _op(prop, f"{prop} {delta:+g}%", percent=delta)


_RESIZE_VERBS = "resize|resized|scale|scaled|size|resample|rescale"
_RESIZE = re.compile(rf"(?:{_RESIZE_VERBS}) (\d+)x(\d+)(?: (?:px|pixels))?")
_SCALE = re.compile(
    rf"(?:{_RESIZE_VERBS}|shrink|downscale|upscale|enlarge) {_NUM}(?: ?(%|x|times))?"
)


def _check_result_size(width: int, height: int) -> None:
    if width < 1 or height < 1:
        raise _out_of_range(f"the result would be {width}x{height} pixels, which is empty")
    if width > MAX_RESULT_SIDE or height > MAX_RESULT_SIDE or width * height > MAX_RESULT_PIXELS:
        raise _out_of_range(
            f"the result would be {width}x{height} pixels; the limit is {MAX_RESULT_SIDE} pixels "
            f"a side and {MAX_RESULT_PIXELS} pixels in all"
        )


def _match_resize(text: str, intensity: str | None) -> Operation | None:
    if intensity is not None:
        return None
    m = _RESIZE.fullmatch(text)
    if m:
        width, height = int(m.group(1)), int(m.group(2))
        _check_result_size(width, height)
        return _op("resize", f"resize to {width}x{height}", width=width, height=height)
    if text in ("half size", "halve", "halve size", "half"):
        return _op("scale", "scale 50%", factor=0.5)
    if text in ("double size", "double", "twice size"):
        return _op("scale", "scale 200%", factor=2.0)
    m = _SCALE.fullmatch(text)
    if not m:
        return None
    value = float(m.group(1))
    factor = value / 100 if m.group(2) == "%" else value
    if not 0 < factor <= MAX_SCALE_FACTOR:
        raise _out_of_range(
            f"scale factor {_fmt(factor)} is out of range "
            f"(above 0, at most {_fmt(MAX_SCALE_FACTOR)})"
        )
    return _op("scale", f"scale {_fmt(factor * 100)}%", factor=factor)


_PIXELATE = re.compile(
    r"pixelate(?: (?:block|blocks|block size|size))?(?: " + _NUM + r")?"
    r"(?: (?:px|pixel|pixels))?(?: (?:block|blocks))?"
)


def _match_pixelate(text: str, intensity: str | None) -> Operation | None:
    m = _PIXELATE.fullmatch(text)
    if not m:
        return None
    if m.group(1) is not None:
        if intensity is not None:
            return None
        value = float(m.group(1))
        if not value.is_integer() or not 2 <= value <= MAX_PIXELATE_BLOCK:
            raise _out_of_range(
                f"pixelate block size {m.group(1)} must be a whole number from 2 to "
                f"{MAX_PIXELATE_BLOCK}"
            )
        block = int(value)
    else:
        block = DEFAULT_PIXELATE[intensity]
    return _op("pixelate", f"pixelate {block} px", block=block)


_POSTERIZE = re.compile(r"posterize(?: " + _NUM + r")?(?: (?:bit|bits))?")


def _match_posterize(text: str, intensity: str | None) -> Operation | None:
    m = _POSTERIZE.fullmatch(text)
    if not m:
        return None
    if m.group(1) is not None:
        if intensity is not None:
            return None
        value = float(m.group(1))
        if not value.is_integer() or not 1 <= value <= 8:
            raise _out_of_range(f"posterize bits {m.group(1)} must be a whole number from 1 to 8")
        bits = int(value)
    else:
        bits = DEFAULT_POSTERIZE[intensity]
    return _op("posterize", f"posterize {bits} bit{'' if bits == 1 else 's'}", bits=bits)


_MATCHERS: tuple[Callable[[str, str | None], Operation | None], ...] = (
    _match_grayscale,
    _match_sepia,
    _match_invert,
    _match_rotate,
    _match_flip,
    _match_mirror,
    _match_blur,
    _match_sharpen,
    _match_adjust,
    _match_crop,
    _match_resize,
    _match_pixelate,
    _match_posterize,
    _match_remove_background,
)


def _intensity(words: list[str]) -> tuple[list[str], str | None] | None:
    """Split off "slightly"/"strong" style words; None when both kinds appear."""
    slight = any(w in _SLIGHT for w in words)
    strong = any(w in _STRONG for w in words)
    if slight and strong:
        return None
    rest = [w for w in words if w not in _SLIGHT and w not in _STRONG]
    return rest, ("slight" if slight else "strong" if strong else None)


def _parse_clause(words: list[str]) -> Operation | None:
    split = _intensity(words)
    if split is None:
        return None
    rest, intensity = split
    if not rest:
        return None
    candidates = [rest]
    # "turn" both rotates ("turn 90 degrees") and introduces ("turn it black and white").
    if "turn" in rest:
        candidates.append([w for w in rest if w != "turn"])
    for candidate in candidates:
        text = " ".join(candidate)
        for matcher in _MATCHERS:
            op = matcher(text, intensity)
            if op is not None:
                return op
    return None


def parse_instruction(text: str) -> list[Operation]:
    """Parse an instruction into operations; raise InvalidInput unless every part is understood."""
    collapsed = " ".join(text.split())
    understood: list[Operation] = []
    unknown: list[str] = []
    for clause in _SEPARATOR.split(collapsed):
        words = _normalise(clause)
        if not words:
            continue
        op = _parse_clause(words)
        if op is None:
            unknown.append(clause.strip())
        else:
            understood.append(op)
    if unknown:
        quoted = ", ".join(f'"{part}"' for part in unknown)
        message = f"could not understand {quoted}"
        if understood:
            message += f" (understood: {', '.join(op.label for op in understood)})"
        raise InvalidInput(
            f"{message}. Supported: {SUPPORTED_SUMMARY}; join steps with 'and', ',', ';' or 'then'",
            code="unknown_instruction",
        )
    if not understood:
        raise InvalidInput(
            f"no edit found in {collapsed!r}. Supported: {SUPPORTED_SUMMARY}",
            code="unknown_instruction",
        )
    if len(understood) > MAX_OPERATIONS:
        raise InvalidInput(
            f"the instruction has {len(understood)} steps; the limit is {MAX_OPERATIONS}",
            code="too_many_operations",
        )
    return understood


# ---------------------------------------------------------------------------------------------
# Operations
# ---------------------------------------------------------------------------------------------


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


def rotate(img: Image.Image, angle: float) -> Image.Image:
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
    _check_result_size(
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


def resize(img: Image.Image, width: int, height: int) -> Image.Image:
    """Resize to width x height; a 0 in one of them keeps the aspect ratio."""
    if width <= 0 and height <= 0:
        return img.copy()
    if width <= 0:
        width = max(1, math.floor(img.width * height / img.height + 0.5))
    elif height <= 0:
        height = max(1, math.floor(img.height * width / img.width + 0.5))
    _check_result_size(width, height)
    if (width, height) == img.size:
        return img.copy()
    return img.resize((width, height), Image.Resampling.LANCZOS)


def scale(img: Image.Image, factor: float) -> Image.Image:
    """Scale both sides by factor, rounding half up."""
    width = max(1, math.floor(img.width * factor + 0.5))
    height = max(1, math.floor(img.height * factor + 0.5))
    return resize(img, width, height)


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
        raise _out_of_range(
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


def apply_operation(img: Image.Image, op: Operation) -> Image.Image:
    """Apply one operation; RGB stays RGB and RGBA stays RGBA, except background removal."""
    img = _normalise_mode(img)
    p = op.params
    if op.name == "grayscale":
        return grayscale(img)
    if op.name == "sepia":
        return sepia(img)
    if op.name == "invert":
        return invert(img)
    if op.name == "rotate":
        return rotate(img, p["angle"])
    if op.name == "flip":
        return flip_vertical(img)
    if op.name == "mirror":
        return mirror(img)
    if op.name == "blur":
        return blur(img, p["radius"])
    if op.name == "sharpen":
        return sharpen(img, p["percent"])
    if op.name in _ENHANCERS:
        return adjust(img, op.name, p["percent"])
    if op.name == "crop_square":
        return crop_square(img)
    if op.name == "resize":
        return resize(img, int(p.get("width", 0)), int(p.get("height", 0)))
    if op.name == "scale":
        return scale(img, p["factor"])
    if op.name == "pixelate":
        return pixelate(img, int(p["block"]))
    if op.name == "posterize":
        return posterize(img, int(p["bits"]))
    if op.name == "remove_background":
        return remove_background(img)
    raise ValueError(f"unknown operation {op.name!r}")
