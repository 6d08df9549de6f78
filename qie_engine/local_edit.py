"""Local edits: a mask (or a region) says what to change, and only that part is edited.

The mask's box, with some context around it, is cropped from the first image and edited at the
editor's working size; the result is scaled back to the crop's size and blended into the
original under the feathered mask, at the original's full resolution. Where the feathered mask
is 0 the output holds the decoded input's pixels exactly. run_edit (editor.py) strings these
plain functions together: the mask (edit_mask), plan_local_edit, crop_request, stitch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image, ImageFilter

from qie_engine.contract import EditOptions, LocalEdit
from qie_engine.edit_request import EditRequest
from qie_engine.errors import MaskEmpty

Size = tuple[int, int]  # width, height
Box = tuple[int, int, int, int]  # left, top, right, bottom, as Pillow's crop takes it
WorkingSizeFn = Callable[[Size], Size]

# contract.EditOptions documents these defaults.
MIN_PADDING = 32  # context around the mask's box: a quarter of its longer side, at least this
MIN_FEATHER = 4  # the blend at the mask's edge: 1 % of the image's shorter side, at least this
FEATHER_FRACTION = 0.01
# The widest aspect a crop keeps: Qwen-Image's listed sizes go from 1:1 to 16:9 (and 9:16), so a
# thin box is widened across its short side, within the image, rather than edited as a strip.
MAX_CROP_ASPECT = 16 / 9


# --- the crop ------------------------------------------------------------------------------------


def default_padding(box: Box) -> int:
    """A quarter of the box's longer side, at least MIN_PADDING."""
    longer = max(box[2] - box[0], box[3] - box[1])
    return max(MIN_PADDING, math.ceil(longer / 4))


def default_feather(image_size: Size) -> int:
    """1 % of the image's shorter side, at least MIN_FEATHER."""
    return max(MIN_FEATHER, round(min(image_size) * FEATHER_FRACTION))


def feather_reach(feather: int) -> int:
    """How far the blend reaches past the mask's edge (half the feather) and a pixel more."""
    return math.ceil(feather / 2) + 1 if feather else 0


def _grow(start: int, end: int, length: int, limit: int) -> tuple[int, int]:
    """[start, end) grown about its centre to `length` (at most `limit`), kept within [0, limit)."""
    length = min(length, limit)
    extra = length - (end - start)
    if extra <= 0:
        return start, end
    start = min(max(0, start - extra // 2), limit - length)
    return start, start + length


def crop_box(box: Box, padding: int, image_size: Size) -> Box:
    """The box plus padding, clamped to the image, widened to at most MAX_CROP_ASPECT.

    Widening adds context across the short side only (centred on the box, shifted inward at the
    image's edges); an image that is itself thinner than that keeps its own aspect.
    """
    width, height = image_size
    left, top = max(0, box[0] - padding), max(0, box[1] - padding)
    right, bottom = min(width, box[2] + padding), min(height, box[3] + padding)
    crop_w, crop_h = right - left, bottom - top
    if crop_w > crop_h * MAX_CROP_ASPECT:
        top, bottom = _grow(top, bottom, math.ceil(crop_w / MAX_CROP_ASPECT), height)
    elif crop_h > crop_w * MAX_CROP_ASPECT:
        left, right = _grow(left, right, math.ceil(crop_h / MAX_CROP_ASPECT), width)
    return left, top, right, bottom


@dataclass(frozen=True)
class LocalPlan:
    """Where a local edit crops, the size the editor edits the crop at, and how it blends."""

    crop: Box
    working_size: Size
    padding: int
    feather: int

    @property
    def crop_size(self) -> Size:
        return self.crop[2] - self.crop[0], self.crop[3] - self.crop[1]

    def describe(self) -> LocalEdit:
        left, top = self.crop[:2]
        return LocalEdit(
            crop=(left, top, *self.crop_size),
            working_size=self.working_size,
            padding=self.padding,
            feather=self.feather,
        )


def plan_local_edit(
    mask: Image.Image, options: EditOptions, working_size: WorkingSizeFn
) -> LocalPlan:
    """The crop (the mask's box, padded) and the editor's working size for it.

    The padding is at least the feather's reach, so the whole blend lies inside the crop.
    """
    box = mask.getbbox()
    if box is None:
        raise MaskEmpty("the mask marks nothing to edit")
    feather = options.mask_feather
    if feather is None:
        feather = default_feather(mask.size)
    asked = options.mask_padding
    if asked is None:
        asked = default_padding(box)
    padding = max(asked, feather_reach(feather))
    left, top, right, bottom = crop = crop_box(box, padding, mask.size)
    working = working_size((right - left, bottom - top))
    return LocalPlan(crop=crop, working_size=working, padding=padding, feather=feather)


# --- the edit and the blend ----------------------------------------------------------------------


def crop_request(request: EditRequest, plan: LocalPlan) -> EditRequest:
    """The request the editor runs: the first image's crop at the working size; any other
    images (a Plus model's references) stay whole."""
    crop = request.images[0].crop(plan.crop)
    if crop.size != plan.working_size:
        crop = crop.resize(plan.working_size, Image.Resampling.LANCZOS)
    return dataclasses.replace(
        request,
        images=[crop, *request.images[1:]],
        mask=None,
        working_size=plan.working_size,
    )


def feather_mask(mask: Image.Image, feather: int) -> Image.Image:
    """The mask with its edges ramped over `feather` pixels, centred on the edge (a box blur)."""
    if feather == 0:
        return mask
    return mask.filter(ImageFilter.BoxBlur(feather / 2))


def _same_mode(edited: Image.Image, original: Image.Image) -> tuple[Image.Image, Image.Image]:
    """Edited and original in one mode: a transparent original keeps its alpha under an opaque
    edit, and an edit that added transparency (classic's background removal) keeps it."""
    if edited.mode == original.mode:
        return edited, original
    if original.mode == "RGBA" and edited.mode == "RGB":
        edited = edited.convert("RGBA")
        edited.putalpha(original.getchannel("A"))
        return edited, original
    if edited.mode == "RGBA":
        return edited, original.convert("RGBA")
    return edited.convert(original.mode), original


def stitch(
    original: Image.Image, edited: Image.Image, mask: Image.Image, plan: LocalPlan
) -> Image.Image:
    """The edited crop, scaled back to the crop's size, blended into the original under the
    feathered mask; where that mask is 0 the original's pixels are kept exactly."""
    if edited.size != plan.crop_size:
        edited = edited.resize(plan.crop_size, Image.Resampling.LANCZOS)
    edited, base = _same_mode(edited, original.crop(plan.crop))
    out = original.convert(base.mode) if base.mode != original.mode else original.copy()
    out.paste(edited, plan.crop[:2], feather_mask(mask.crop(plan.crop), plan.feather))
    return out


def at_size(image: Image.Image, size: Size) -> Image.Image:
    """The image resized (LANCZOS) to `size`; as it is when it has that size already."""
    return image if image.size == size else image.resize(size, Image.Resampling.LANCZOS)
