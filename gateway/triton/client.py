"""Talking to one or more tritonservers over gRPC: streaming edits, readiness, model facts."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)
from tritonclient.grpc import InferInput
from tritonclient.grpc.aio import InferenceServerClient
from tritonclient.utils import InferenceServerException

from gateway.errors import ErrorCode
from gateway.store.job_models import EditInputs
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
    ResultMeta,
)

log = logging.getLogger(__name__)

INPUT_STATUS = 422
_CODE_PREFIX = re.compile(r"^\[(?P<code>[a-z_]+)\]\s*(?P<message>.*)$", re.DOTALL)


class TritonCallError(Exception):
    """A failed Triton call, classified: kind is input|cancelled|unavailable|queue_full|
    model_unavailable|deadline|internal."""

    def __init__(self, kind: str, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.code = code
        self.message = message


# Errors Triton itself raises, by a word of their message: (word, kind, code, message).
NOT_LOADED = "the model is not loaded"
_TRITON_ERRORS = (
    ("maximum queue size", "queue_full", ErrorCode.QUEUE_FULL, "Triton's queue is full"),
    ("unknown model", "model_unavailable", ErrorCode.MODEL_UNAVAILABLE, NOT_LOADED),
    ("is not ready", "model_unavailable", ErrorCode.MODEL_UNAVAILABLE, NOT_LOADED),
    ("not found", "model_unavailable", ErrorCode.MODEL_UNAVAILABLE, NOT_LOADED),
)
_STATUSES = {
    grpc.StatusCode.UNAVAILABLE: (
        "unavailable",
        ErrorCode.TRITON_UNAVAILABLE,
        "Triton is not reachable",
    ),
    grpc.StatusCode.DEADLINE_EXCEEDED: (
        "deadline",
        ErrorCode.DEADLINE_EXCEEDED,
        "the request ran out of time",
    ),
    grpc.StatusCode.CANCELLED: ("cancelled", ErrorCode.CANCELLED, "the request was cancelled"),
}


def _from_model(code: str, text: str) -> TritonCallError:
    """An error raised by our models: "[code] message"; a code we do not know is the model's
    fault, not the caller's."""
    known = ErrorCode.known(code)
    if known is ErrorCode.CANCELLED:
        return TritonCallError("cancelled", known, text)
    if known is ErrorCode.MODEL_UNAVAILABLE:
        return TritonCallError("model_unavailable", known, text)
    if known is None or known.status != INPUT_STATUS:
        if known is None and code != "internal":
            log.warning("the model answered an unknown error code %r", code)
        return TritonCallError("internal", ErrorCode.MODEL_ERROR, text)
    return TritonCallError("input", known, text)


def classify_error(message: str, status: grpc.StatusCode | None = None) -> TritonCallError:
    """Map Triton's answer to a kind the job service understands; no address leaks out."""
    match = _CODE_PREFIX.match(message.strip())
    if match:
        return _from_model(match["code"], match["message"])
    lowered = message.lower()
    if status is None and "failed to connect" in lowered:
        status = grpc.StatusCode.UNAVAILABLE
    if status is None and "cancelled" in lowered:
        status = grpc.StatusCode.CANCELLED
    if status in _STATUSES:
        return TritonCallError(*_STATUSES[status])
    for word, kind, code, text in _TRITON_ERRORS:
        if word in lowered:
            return TritonCallError(kind, code, text)
    if "stub process" in lowered and "not healthy" in lowered:
        return TritonCallError("internal", ErrorCode.MODEL_CRASHED, "the model instance crashed")
    return TritonCallError("internal", ErrorCode.TRITON_ERROR, "Triton failed to run the edit")


def _unavailable(exc: BaseException) -> bool:
    return isinstance(exc, TritonCallError) and exc.kind == "unavailable"


def _log_retry(state: RetryCallState) -> None:
    delay = state.next_action.sleep if state.next_action else 0.0
    log.warning("Triton unavailable; retrying in %.2fs", delay)


@dataclass
class FinalResult:
    meta: ResultMeta
    image: bytes


def _bytes_input(name: str, values: list[bytes]) -> InferInput:
    tensor = InferInput(name, [len(values)], "BYTES")
    tensor.set_data_from_numpy(np.array(values, dtype=object))
    return tensor


def build_inputs(call: EditInputs) -> list[InferInput]:
    inputs = [
        _bytes_input(INPUT_IMAGES, call.images),
        _bytes_input(INPUT_PROMPT, [call.prompt.encode()]),
        _bytes_input(INPUT_OPTIONS, [call.options_json.encode()]),
    ]
    if call.negative_prompt:
        inputs.append(_bytes_input(INPUT_NEGATIVE_PROMPT, [call.negative_prompt.encode()]))
    if call.mask is not None:
        inputs.append(_bytes_input(INPUT_MASK, [call.mask]))
    return inputs


@dataclass
class Endpoint:
    url: str
    outstanding: int = 0
    up: bool = False
    ready_models: set[str] = field(default_factory=set)
    known_models: set[str] = field(default_factory=set)  # in the repository, in any state
    _client: InferenceServerClient | None = None

    @property
    def client(self) -> InferenceServerClient:
        """One channel per URL, reused by every request; made inside the running event loop."""
        if self._client is None:
            self._client = InferenceServerClient(url=self.url)
        return self._client


class TritonPool:
    """Several Triton URLs behind one interface, picked by least outstanding requests."""

    def __init__(self, urls: list[str], *, retries: int = 3, backoff_s: float = 0.25) -> None:
        self.endpoints = [Endpoint(url=u) for u in urls]
        self.retries = retries
        self.backoff_s = backoff_s

    def pick(self, model: str) -> Endpoint:
        serving = [e for e in self.endpoints if e.up and model in e.ready_models]
        candidates = serving or self.endpoints
        return min(candidates, key=lambda e: e.outstanding)

    async def stream_edit(self, call: EditInputs) -> AsyncIterator[ProgressEvent | FinalResult]:
        """Yield progress events, then one FinalResult; raise TritonCallError on failure.

        A connection that fails before any response is retried with backoff (the request never
        started); once Triton answered, a failure is final. Closing the iterator early (cancel,
        deadline, client gone) cancels the gRPC stream, which cancels the Triton request.
        """
        stream, first = await self._start(call)
        try:
            yield first
            async for item in stream:
                yield item
        finally:
            await stream.aclose()

    async def _start(
        self, call: EditInputs
    ) -> tuple[AsyncGenerator[ProgressEvent | FinalResult], ProgressEvent | FinalResult]:
        """Open a stream and read its first response, retrying while Triton is unreachable."""
        retrying = AsyncRetrying(
            retry=retry_if_exception(_unavailable),
            stop=stop_after_attempt(self.retries + 1),
            wait=wait_exponential(multiplier=self.backoff_s, min=self.backoff_s),
            before_sleep=_log_retry,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                endpoint = self.pick(call.model)
                stream = self._stream_once(endpoint, call)
                try:
                    return stream, await anext(stream)
                except TritonCallError as exc:
                    await stream.aclose()
                    if exc.kind == "unavailable":
                        endpoint.up = False
                    raise
        raise AssertionError("tenacity reraises the last error")

    async def _stream_once(
        self, endpoint: Endpoint, call: EditInputs
    ) -> AsyncGenerator[ProgressEvent | FinalResult]:
        done = asyncio.Event()

        async def requests() -> AsyncIterator[dict[str, Any]]:
            yield {
                "model_name": call.model,
                "inputs": build_inputs(call),
                "request_id": call.request_id,
            }
            await done.wait()  # keep the stream open until the final response arrives

        endpoint.outstanding += 1
        responses = endpoint.client.stream_infer(requests())
        finished = False
        try:
            async for result, error in responses:
                if error is not None:
                    raise classify_error(str(error.message()))
                event = json.loads(result.as_numpy(OUTPUT_EVENT)[0])
                if event.get("type") == "progress":
                    yield ProgressEvent.model_validate(event)
                    continue
                image = result.as_numpy(OUTPUT_IMAGE)
                finished = True
                yield FinalResult(meta=ResultMeta.model_validate(event), image=bytes(image[0]))
                return
            raise TritonCallError(
                "internal", ErrorCode.TRITON_ERROR, "Triton closed the stream early"
            )
        except grpc.aio.AioRpcError as exc:
            raise classify_error(exc.details() or "", exc.code()) from None
        except InferenceServerException as exc:
            raise classify_error(str(exc.message()), None) from None
        finally:
            done.set()
            endpoint.outstanding -= 1
            if not finished:  # cancelling a finished call only costs grpc a formatted traceback
                responses.cancel()

    async def describe(self, model: str, endpoint: Endpoint | None = None) -> dict[str, Any]:
        """The model's own facts, from a DESCRIBE request (variant, defaults, vocabulary...)."""
        endpoint = endpoint or self.pick(model)
        flag = InferInput(INPUT_DESCRIBE, [1], "BOOL")
        flag.set_data_from_numpy(np.array([True]))

        async def requests() -> AsyncIterator[dict[str, Any]]:
            yield {"model_name": model, "inputs": [flag]}

        responses = endpoint.client.stream_infer(requests())
        try:
            async for result, error in responses:
                if error is not None:
                    raise classify_error(str(error.message()))
                facts: dict[str, Any] = json.loads(result.as_numpy(OUTPUT_EVENT)[0])
                return facts
        except grpc.aio.AioRpcError as exc:
            raise classify_error(exc.details() or "", exc.code()) from None
        finally:
            responses.cancel()
        raise TritonCallError("internal", ErrorCode.TRITON_ERROR, "no answer to DESCRIBE")

    async def refresh(self) -> None:
        """Poll every endpoint's liveness and ready models; never raises."""
        for endpoint in self.endpoints:
            try:
                index = await endpoint.client.get_model_repository_index(as_json=True)
                models = index.get("models", [])
                endpoint.known_models = {m["name"] for m in models}
                endpoint.ready_models = {m["name"] for m in models if m.get("state") == "READY"}
                endpoint.up = True
            except (InferenceServerException, grpc.aio.AioRpcError, OSError):
                endpoint.up = False
                endpoint.ready_models = set()

    async def model_config(self, model: str) -> dict[str, Any]:
        endpoint = self.pick(model)
        try:
            answer = await endpoint.client.get_model_config(model, as_json=True)
        except InferenceServerException as exc:
            raise classify_error(str(exc.message())) from None
        config: dict[str, Any] = answer.get("config", {})
        return config

    async def close(self) -> None:
        for endpoint in self.endpoints:
            if endpoint._client is not None:
                await endpoint._client.close()
