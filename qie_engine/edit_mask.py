"""The MASK input, or options.region, read into the mode "L" mask a local edit follows.

255 edits, 0 keeps, grey blends; the mask has the first image's size after EXIF orientation.
Every refusal here is an InvalidInput with its own code (qie_engine.errors).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from PIL import Image

from qie_engine.contract import EditOptions
from qie_engine.errors import (
    CorruptImage,
    InvalidInput,
    InvalidMask,
    MaskEmpty,
    MaskSizeMismatch,
    RegionOutsideImage,
    UnsupportedMediaType,
)
from qie_engine.image_codec import ImageInfo, ImageLimits, decode_image, inspect_image

Size = tuple[int, int]  # width, height


def check_mask_options(has_mask: bool, options: EditOptions) -> None:
    """Refuse what cannot go with a MASK, before any pixel is decoded."""
    if not has_mask:
        return
    if options.region is not None:
        raise InvalidInput(
            "send either a MASK or options.region, not both: a region is a rectangle mask",
            code="invalid_options",
        )
    if options.width is not None or options.height is not None:
        raise InvalidInput(
            "width and height give the model's output size; they cannot be combined with a MASK, "
            "whose edit keeps the input's size",
            code="invalid_options",
        )


def mask_channel(img: Image.Image) -> Image.Image:
    """The mode "L" mask an upload means: 255 edits, 0 keeps, grey blends.

    A mask with any transparency is read by its alpha (opaque edits); any other, including an
    RGBA file that is opaque everywhere (as many painting tools save one), by its luminance.
    """
    if img.mode == "RGBA":
        alpha = img.getchannel("A")
        if alpha.getextrema() != (255, 255):  # some pixel is not fully opaque
            return alpha
    return img.convert("L")


def inspect_mask(data: bytes, limits: ImageLimits) -> ImageInfo:
    """A MASK's header under the image limits, before any pixel is decoded (as inspect_image)."""
    if not data:
        raise InvalidMask("the MASK is empty; send a PNG, WebP or JPEG mask, white where to edit")
    with _said_of_the_mask():
        return inspect_image(data, limits)


def read_mask(data: bytes, image_size: Size, limits: ImageLimits) -> Image.Image:
    """Decode a MASK under the image limits, upright, as a mode "L" mask of the image's size."""
    inspect_mask(data, limits)
    with _said_of_the_mask():
        decoded, _ = decode_image(data, limits)
    mask = mask_channel(decoded)
    if mask.size != image_size:
        mask_w, mask_h = mask.size
        width, height = image_size
        raise MaskSizeMismatch(
            f"the mask is {mask_w}x{mask_h} but the image is {width}x{height} (after EXIF "
            f"orientation); draw the mask on the upright image at its full size, {width}x{height}"
        )
    if mask.getbbox() is None:
        raise MaskEmpty(
            "the mask marks nothing to edit: it is black (or transparent) everywhere; "
            "paint the part to change white (or opaque)"
        )
    return mask


@contextmanager
def _said_of_the_mask() -> Iterator[None]:
    """The image refusals, said of the MASK: one that is no image is invalid_mask; one over a
    limit keeps the limit's own code."""
    try:
        yield
    except (UnsupportedMediaType, CorruptImage) as exc:
        raise InvalidMask(f"the MASK could not be read as an image: {exc}") from None
    except InvalidInput as exc:
        raise InvalidInput(f"the MASK: {exc}", code=exc.code) from None


def check_region(region: tuple[int, int, int, int], image_size: Size) -> None:
    """options.region (x, y, width, height) must lie wholly inside the upright image."""
    x, y, w, h = region
    width, height = image_size
    if x + w > width or y + h > height:
        raise RegionOutsideImage(
            f"region ({x}, {y}, {w}, {h}) reaches past the {width}x{height} image (after EXIF "
            f"orientation); keep x + width <= {width} and y + height <= {height}"
        )


def region_mask(region: tuple[int, int, int, int], image_size: Size) -> Image.Image:
    """options.region (x, y, width, height) as a rectangle mask; it must lie wholly inside."""
    check_region(region, image_size)
    x, y, w, h = region
    mask = Image.new("L", image_size, 0)
    mask.paste(255, (x, y, x + w, y + h))
    return mask


def request_mask(
    data: bytes | None, options: EditOptions, image_size: Size, limits: ImageLimits
) -> Image.Image | None:
    """The request's mask: the MASK tensor's, options.region's rectangle, or None."""
    if data is not None:
        return read_mask(data, image_size, limits)
    if options.region is not None:
        return region_mask(options.region, image_size)
    return None


def covers_everything(mask: Image.Image) -> bool:
    """A mask that marks every pixel fully: the plain edit, with nothing to keep."""
    return mask.getextrema() == (255, 255)
