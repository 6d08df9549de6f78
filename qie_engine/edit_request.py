"""Turning raw tensor values into a checked EditRequest, before any model work."""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image

from qie_engine import limits
from qie_engine.contract import EditOptions, parse_options
from qie_engine.edit_mask import check_mask_options, request_mask
from qie_engine.errors import InvalidInput
from qie_engine.image_codec import ImageInfo, ImageLimits, decode_image


@dataclass(frozen=True)
class RequestLimits:
    image: ImageLimits = field(default_factory=ImageLimits)
    max_prompt_chars: int = limits.MAX_PROMPT_CHARS
    max_images: int = 1


@dataclass(frozen=True)
class RawEdit:
    """One edit as it arrives: the tensors' bytes, before any check."""

    images: list[bytes]
    prompt: bytes | str
    negative_prompt: bytes | str | None = None
    options: bytes | str | None = None
    mask: bytes | None = None


@dataclass
class EditRequest:
    images: list[Image.Image]
    image_infos: list[ImageInfo]
    prompt: str
    negative_prompt: str | None
    options: EditOptions
    # What to edit in the first image (mode "L", its size: 255 edits, 0 keeps), from the MASK
    # tensor or options.region; None edits the whole image.
    mask: Image.Image | None = None
    # A local edit's working size: the first image is its crop, already at this size, and the
    # result must have it too. None: the editor's own size, from the options.
    working_size: tuple[int, int] | None = None


def check_prompt(prompt: str, max_chars: int, *, name: str = "prompt") -> str:
    """Refuse empty or over-long prompts; the model would silently truncate them."""
    if not prompt.strip():
        raise InvalidInput(f"{name} is empty; describe the edit, e.g. 'make it black and white'")
    if len(prompt) > max_chars:
        raise InvalidInput(
            f"{name} is {len(prompt)} characters; the limit is {max_chars}",
            code="prompt_too_long",
        )
    return prompt.strip()


def check_image_count(count: int, max_images: int) -> None:
    if not 1 <= count <= max_images:
        allowed = "exactly 1 image" if max_images == 1 else f"1 to {max_images} images"
        raise InvalidInput(f"this model takes {allowed}; got {count}", code="image_count")


def _text(value: bytes | str, name: str) -> str:
    if isinstance(value, str):
        return value
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"{name} is not valid UTF-8") from None


def parse_request(raw: RawEdit, limits: RequestLimits) -> EditRequest:
    """Check everything cheap first (counts, text, options, headers), then decode the pixels."""
    images, negative_prompt = raw.images, raw.negative_prompt
    check_image_count(len(images), limits.max_images)
    prompt_text = check_prompt(_text(raw.prompt, "prompt"), limits.max_prompt_chars)
    negative = None
    if negative_prompt is not None and _text(negative_prompt, "negative_prompt").strip():
        negative = check_prompt(
            _text(negative_prompt, "negative_prompt"),
            limits.max_prompt_chars,
            name="negative_prompt",
        )
    try:
        parsed_options = parse_options(raw.options)
    except ValueError as exc:
        raise InvalidInput(str(exc), code="invalid_options") from None
    check_mask_options(raw.mask is not None, parsed_options)
    decoded = [decode_image(data, limits.image) for data in images]
    first = decoded[0][0]
    return EditRequest(
        images=[img for img, _ in decoded],
        image_infos=[info for _, info in decoded],
        prompt=prompt_text,
        negative_prompt=negative,
        options=parsed_options,
        mask=request_mask(raw.mask, parsed_options, first.size, limits.image),
    )
