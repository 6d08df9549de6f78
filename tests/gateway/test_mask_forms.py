"""Local edits at the form: a mask part or a region field, checked against the first image's
upright size before a job exists (the model reads them again with the same functions).

tests/integration/test_local_edits.py sends the same through a real gateway and Triton.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from gateway.errors import ApiError
from gateway.http.batch_forms import BatchForm, BatchFormReader
from gateway.http.security import RateLimiter
from gateway.jobs.submission import Refusal, Submission
from gateway.triton.registry import ModelInfo
from qie_engine.errors import InvalidInput
from tests import images
from tests.gateway.test_validation import CALLER, form, read, reader, refused, upload

SIZE = (64, 48)  # tests/images.py's default picture
BOX = (8, 8, 40, 32)


def options_of(sub: Submission) -> dict[str, Any]:
    return dict(json.loads(sub.request.options_json))


# --- accepted ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mask",
    [
        images.mask_png(SIZE, BOX),
        images.alpha_mask_png(SIZE, BOX),
        images.mask_png(SIZE, BOX, value=128),
    ],
    ids=["greyscale", "alpha", "grey-blend"],
)
def test_a_mask_of_the_image_size_travels_with_the_job_untouched(mask: bytes) -> None:
    sub = read(form(mask=upload(mask, "mask.png"), mask_padding="16", mask_feather="2"))
    assert sub.request.mask == mask
    assert options_of(sub) == {"mask_padding": 16, "mask_feather": 2, "output_format": "png"}


def test_a_region_field_becomes_options_region() -> None:
    sub = read(form(region=" 8, 8,32 ,24 "))
    assert sub.request.mask is None
    assert options_of(sub)["region"] == [8, 8, 32, 24]


def test_a_region_in_the_options_json_and_output_size_input_are_accepted() -> None:
    sub = read(form(options=json.dumps({"region": [0, 0, 64, 48], "output_size": "input"})))
    assert options_of(sub)["region"] == [0, 0, 64, 48]
    assert options_of(sub)["output_size"] == "input"


def test_the_mask_of_an_exif_rotated_photo_has_its_upright_size() -> None:
    rotated = images.exif_orientation_6(64, 48)  # stored 64x48, shown 48x64
    upright = images.mask_png((48, 64), (4, 4, 20, 40))
    sub = read(form(rotated, mask=upload(upright)))
    assert sub.request.mask == upright
    error = refused(form(rotated, mask=upload(images.mask_png((64, 48), BOX))))
    assert error.code == "mask_size_mismatch" and "48x64" in error.message


def test_a_file_field_left_empty_by_a_browser_is_no_mask() -> None:
    sub = read(form(mask=upload(b"", "")))
    assert sub.request.mask is None


def test_the_mask_is_part_of_the_idempotency_hash() -> None:
    caller = CALLER.__class__("o", "r", idempotency_key="k")
    plain = read(form(), caller)
    masked = read(form(mask=upload(images.mask_png(SIZE, BOX))), caller)
    other = read(form(mask=upload(images.mask_png(SIZE, (0, 0, 8, 8)))), caller)
    assert len({plain.request_hash, masked.request_hash, other.request_hash}) == 3


# --- refused -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "code", "says"),
    [
        ({"mask": images.mask_png((32, 24), BOX)}, "mask_size_mismatch", "64x48"),
        ({"mask": images.mask_png(SIZE, BOX, value=0)}, "mask_empty", "marks nothing"),
        ({"mask": b"GIF89a not a mask"}, "invalid_mask", "could not be read"),
        ({"mask": b"", "name": "mask.png"}, "invalid_mask", "empty"),
        ({"mask": images.truncated_png()}, "invalid_mask", "could not be read"),
        ({"region": "40,40,30,10"}, "region_outside_image", "x + width <= 64"),
        ({"region": "0,0,0,10"}, "invalid_options", "at least 1"),
        ({"region": "1,2,3"}, "invalid_options", "region"),
        ({"region": "a,b,c,d"}, "invalid_options", "region"),
        ({"region": "-1,0,4,4"}, "invalid_options", "region"),
    ],
    ids=[
        "wrong-size",
        "all-black",
        "not-an-image",
        "empty-file",
        "truncated",
        "region-outside",
        "region-zero-width",
        "region-three-numbers",
        "region-not-numbers",
        "region-negative",
    ],
)
def test_a_bad_mask_or_region_is_422_saying_what_to_do(
    fields: dict[str, Any], code: str, says: str
) -> None:
    values: dict[str, Any] = {}
    if "mask" in fields:
        values["mask"] = upload(fields["mask"], fields.get("name", "mask.png"))
    if "region" in fields:
        values["region"] = fields["region"]
    error = refused(form(**values))
    assert (error.status, error.code) == (422, code)
    assert says in error.message


@pytest.mark.parametrize(
    "fields",
    [
        {"region": "0,0,8,8"},
        {"width": "256"},
        {"options": json.dumps({"height": 256})},
    ],
    ids=["and-region", "and-width", "and-height"],
)
def test_a_mask_goes_with_neither_a_region_nor_an_output_size(fields: dict[str, Any]) -> None:
    error = refused(form(mask=upload(images.mask_png(SIZE, BOX)), **fields))
    assert (error.status, error.code) == (422, "invalid_options")


def test_a_region_goes_without_width_and_height() -> None:
    error = refused(form(region="0,0,8,8", width="256"))
    assert (error.status, error.code) == (422, "invalid_options")


def test_a_mask_over_the_pixel_limit_keeps_the_limits_code() -> None:
    big = images.mask_png((80, 80), (0, 0, 8, 8))
    error = refused(form(mask=upload(big)), MAX_PIXELS=64 * 64)
    assert (error.status, error.code) == (422, "image_too_large")
    assert "the MASK" in error.message


# --- batches: variations of one image only -------------------------------------------------------


def read_batch(**fields: Any) -> list[Submission | Refusal]:
    values: dict[str, Any] = {"prompt": "a", "model": "seeded", **fields}
    values.setdefault("images", [upload(images.png_bytes())])
    form_reader = reader()
    form_reader.models = {"seeded": ModelInfo("seeded", ready=True, facts={"presets": ["fast"]})}
    batch_reader = BatchFormReader(form_reader, RateLimiter("1000/minute", "30/minute"))
    return asyncio.run(batch_reader.read(BatchForm.model_validate(values), CALLER)).entries


def test_variations_of_one_image_share_its_mask() -> None:
    mask = images.mask_png(SIZE, BOX)
    entries = read_batch(variations="3", seed="5", mask=upload(mask))
    assert all(isinstance(e, Submission) and e.request.mask == mask for e in entries)
    assert [options_of(e)["seed"] for e in entries if isinstance(e, Submission)] == [5, 6, 7]


def test_a_bad_mask_refuses_the_whole_batch_of_variations() -> None:
    with pytest.raises(InvalidInput) as error:
        read_batch(variations="2", mask=upload(images.mask_png((8, 8), (0, 0, 4, 4))))
    assert error.value.code == "mask_size_mismatch"


@pytest.mark.parametrize("fields", [{"region": "0,0,8,8"}, {"mask": "png"}], ids=["region", "mask"])
def test_a_batch_of_several_images_takes_no_mask_or_region(fields: dict[str, Any]) -> None:
    if "mask" in fields:
        fields = {"mask": upload(images.mask_png(SIZE, BOX))}
    two = [upload(images.png_bytes()), upload(images.png_bytes())]
    with pytest.raises(ApiError) as error:
        read_batch(images=two, **fields)
    assert error.value.code == "invalid_options" and "variations" in error.value.message
