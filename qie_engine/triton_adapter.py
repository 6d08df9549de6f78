"""Serving one decoupled Triton request with an Editor: progress responses, then the result.

`pb_utils` (triton_python_backend_utils) is passed in, so this module imports without Triton.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import numpy as np

from qie_engine.contract import (
    INPUT_DESCRIBE,
    INPUT_IMAGES,
    INPUT_MASK,
    INPUT_NEGATIVE_PROMPT,
    INPUT_OPTIONS,
    INPUT_PROMPT,
    OUTPUT_EVENT,
    OUTPUT_IMAGE,
    ProgressEvent,
)
from qie_engine.edit_request import RawEdit
from qie_engine.editor import Editor, run_edit
from qie_engine.errors import Cancelled, EngineError, InvalidInput

log = logging.getLogger("qie_engine.triton")


OUTCOMES = ("completed", "cancelled", "refused", "failed")
# A run stopped because the server is stopping: retryable, so unavailable rather than cancelled.
SHUTTING_DOWN = "[model_unavailable] the model server is shutting down; retry the edit shortly"


class ServedCounts:
    """What this model instance did: steps run, and edit requests by how they ended.

    Part of its DESCRIBE answer (`served`), so a client can see what the model itself did
    (e.g. that a cancel stopped it within a step) without reading log lines. Plain counters in
    the instance's own process: nothing to send anywhere while an edit runs.
    """

    def __init__(self) -> None:
        self.steps = 0
        self.outcomes = dict.fromkeys(OUTCOMES, 0)

    def as_dict(self) -> dict[str, int]:
        return {"steps": self.steps, **self.outcomes}


def error_message(exc: EngineError) -> str:
    """Triton error text: `[code] message`, so clients recover the stable code."""
    return f"[{exc.code}] {exc}"


class RequestAdapter:
    """Wraps pb_utils for one editor; `serve` never raises."""

    def __init__(self, editor: Editor, pb_utils: Any) -> None:
        self.editor = editor
        self.pb = pb_utils
        self.served = ServedCounts()
        self.stopping = threading.Event()

    def stop(self) -> None:
        """The server is shutting down: a running edit stops at the end of its step (as on a
        cancel) and answers model_unavailable, so that tritonserver can exit at once."""
        self.stopping.set()

    def _bytes_input(self, request: Any, name: str) -> list[bytes] | None:
        tensor = self.pb.get_input_tensor_by_name(request, name)
        if tensor is None:
            return None
        return [bytes(item) for item in np.asarray(tensor.as_numpy(), dtype=object).reshape(-1)]

    def _single(self, request: Any, name: str) -> bytes | None:
        values = self._bytes_input(request, name)
        if not values:
            return None
        if len(values) != 1:
            raise InvalidInput(f"{name} must hold exactly one element, got {len(values)}")
        return values[0]

    def _event_tensor(self, payload: dict[str, Any]) -> Any:
        data = np.array([json.dumps(payload).encode()], dtype=object)
        return self.pb.Tensor(OUTPUT_EVENT, data)

    def _error(self, message: str, code: Any) -> Any:
        return self.pb.InferenceResponse(error=self.pb.TritonError(message, code))

    def serve(self, request: Any) -> None:
        sender = request.get_response_sender()
        request_id = request.request_id() or "-"
        traced = {"request_id": request_id}
        started = time.perf_counter()
        outcome = "failed"
        try:
            response = self._run(request, sender)
        except InvalidInput as exc:
            log.info("request %s refused: %s", request_id, exc, extra=traced)
            response = self._error(error_message(exc), self.pb.TritonError.INVALID_ARG)
            outcome = "refused"
        except Cancelled as exc:
            response = self._stopped(exc, request_id)
            outcome = "cancelled"
        except EngineError as exc:
            log.error("request %s failed: %s", request_id, exc, extra=traced)
            response = self._error(error_message(exc), self.pb.TritonError.INTERNAL)
        except Exception as exc:
            log.exception("request %s crashed", request_id, extra=traced)
            message = f"[internal] the edit failed ({type(exc).__name__}); see the server log"
            response = self._error(message, self.pb.TritonError.INTERNAL)
        else:
            elapsed = time.perf_counter() - started
            log.info("request %s done in %.3fs", request_id, elapsed, extra=traced)
            outcome = "completed"
        self._finish(request, sender, response, outcome)

    def _stopped(self, exc: Cancelled, request_id: str) -> Any:
        """A cancelled edit's answer; when the server is stopping, a retryable unavailable."""
        traced = {"request_id": request_id}
        if not self.stopping.is_set():
            log.info("request %s cancelled: %s", request_id, exc, extra=traced)
            return self._error(error_message(exc), self.pb.TritonError.CANCELLED)
        log.warning("request %s stopped: %s", request_id, SHUTTING_DOWN, extra=traced)
        return self._error(SHUTTING_DOWN, self.pb.TritonError.UNAVAILABLE)

    def _finish(self, request: Any, sender: Any, response: Any, outcome: str) -> None:
        if not self._describes(request):
            self.served.outcomes[outcome] += 1
        try:
            sender.send(response, flags=self.pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        except Exception:  # the client is gone; nothing more to tell it
            log.info("request %s: final response not delivered", request.request_id() or "-")

    def _describes(self, request: Any) -> bool:
        describe = self.pb.get_input_tensor_by_name(request, INPUT_DESCRIBE)
        return describe is not None and bool(np.asarray(describe.as_numpy()).reshape(-1)[0])

    def _run(self, request: Any, sender: Any) -> Any:
        if self._describes(request):
            payload = {
                "type": "describe",
                "model": self.editor.name,
                **self.editor.describe(),
                "served": self.served.as_dict(),
            }
            return self.pb.InferenceResponse(output_tensors=[self._event_tensor(payload)])
        images = self._bytes_input(request, INPUT_IMAGES)
        prompt = self._single(request, INPUT_PROMPT)
        if not images:
            raise InvalidInput(f"{INPUT_IMAGES} is required: send 1 or more encoded images")
        if prompt is None:
            raise InvalidInput(f"{INPUT_PROMPT} is required")

        def on_progress(event: ProgressEvent) -> None:
            self.served.steps += 1
            if request.is_cancelled():
                return
            response = self.pb.InferenceResponse(
                output_tensors=[self._event_tensor(event.model_dump(mode="json"))]
            )
            sender.send(response)

        raw = RawEdit(
            images=images,
            prompt=prompt,
            negative_prompt=self._single(request, INPUT_NEGATIVE_PROMPT),
            options=self._single(request, INPUT_OPTIONS),
            mask=self._single(request, INPUT_MASK),
        )

        def stop_now() -> bool:
            return self.stopping.is_set() or bool(request.is_cancelled())

        data, meta = run_edit(self.editor, raw, on_progress, stop_now)
        image = self.pb.Tensor(OUTPUT_IMAGE, np.array([data], dtype=object))
        return self.pb.InferenceResponse(
            output_tensors=[self._event_tensor(meta.model_dump(mode="json")), image]
        )
