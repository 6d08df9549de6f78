"""Generators the OpenAPI fuzzer needs where a schema cannot say enough (loaded by
tests/integration/test_openapi_fuzz.py through SCHEMATHESIS_HOOKS).

- An image part must be a real JPEG, PNG or WebP: the schema names the media types, and these
  strategies make small real files of each (random bytes stay in the negative cases).
- classic_edit, the fast model the fuzzed gateway uses, edits only the instructions of its
  vocabulary (docs/classic-vocabulary.md); a valid request's prompt is drawn from it.
- An Idempotency-Key names one request: reused with another body it is refused (422, tested in
  test_gateway_flows.py). The fuzzer cannot know which keys it used, so each valid request that
  sends one gets a key of its own.
- A batch takes 2 or more images, or 1 with `variations`, which classic_edit (no seed) refuses:
  a valid batch gets at least 2 images and no `variations` (both refusals are tested in
  test_batches.py).
- A mask or a region must fit the image it goes with (its size, its bounds), which a schema
  cannot say: a valid request carries neither (tests/integration/test_local_edits.py sends them),
  and output_size=input, which keeps the input's size, goes without width and height.
"""

from __future__ import annotations

import uuid
from typing import Any

import schemathesis
from hypothesis import strategies as st

from tests import images

LOCAL_EDIT = ("mask", "region")
SIZES = ("width", "height")


def _without_local_edits(body: dict[str, Any]) -> None:
    """No mask or region, in the form or its options JSON; no output_size beside a size."""
    parts = [body, *([body["options"]] if isinstance(body.get("options"), dict) else [])]
    for part in parts:
        for name in LOCAL_EDIT:
            part.pop(name, None)
    if any(part.get(name) is not None for part in parts for name in SIZES):
        for part in parts:
            part.pop("output_size", None)


INSTRUCTIONS = ["invert", "make it black and white", "sepia", "mirror", "rotate 90 degrees"]


@st.composite
def picture(draw: st.DrawFn, fmt: str) -> bytes:
    width, height = draw(st.integers(8, 48)), draw(st.integers(8, 48))
    return images.encode(images.colourful(width, height), fmt)


# The image property is an array of file parts (repeated parts); classic_edit takes one.
for mime, fmt in (("image/png", "PNG"), ("image/jpeg", "JPEG"), ("image/webp", "WEBP")):
    schemathesis.openapi.media_type(mime, st.lists(picture(fmt), min_size=1, max_size=1))


@schemathesis.hook
def map_case(context: schemathesis.HookContext, case: schemathesis.Case) -> schemathesis.Case:
    meta = case.meta
    body: Any = case.body
    positive = meta is not None and meta.generation.mode.is_positive
    if positive and isinstance(body, dict) and isinstance(body.get("prompt"), str):
        body["prompt"] = INSTRUCTIONS[len(body["prompt"]) % len(INSTRUCTIONS)]
    if positive and isinstance(body, dict):
        _without_local_edits(body)
    if positive and isinstance(body, dict) and case.operation.path == "/batches":
        body.pop("variations", None)
        pictures = body.get("images") or []
        body["images"] = [*pictures, images.png_bytes(), images.png_bytes()][:2]
    if positive and case.headers:
        for name in list(case.headers):
            if name.lower() == "idempotency-key":
                case.headers[name] = uuid.uuid4().hex
    return case
