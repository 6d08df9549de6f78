"""run_edit: validate, edit, encode, with timings, and nothing encoded for a cancelled request."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pytest
from PIL import Image

from qie_engine import editor as editor_module
from qie_engine.classic_editor import ClassicEditor
from qie_engine.contract import ProgressEvent, ResultMeta
from qie_engine.edit_request import EditRequest, RawEdit, RequestLimits
from qie_engine.editor import CancelledFn, EditOutcome, ProgressFn, run_edit
from qie_engine.errors import Cancelled, InvalidInput
from tests import images
from tests.engine.recorders import ProgressLog, spy


class RecordingEditor:
    """Returns the first image unchanged and remembers what it was asked."""

    name = "recording"

    def __init__(self, limits: RequestLimits | None = None) -> None:
        self.limits = limits or RequestLimits()
        self.requests: list[EditRequest] = []

    def edit(
        self, request: EditRequest, on_progress: ProgressFn, is_cancelled: CancelledFn
    ) -> EditOutcome:
        self.requests.append(request)
        on_progress(ProgressEvent(step=1, total=1, elapsed_s=0.0))
        image = request.images[0]
        meta = ResultMeta(
            model=self.name,
            seed=None,
            steps=1,
            width=image.width,
            height=image.height,
            format=request.options.output_format,
            random_weights=False,
            timings={"denoise_s": 0.5},
        )
        return EditOutcome(image=image, meta=meta)

    def describe(self) -> dict[str, Any]:
        return {}


def run(editor: Any, data: bytes, prompt: str = "invert", **options: Any) -> tuple[bytes, Any]:
    progress = ProgressLog()
    raw = RawEdit([data], prompt, options=json.dumps(options))
    return run_edit(editor, raw, progress, progress.is_cancelled)


def test_result_is_encoded_with_timings_added_to_the_editors_own() -> None:
    data, meta = run(RecordingEditor(), images.png_bytes(), output_format="webp")
    assert images.decode(data).format == "WEBP"
    assert {"decode_s", "edit_s", "encode_s", "total_s"} <= set(meta.timings)
    assert meta.timings["denoise_s"] == 0.5
    assert meta.timings["total_s"] >= meta.timings["edit_s"]


def test_invalid_input_never_reaches_the_editor() -> None:
    editor = RecordingEditor()
    with pytest.raises(InvalidInput):
        run(editor, images.tiff_bytes())
    with pytest.raises(InvalidInput):
        run(editor, images.png_bytes(), prompt=" ")
    assert editor.requests == []


def test_editor_limits_apply() -> None:
    editor = RecordingEditor(RequestLimits(max_prompt_chars=5))
    with pytest.raises(InvalidInput) as info:
        run(editor, images.png_bytes(), prompt="invert it")
    assert info.value.code == "prompt_too_long"


def test_cancel_arriving_after_the_last_step_still_returns_no_image(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    encodes = spy(monkeypatch, editor_module, "encode_image")
    progress = ProgressLog().cancel_after(1)  # true once the only step reported
    with pytest.raises(Cancelled):
        run_edit(
            RecordingEditor(),
            RawEdit([images.png_bytes()], "invert"),
            progress,
            progress.is_cancelled,
        )
    assert encodes.count == 0


@pytest.mark.parametrize("output_format", ["png", "webp", "jpeg"])
def test_output_never_carries_the_uploads_exif_or_icc(output_format: str) -> None:
    data, _ = run(ClassicEditor(), images.with_exif_and_icc(), output_format=output_format)
    out = Image.open(io.BytesIO(data))
    assert "exif" not in out.info
    assert "icc_profile" not in out.info
    assert dict(out.getexif()) == {}


def test_exif_rotated_upload_is_edited_upright() -> None:
    data, meta = run(ClassicEditor(), images.exif_orientation_6(64, 48, "PNG"), prompt="invert")
    out = images.decode(data).convert("RGB")
    assert out.size == (48, 64)
    assert (meta.width, meta.height) == (48, 64)
    arr = np.asarray(out)
    half = images.MARK // 2
    # Inverted: the red mark is cyan now, in the top-right corner; the black is white.
    assert tuple(arr[half, 48 - 1 - half]) == (0, 255, 255)
    assert tuple(arr[half, half]) == (255, 255, 255)
