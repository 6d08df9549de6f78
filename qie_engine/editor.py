"""The interface every model implements, and the one function that runs an edit end to end."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from PIL import Image

from qie_engine.contract import OutputSize, ProgressEvent, ResultMeta
from qie_engine.edit_mask import covers_everything
from qie_engine.edit_request import EditRequest, RawEdit, RequestLimits, parse_request
from qie_engine.errors import Cancelled
from qie_engine.image_codec import encode_image
from qie_engine.local_edit import at_size, crop_request, plan_local_edit, stitch

ProgressFn = Callable[[ProgressEvent], None]
CancelledFn = Callable[[], bool]


@dataclass
class EditOutcome:
    """What an editor returns: the image and metadata, before encoding."""

    image: Image.Image
    meta: ResultMeta


class Editor(Protocol):
    name: str
    limits: RequestLimits

    def edit(
        self, request: EditRequest, on_progress: ProgressFn, is_cancelled: CancelledFn
    ) -> EditOutcome: ...

    def working_size(self, crop: tuple[int, int]) -> tuple[int, int]:
        """The width and height a local edit's crop of this size is edited at."""
        ...

    def describe(self) -> dict[str, Any]:
        """Static facts for clients: variant, defaults, vocabulary, random weights."""
        ...


def edit_image(
    editor: Editor, request: EditRequest, on_progress: ProgressFn, is_cancelled: CancelledFn
) -> EditOutcome:
    """The editor's edit: of the mask's crop only where a mask keeps something, and at the
    input's size where a mask or options.output_size asks for it."""
    mask = request.mask
    if mask is not None and not covers_everything(mask):
        return edit_locally(editor, request, mask, on_progress, is_cancelled)
    outcome = editor.edit(request, on_progress, is_cancelled)
    # A mask that marks everything is the plain edit, at the size a masked edit keeps.
    if mask is not None or request.options.output_size is OutputSize.INPUT:
        outcome.image = at_size(outcome.image, request.images[0].size)
        outcome.meta.width, outcome.meta.height = outcome.image.size
    return outcome


def edit_locally(
    editor: Editor,
    request: EditRequest,
    mask: Image.Image,
    on_progress: ProgressFn,
    is_cancelled: CancelledFn,
) -> EditOutcome:
    """Edit the mask's crop at the editor's working size, then blend it into the original."""
    started = time.perf_counter()
    plan = plan_local_edit(mask, request.options, editor.working_size)
    cropped = crop_request(request, plan)
    prepared_s = time.perf_counter() - started
    outcome = editor.edit(cropped, on_progress, is_cancelled)
    if is_cancelled():
        raise Cancelled("the request was cancelled")
    stitching = time.perf_counter()
    image = stitch(request.images[0], outcome.image, mask, plan)
    meta = outcome.meta
    meta.width, meta.height = image.size
    meta.local = plan.describe()
    meta.timings["stitch_s"] = round(prepared_s + time.perf_counter() - stitching, 4)
    return EditOutcome(image=image, meta=meta)


def run_edit(
    editor: Editor, raw: RawEdit, on_progress: ProgressFn, is_cancelled: CancelledFn
) -> tuple[bytes, ResultMeta]:
    """Validate, edit and encode; raises InvalidInput, Cancelled or EngineError."""
    started = time.perf_counter()
    request = parse_request(raw, editor.limits)
    decoded = time.perf_counter()
    outcome = edit_image(editor, request, on_progress, is_cancelled)
    if is_cancelled():
        raise Cancelled("the request was cancelled")
    edited = time.perf_counter()
    data = encode_image(outcome.image, request.options.output_format)
    done = time.perf_counter()
    meta = outcome.meta
    meta.timings = {
        "decode_s": round(decoded - started, 4),
        "edit_s": round(edited - decoded, 4),
        "encode_s": round(done - edited, 4),
        "total_s": round(done - started, 4),
        **meta.timings,
    }
    return data, meta
