"""The classic editor's instruction parser: plain words in, a list of Operations out."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from qie_engine.classic_ops import DEFAULT_LIMITS, ClassicLimits, Operation, out_of_range
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

DEFAULT_BLUR = {None: 2.0, "slight": 1.0, "strong": 6.0}
DEFAULT_SHARPEN = {None: 150.0, "slight": 80.0, "strong": 300.0}
DEFAULT_ADJUST = {None: 25.0, "slight": 10.0, "strong": 50.0}
DEFAULT_PIXELATE = {None: 8, "slight": 4, "strong": 16}
DEFAULT_POSTERIZE = {None: 3, "slight": 4, "strong": 2}


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


Matcher = Callable[[str, "str | None", ClassicLimits], "Operation | None"]


def _simple(pattern: str, build: Callable[[], Operation]) -> Matcher:
    regex = re.compile(pattern)

    def match(text: str, intensity: str | None, _limits: ClassicLimits) -> Operation | None:
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


MAX_ROTATION = 3600.0


@dataclass
class _RotationWords:
    """The parts of a rotation clause: a sense, a number, and whether "degrees" followed it."""

    direction: str | None = None
    number: str | None = None
    degrees: bool = False


def _rotation_words(words: list[str]) -> _RotationWords | None:
    """Each part at most once, "degrees" right after the number; None for any other word."""
    found = _RotationWords()
    for i, word in enumerate(words):
        if word in _COUNTERCLOCKWISE + _CLOCKWISE and found.direction is None:
            found.direction = word
        elif _NUMBER.fullmatch(word) and found.number is None:
            found.number = word
        elif word == "degrees" and i > 0 and words[i - 1] == found.number and not found.degrees:
            found.degrees = True
        else:
            return None
    return found


def _match_rotate(text: str, intensity: str | None, _limits: ClassicLimits) -> Operation | None:
    if intensity is not None:
        return None
    words = text.split()
    if words in (["upside", "down"], ["rotate", "upside", "down"]):
        return _op("rotate", "rotate 180°", angle=180.0)
    verb = bool(words) and words[0] in _ROTATE_VERBS
    found = _rotation_words(words[1:] if verb else words)
    if found is None or (found.number is None and found.direction is None):
        return None
    # A bare "left" or "30" is too vague; a verb, "degrees" or a named sense makes it a rotation.
    if not verb and not found.degrees and found.direction in (None, "left", "right"):
        return None
    angle = float(found.number) if found.number is not None else 90.0
    if found.direction in _CLOCKWISE:
        angle = -angle
    if abs(angle) > MAX_ROTATION:
        raise out_of_range(
            f"rotation angle {_fmt(angle)} is out of range "
            f"(-{_fmt(MAX_ROTATION)} to {_fmt(MAX_ROTATION)} degrees)"
        )
    return _op("rotate", f"rotate {_fmt(angle)}°", angle=angle)


_BLUR = re.compile(
    r"(?:more )?(?:blur|blurred|blurry|blurrier|gaussian blur|soften|softer)"
    r"(?: radius)?(?: " + _NUM + r")?(?: (?:px|pixel|pixels))?"
)


def _match_blur(text: str, intensity: str | None, limits: ClassicLimits) -> Operation | None:
    m = _BLUR.fullmatch(text)
    if not m:
        return None
    if m.group(1) is not None:
        if intensity is not None:
            return None
        radius = float(m.group(1))
    else:
        radius = DEFAULT_BLUR[intensity]
    if not 0 < radius <= limits.max_blur_radius:
        raise out_of_range(
            f"blur radius {_fmt(radius)} is out of range "
            f"(above 0, at most {_fmt(limits.max_blur_radius)})"
        )
    return _op("blur", f"blur radius {_fmt(radius)}", radius=radius)


_SHARPEN = re.compile(r"sharpen|sharpened|sharper|more sharp|sharp|crisp|crisper|more crisp")


def _match_sharpen(text: str, intensity: str | None, limits: ClassicLimits) -> Operation | None:
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


def _match_adjust(text: str, intensity: str | None, limits: ClassicLimits) -> Operation | None:
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
    if not 0 < percent <= limits.max_adjust_percent or (sign < 0 and percent > 100):
        raise out_of_range(
            f"{prop} change of {_fmt(percent)}% is out of range "
            f"(up to +{_fmt(limits.max_adjust_percent)}% or down to -100%, and not 0)"
        )
    delta = sign * percent
    return _op(prop, f"{prop} {delta:+g}%", percent=delta)


_RESIZE_VERBS = "resize|resized|scale|scaled|size|resample|rescale"
_RESIZE = re.compile(rf"(?:{_RESIZE_VERBS}) (\d+)x(\d+)(?: (?:px|pixels))?")
_SCALE = re.compile(
    rf"(?:{_RESIZE_VERBS}|shrink|downscale|upscale|enlarge) {_NUM}(?: ?(%|x|times))?"
)


def _match_resize(text: str, intensity: str | None, limits: ClassicLimits) -> Operation | None:
    if intensity is not None:
        return None
    m = _RESIZE.fullmatch(text)
    if m:
        width, height = int(m.group(1)), int(m.group(2))
        limits.check_result_size(width, height)
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
    if not 0 < factor <= limits.max_scale_factor:
        raise out_of_range(
            f"scale factor {_fmt(factor)} is out of range "
            f"(above 0, at most {_fmt(limits.max_scale_factor)})"
        )
    return _op("scale", f"scale {_fmt(factor * 100)}%", factor=factor)


_PIXELATE = re.compile(
    r"pixelate(?: (?:block|blocks|block size|size))?(?: " + _NUM + r")?"
    r"(?: (?:px|pixel|pixels))?(?: (?:block|blocks))?"
)


def _match_pixelate(text: str, intensity: str | None, limits: ClassicLimits) -> Operation | None:
    m = _PIXELATE.fullmatch(text)
    if not m:
        return None
    if m.group(1) is not None:
        if intensity is not None:
            return None
        value = float(m.group(1))
        if not value.is_integer() or not 2 <= value <= limits.max_pixelate_block:
            raise out_of_range(
                f"pixelate block size {m.group(1)} must be a whole number from 2 to "
                f"{limits.max_pixelate_block}"
            )
        block = int(value)
    else:
        block = DEFAULT_PIXELATE[intensity]
    return _op("pixelate", f"pixelate {block} px", block=block)


_POSTERIZE = re.compile(r"posterize(?: " + _NUM + r")?(?: (?:bit|bits))?")


def _match_posterize(text: str, intensity: str | None, limits: ClassicLimits) -> Operation | None:
    m = _POSTERIZE.fullmatch(text)
    if not m:
        return None
    if m.group(1) is not None:
        if intensity is not None:
            return None
        value = float(m.group(1))
        if not value.is_integer() or not 1 <= value <= 8:
            raise out_of_range(f"posterize bits {m.group(1)} must be a whole number from 1 to 8")
        bits = int(value)
    else:
        bits = DEFAULT_POSTERIZE[intensity]
    return _op("posterize", f"posterize {bits} bit{'' if bits == 1 else 's'}", bits=bits)


_MATCHERS: tuple[Matcher, ...] = (
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


def _parse_clause(words: list[str], limits: ClassicLimits) -> Operation | None:
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
            op = matcher(text, intensity, limits)
            if op is not None:
                return op
    return None


def parse_instruction(text: str, limits: ClassicLimits = DEFAULT_LIMITS) -> list[Operation]:
    """Parse an instruction into operations; raise InvalidInput unless every part is understood."""
    collapsed = " ".join(text.split())
    understood: list[Operation] = []
    unknown: list[str] = []
    for clause in _SEPARATOR.split(collapsed):
        words = _normalise(clause)
        if not words:
            continue
        op = _parse_clause(words, limits)
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
    if len(understood) > limits.max_operations:
        raise InvalidInput(
            f"the instruction has {len(understood)} steps; the limit is {limits.max_operations}",
            code="too_many_operations",
        )
    return understood
