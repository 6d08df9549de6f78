"""The interface every model implements, and the one function that runs an edit end to end."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from PIL import Image

from qie_engine.contract import ProgressEvent, ResultMeta
from qie_engine.edit_request import EditRequest, RawEdit, RequestLimits, parse_request
from qie_engine.errors import Cancelled
from qie_engine.image_codec import encode_image

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

    def describe(self) -> dict[str, Any]:
        """Static facts for clients: variant, defaults, vocabulary, random weights."""
        ...


def run_edit(
    editor: Editor, raw: RawEdit, on_progress: ProgressFn, is_cancelled: CancelledFn
) -> tuple[bytes, ResultMeta]:
    """Validate, edit and encode; raises InvalidInput, Cancelled or EngineError."""
    started = time.perf_counter()
    request = parse_request(raw, editor.limits)
    decoded = time.perf_counter()
    outcome = editor.edit(request, on_progress, is_cancelled)
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
