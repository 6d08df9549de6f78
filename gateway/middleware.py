"""Plain ASGI middleware: the request id and per-route metrics, and the streaming body cap.

Plain ASGI (not BaseHTTPMiddleware), so a client's disconnect still reaches the routes.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import ApiError
from gateway.metrics import Metrics


def new_request_id() -> str:
    return uuid.uuid4().hex


class RequestObserver:
    """Request id in (X-Request-ID, or a new one) and out, and per-route metrics."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = Headers(scope=scope).get("x-request-id", "")[:64]
        request_id = incoming or new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(path, scope["method"], str(status)).inc()
            self.metrics.request_duration.labels(path, scope["method"]).observe(
                time.perf_counter() - started
            )


def too_large(limit: int) -> ApiError:
    # The rest of the body is never read, so the connection cannot be reused.
    return ApiError(
        "payload_too_large",
        f"the request body is over {limit} bytes; send a smaller image",
        detail={"max_bytes": limit},
        headers={"Connection": "close"},
    )


class BodyTooLarge(HTTPException):
    """Raised from receive(); an HTTPException so FastAPI's body parsing lets it through."""

    def __init__(self, limit: int) -> None:
        self.api_error = too_large(limit)
        super().__init__(413, self.api_error.message)


class BodySizeLimit:
    """Refuses an honest Content-Length at once, and a chunked body as soon as it passes the cap."""

    def __init__(self, app: ASGIApp, max_bytes: int, on_reject: Callable[[], None]) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(send)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._reject(send)

    async def _reject(self, send: Send) -> None:
        self.on_reject()
        response = too_large(self.max_bytes).response()
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": response.raw_headers,
            }
        )
        await send({"type": "http.response.body", "body": response.body})
