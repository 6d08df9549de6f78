"""RequestAdapter with a stand-in pb_utils: progress responses, one final response, coded errors.

Triton's pb_utils only exists inside the Python-backend stub, so a small fake with the same
surface stands in for it here; tests/integration/test_triton_models.py runs the real one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from qie_engine.classic_editor import ClassicEditor
from qie_engine.contract import ProgressEvent
from qie_engine.edit_request import EditRequest, RequestLimits
from qie_engine.editor import CancelledFn, EditOutcome, ProgressFn
from qie_engine.errors import Cancelled, EngineError, InvalidInput
from qie_engine.triton_adapter import RequestAdapter, error_message
from tests import images

FINAL = 1


class FakeTritonError:
    INVALID_ARG = "INVALID_ARG"
    CANCELLED = "CANCELLED"
    INTERNAL = "INTERNAL"
    UNAVAILABLE = "UNAVAILABLE"

    def __init__(self, message: str, code: str = "UNKNOWN") -> None:
        self._message = message
        self.code = code

    def message(self) -> str:
        return self._message


@dataclass
class FakeTensor:
    name: str
    data: np.ndarray

    def as_numpy(self) -> np.ndarray:
        return self.data


@dataclass
class FakeResponse:
    output_tensors: list[FakeTensor] = field(default_factory=list)
    error: FakeTritonError | None = None

    def output(self, name: str) -> np.ndarray | None:
        found = [t.data for t in self.output_tensors if t.name == name]
        return found[0] if found else None

    @property
    def event(self) -> dict[str, Any]:
        data = self.output("EVENT")
        assert data is not None
        return dict(json.loads(data[0]))


class FakeSender:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[tuple[FakeResponse, int]] = []
        self.fail = fail

    def send(self, response: FakeResponse, flags: int = 0) -> None:
        if self.fail:
            raise RuntimeError("the client is gone")
        self.sent.append((response, flags))


class FakeRequest:
    def __init__(
        self,
        inputs: dict[str, np.ndarray],
        *,
        cancelled: Callable[[FakeSender], bool] = lambda _sender: False,
        sender: FakeSender | None = None,
    ) -> None:
        self.inputs = inputs
        self.sender = sender or FakeSender()
        self._cancelled = cancelled

    def get_response_sender(self) -> FakeSender:
        return self.sender

    def request_id(self) -> str:
        return "req-1"

    def is_cancelled(self) -> bool:
        return self._cancelled(self.sender)


class FakePbUtils:
    """The part of triton_python_backend_utils the adapter uses."""

    TRITONSERVER_RESPONSE_COMPLETE_FINAL = FINAL
    Tensor = FakeTensor
    InferenceResponse = FakeResponse
    TritonError = FakeTritonError

    @staticmethod
    def get_input_tensor_by_name(request: FakeRequest, name: str) -> FakeTensor | None:
        data = request.inputs.get(name)
        return None if data is None else FakeTensor(name, data)


def strings(*values: bytes | str) -> np.ndarray:
    return np.array([v.encode() if isinstance(v, str) else v for v in values], dtype=object)


def edit_inputs(
    prompt: str = "grayscale and mirror", image: bytes | None = None, **options: Any
) -> dict[str, np.ndarray]:
    inputs = {
        "IMAGES": strings(image if image is not None else images.png_bytes()),
        "PROMPT": strings(prompt),
    }
    if options:
        inputs["OPTIONS"] = strings(json.dumps(options))
    return inputs


def serve(request: FakeRequest, editor: Any = None) -> list[tuple[FakeResponse, int]]:
    adapter = RequestAdapter(editor or ClassicEditor(), FakePbUtils)
    adapter.serve(request)
    return request.sender.sent


def final_error(sent: list[tuple[FakeResponse, int]]) -> FakeTritonError:
    """The request ended with exactly one final response, and it is an error."""
    assert [flags for _, flags in sent][-1] == FINAL
    assert [flags for _, flags in sent].count(FINAL) == 1
    error = sent[-1][0].error
    assert error is not None
    return error


class RaisingEditor:
    """An editor whose edit raises the given exception."""

    name = "raising"
    limits = RequestLimits()

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def edit(
        self, request: EditRequest, on_progress: ProgressFn, is_cancelled: CancelledFn
    ) -> EditOutcome:
        on_progress(ProgressEvent(step=1, total=2, elapsed_s=0.0))
        raise self.exc

    def describe(self) -> dict[str, Any]:
        return {}


# --- success -----------------------------------------------------------------------------------


def test_edit_streams_progress_then_one_final_response_with_the_image() -> None:
    sent = serve(FakeRequest(edit_inputs("grayscale and mirror", images.png_bytes(40, 30))))
    assert [flags for _, flags in sent] == [0, 0, FINAL]
    progress = [response.event for response, _ in sent[:-1]]
    assert [(e["type"], e["step"], e["total"]) for e in progress] == [
        ("progress", 1, 2),
        ("progress", 2, 2),
    ]
    assert all(response.output("IMAGE") is None for response, _ in sent[:-1])
    final = sent[-1][0]
    assert final.error is None
    meta = final.event
    assert meta["type"] == "result"
    assert meta["operations"] == ["grayscale", "mirror"]
    image_tensor = final.output("IMAGE")
    assert image_tensor is not None
    img = images.decode(bytes(image_tensor[0]))
    assert (img.width, img.height) == (meta["width"], meta["height"]) == (40, 30)
    arr = np.asarray(img.convert("RGB")).astype(int)
    assert (arr[..., 0] == arr[..., 1]).all()


def test_describe_answers_with_the_model_facts_in_one_final_response() -> None:
    sent = serve(FakeRequest({"DESCRIBE": np.array([True])}))
    assert [flags for _, flags in sent] == [FINAL]
    response = sent[0][0]
    assert response.error is None
    assert response.output("IMAGE") is None
    facts = response.event
    assert facts["type"] == "describe"
    assert facts["model"] == "classic_edit"
    assert facts["variant"] == "classic"
    assert any(entry.startswith("grayscale") for entry in facts["vocabulary"])


def test_describe_false_is_an_ordinary_edit() -> None:
    sent = serve(FakeRequest({**edit_inputs("invert"), "DESCRIBE": np.array([False])}))
    assert sent[-1][0].event["type"] == "result"


def test_options_and_negative_prompt_reach_the_editor() -> None:
    inputs = {**edit_inputs("invert", output_format="jpeg"), "NEGATIVE_PROMPT": strings("ugly")}
    sent = serve(FakeRequest(inputs))
    image_tensor = sent[-1][0].output("IMAGE")
    assert image_tensor is not None
    assert images.decode(bytes(image_tensor[0])).format == "JPEG"


# --- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("inputs", "code", "text"),
    [
        ({"PROMPT": strings("invert")}, "invalid_input", "IMAGES is required"),
        ({"IMAGES": strings(images.png_bytes())}, "invalid_input", "PROMPT is required"),
        (
            {"IMAGES": strings(images.png_bytes()), "PROMPT": strings("invert", "mirror")},
            "invalid_input",
            "exactly one",
        ),
        (edit_inputs(image=b"not an image"), "unsupported_media_type", "JPEG, PNG or WebP"),
        (edit_inputs(image=b""), "empty_file", "empty"),
        (edit_inputs("   "), "invalid_input", "prompt is empty"),
        (edit_inputs(steps=0), "invalid_options", "steps"),
        (edit_inputs("add a cat"), "unknown_instruction", "add a cat"),
    ],
    ids=[
        "no-images",
        "no-prompt",
        "two-prompts",
        "not-an-image",
        "empty-image",
        "blank-prompt",
        "steps-0",
        "unknown-instruction",
    ],
)
def test_invalid_input_is_an_invalid_arg_error_carrying_its_code(
    inputs: dict[str, np.ndarray], code: str, text: str
) -> None:
    sent = serve(FakeRequest(inputs))
    error = final_error(sent)
    assert error.code == FakeTritonError.INVALID_ARG
    assert error.message().startswith(f"[{code}] ")
    assert text in error.message()


def test_cancel_mid_run_sends_no_more_progress_and_ends_cancelled() -> None:
    # Cancelled as soon as the first progress response went out.
    request = FakeRequest(
        edit_inputs("grayscale, mirror, invert, flip"), cancelled=lambda sender: bool(sender.sent)
    )
    sent = serve(request)
    assert [flags for _, flags in sent] == [0, FINAL]
    assert sent[0][0].event["step"] == 1
    error = final_error(sent)
    assert error.code == FakeTritonError.CANCELLED
    assert error.message().startswith("[cancelled] ")


class SteppingEditor:
    """Like the diffusion loop: work, report the step, then check for a cancel."""

    name = "stepping"
    limits = RequestLimits()

    def __init__(self, steps: int, on_work: Callable[[int], None]) -> None:
        self.steps = steps
        self.on_work = on_work

    def edit(
        self, request: EditRequest, on_progress: ProgressFn, is_cancelled: CancelledFn
    ) -> EditOutcome:
        for step in range(1, self.steps + 1):
            self.on_work(step)
            on_progress(ProgressEvent(step=step, total=self.steps, elapsed_s=0.0))
            if is_cancelled():
                raise Cancelled(f"cancelled after step {step} of {self.steps}")
        raise AssertionError("the run should have been cancelled")

    def describe(self) -> dict[str, Any]:
        return {}


def test_cancel_arriving_mid_step_suppresses_that_steps_progress() -> None:
    cancelled = {"now": False}
    request = FakeRequest(edit_inputs(), cancelled=lambda _sender: cancelled["now"])

    def client_cancels_during_step_2(step: int) -> None:
        cancelled["now"] = cancelled["now"] or step == 2

    sent = serve(request, SteppingEditor(5, client_cancels_during_step_2))
    assert [response.event["step"] for response, _ in sent[:-1]] == [1]
    assert final_error(sent).message() == "[cancelled] cancelled after step 2 of 5"


def test_a_server_stopping_mid_edit_ends_it_within_the_step_as_retryable() -> None:
    adapter = RequestAdapter(ClassicEditor(), FakePbUtils)
    adapter.editor = SteppingEditor(50, lambda step: step == 3 and adapter.stop())
    request = FakeRequest(edit_inputs())
    adapter.serve(request)
    sent = request.sender.sent
    assert [response.event["step"] for response, _ in sent[:-1]] == [1, 2, 3]
    error = final_error(sent)
    assert error.code == FakeTritonError.UNAVAILABLE
    assert error.message() == (
        "[model_unavailable] the model server is shutting down; retry the edit shortly"
    )
    assert adapter.served.outcomes["cancelled"] == 1


def test_engine_error_is_internal_and_keeps_its_code() -> None:
    sent = serve(
        FakeRequest(edit_inputs()), RaisingEditor(EngineError("out of memory", code="oom"))
    )
    error = final_error(sent)
    assert error.code == FakeTritonError.INTERNAL
    assert error.message() == "[oom] out of memory"


def test_unexpected_exception_is_internal_and_leaks_nothing() -> None:
    crash = RuntimeError("Traceback: /srv/secret/weights.bin on gpu-node-7.internal")
    sent = serve(FakeRequest(edit_inputs()), RaisingEditor(crash))
    error = final_error(sent)
    assert error.code == FakeTritonError.INTERNAL
    assert error.message().startswith("[internal] ")
    assert "RuntimeError" in error.message()
    for secret in ("/srv", "secret", "gpu-node-7", "Traceback"):
        assert secret not in error.message()


def test_cancelled_from_the_editor_is_a_cancelled_error() -> None:
    sent = serve(FakeRequest(edit_inputs()), RaisingEditor(Cancelled("stopped at step 1")))
    assert final_error(sent).code == FakeTritonError.CANCELLED


def test_serve_never_raises_when_the_client_is_gone() -> None:
    request = FakeRequest(edit_inputs(), sender=FakeSender(fail=True))
    serve(request)  # would raise out of execute() and take the instance with it
    assert request.sender.sent == []


def test_error_message_prefixes_the_stable_code() -> None:
    assert error_message(InvalidInput("too big", code="image_too_large")) == (
        "[image_too_large] too big"
    )
    assert error_message(Cancelled("stopped")) == "[cancelled] stopped"


def test_a_mask_tensor_reaches_the_edit_which_keeps_the_rest_of_the_image() -> None:
    data = images.png_bytes(120, 90)
    inputs = {
        **edit_inputs("make it black and white", data, mask_feather=0),
        "MASK": strings(images.mask_png((120, 90), (40, 30, 80, 60))),
    }
    final = serve(FakeRequest(inputs))[-1][0]
    assert final.error is None
    assert final.event["local"]["crop"] == [8, 0, 104, 90]
    image_tensor = final.output("IMAGE")
    assert image_tensor is not None
    out = np.asarray(images.decode(bytes(image_tensor[0])).convert("RGB")).astype(int)
    original = np.asarray(images.decode(data).convert("RGB")).astype(int)
    assert out.shape == (90, 120, 3)
    assert (out[30:60, 40:80, 0] == out[30:60, 40:80, 1]).all()
    assert (out[:30] == original[:30]).all()
    assert (out[:, :40] == original[:, :40]).all()


@pytest.mark.parametrize(
    ("mask", "code"),
    [
        (b"not an image", "invalid_mask"),
        (images.mask_png((32, 24), (0, 0, 8, 8)), "mask_size_mismatch"),
        (images.mask_png((64, 48), (0, 0, 0, 0)), "mask_empty"),
    ],
    ids=["not-an-image", "wrong-size", "all-black"],
)
def test_a_bad_mask_tensor_is_an_invalid_arg_error_carrying_its_code(
    mask: bytes, code: str
) -> None:
    inputs = {**edit_inputs("invert", images.png_bytes(64, 48)), "MASK": strings(mask)}
    error = final_error(serve(FakeRequest(inputs)))
    assert error.code == FakeTritonError.INVALID_ARG
    assert error.message().startswith(f"[{code}] ")


def test_describe_tells_the_steps_run_and_how_requests_ended() -> None:
    adapter = RequestAdapter(ClassicEditor(), FakePbUtils)
    for request in (
        FakeRequest(edit_inputs("grayscale and mirror")),
        FakeRequest(edit_inputs("invert")),
        FakeRequest(edit_inputs("add a cat")),
        FakeRequest({"DESCRIBE": np.array([True])}),  # a DESCRIBE is no edit: not counted
    ):
        adapter.serve(request)
    describe = FakeRequest({"DESCRIBE": np.array([True])})
    adapter.serve(describe)
    ((response, _),) = describe.sender.sent
    served = response.event["served"]
    assert served == {"steps": 3, "completed": 2, "cancelled": 0, "refused": 1, "failed": 0}
