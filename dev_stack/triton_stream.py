"""One streaming request to Triton over gRPC, as the gateway sends it: for the tests of the
models and for the benchmarks that time Triton alone."""

from __future__ import annotations

import json
import queue
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

import numpy as np
from typing_extensions import Unpack

from qie_engine.contract import (
    INPUT_DESCRIBE,
    INPUT_IMAGES,
    INPUT_MASK,
    INPUT_NEGATIVE_PROMPT,
    INPUT_OPTIONS,
    INPUT_PROMPT,
    OUTPUT_EVENT,
    OUTPUT_IMAGE,
)


@dataclass
class StreamResult:
    """Everything one streamed request produced, in arrival order."""

    events: list[dict[str, Any]] = field(default_factory=list)  # progress events
    final_meta: dict[str, Any] | None = None  # the result (or describe) EVENT of the last response
    image: bytes | None = None
    error: str | None = None  # the Triton error message, "[code] ..."

    @property
    def error_code(self) -> str | None:
        if self.error is None or not self.error.startswith("["):
            return None
        return self.error[1 : self.error.index("]")]

    @property
    def steps(self) -> list[int]:
        return [event["step"] for event in self.events]


def edit_inputs(
    images: Sequence[bytes] | None,
    prompt: str | bytes | None,
    *,
    options: Mapping[str, Any] | str | bytes | None = None,
    negative_prompt: str | None = None,
    describe: bool = False,
    mask: bytes | None = None,
) -> list[Any]:
    """The contract's input tensors; None leaves a tensor out of the request."""
    import tritonclient.grpc as grpcclient

    inputs = []

    def add_bytes(name: str, values: Sequence[bytes]) -> None:
        tensor = grpcclient.InferInput(name, [len(values)], "BYTES")
        tensor.set_data_from_numpy(np.array(list(values), dtype=object))
        inputs.append(tensor)

    if images is not None:
        add_bytes(INPUT_IMAGES, list(images))
    if prompt is not None:
        add_bytes(INPUT_PROMPT, [prompt.encode() if isinstance(prompt, str) else prompt])
    if negative_prompt is not None:
        add_bytes(INPUT_NEGATIVE_PROMPT, [negative_prompt.encode()])
    if options is not None:
        raw = json.dumps(options) if isinstance(options, Mapping) else options
        add_bytes(INPUT_OPTIONS, [raw.encode() if isinstance(raw, str) else raw])
    if mask is not None:
        add_bytes(INPUT_MASK, [mask])
    if describe:
        flag = grpcclient.InferInput(INPUT_DESCRIBE, [1], "BOOL")
        flag.set_data_from_numpy(np.array([True]))
        inputs.append(flag)
    return inputs


class EditStream:
    """One gRPC stream; responses land in a queue that `collect` turns into a StreamResult."""

    def __init__(self, grpc_url: str) -> None:
        import tritonclient.grpc as grpcclient

        self.client = grpcclient.InferenceServerClient(grpc_url)
        self.responses: queue.Queue[tuple[Any, Any]] = queue.Queue()
        self.client.start_stream(callback=self._on_response)
        self.closed = False

    def _on_response(self, result: Any, error: Any) -> None:
        self.responses.put((result, error))

    def send(self, model: str, inputs: list[Any], request_id: str = "") -> None:
        self.client.async_stream_infer(model, inputs, request_id=request_id)

    def next(self, result: StreamResult, timeout: float) -> bool:
        """Take one response into `result`; False once the request is over (final or error)."""
        try:
            got, error = self.responses.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no response from Triton within {timeout:.0f}s") from None
        if error is not None:
            result.error = str(error.message() if hasattr(error, "message") else error)
            return False
        event = json.loads(got.as_numpy(OUTPUT_EVENT)[0])
        image = got.as_numpy(OUTPUT_IMAGE)
        if event.get("type") == "progress":
            result.events.append(event)
            return True
        result.final_meta = event
        result.image = None if image is None else bytes(image[0])
        return False

    def collect(self, timeout: float = 120.0) -> StreamResult:
        result = StreamResult()
        deadline = time.monotonic() + timeout
        while self.next(result, timeout=max(0.0, deadline - time.monotonic())):
            pass
        return result

    def cancel(self) -> None:
        """Close the stream and cancel its in-flight requests, as a client that gives up does."""
        if not self.closed:
            self.client.stop_stream(cancel_requests=True)
            self.closed = True

    def close(self) -> None:
        if not self.closed:
            self.client.stop_stream()
            self.closed = True
        self.client.close()

    def __enter__(self) -> EditStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class InputFields(TypedDict, total=False):
    options: Mapping[str, Any] | str | bytes | None
    negative_prompt: str | None
    describe: bool
    mask: bytes | None


def stream_edit(
    grpc_url: str,
    model: str,
    images: Sequence[bytes] | None,
    prompt: str | bytes | None,
    *,
    timeout: float = 120.0,
    **fields: Unpack[InputFields],
) -> StreamResult:
    """Send one request on its own stream and wait for its final response or error."""
    inputs = edit_inputs(images, prompt, **fields)
    with EditStream(grpc_url) as stream:
        stream.send(model, inputs)
        return stream.collect(timeout)
