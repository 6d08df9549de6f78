"""Plain ASGI middleware: the request id and per-route metrics, and the streaming body cap.

Plain ASGI (not BaseHTTPMiddleware), so a client's disconnect still reaches the routes.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Mapping

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import ApiError, ErrorCode
from gateway.http.error_handlers import json_response
from gateway.metrics import Metrics

REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


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
        incoming = Headers(scope=scope).get("x-request-id", "")
        # A client's id is kept only if it is a plain token: it goes to logs and a header.
        request_id = incoming if REQUEST_ID.fullmatch(incoming) else new_request_id()
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
            # Labels from fixed sets only: a client's path or made-up method never adds a series.
            path = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"] if scope["method"] in KNOWN_METHODS else "other"
            self.metrics.requests.labels(path, method, str(status)).inc()
            self.metrics.request_duration.labels(path, method).observe(
                time.perf_counter() - started
            )


def too_large(limit: int) -> ApiError:
    # The rest of the body is never read, so the connection cannot be reused.
    return ApiError(
        ErrorCode.PAYLOAD_TOO_LARGE,
        f"the request body is over {limit} bytes; send a smaller image (or fewer of them)",
        detail={"max_bytes": limit},
        headers={"Connection": "close"},
    )


class BodyTooLarge(HTTPException):
    """Raised from receive(); an HTTPException so FastAPI's body parsing lets it through."""

    def __init__(self, limit: int) -> None:
        self.api_error = too_large(limit)
        super().__init__(413, self.api_error.message)


class BodySizeLimit:
    """Refuses an honest Content-Length at once, and a chunked body as soon as it passes the cap.

    The cap is `max_bytes`, or the one `path_caps` gives the request's path (batch uploads).
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        on_reject: Callable[[], None],
        path_caps: Mapping[str, int] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.on_reject = on_reject
        self.path_caps = dict(path_caps or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.path_caps.get(scope["path"].rstrip("/"), self.max_bytes)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._reject(send, limit)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
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
                await self._reject(send, limit)

    async def _reject(self, send: Send, limit: int) -> None:
        self.on_reject()
        response = json_response(too_large(limit))
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": response.raw_headers,
            }
        )
        await send({"type": "http.response.body", "body": response.body})


class Utf8FormsOnly:
    """Form fields are read as UTF-8 only: a request that names another charset (which Starlette
    would decode its fields with, `unicode_escape` included) is refused, 422, before its body is
    read."""

    def __init__(self, app: ASGIApp, on_reject: Callable[[], None]) -> None:
        self.app = app
        self.on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            charset = form_charset(Headers(scope=scope).get("content-type", ""))
            if charset not in (None, "utf-8", "utf8"):
                self.on_reject()
                error = ApiError(
                    ErrorCode.VALIDATION_ERROR,
                    f"form fields are read as UTF-8 only, not {charset[:40]!r}: drop the "
                    "charset parameter of Content-Type, or send charset=utf-8",
                    detail={"field": "Content-Type"},
                    headers={"Connection": "close"},
                )
                await json_response(error)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def form_charset(content_type: str) -> str | None:
    """The charset parameter of a form's Content-Type, lowercased; None when it names none."""
    kind, *params = content_type.split(";")
    if kind.strip().lower() not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        return None
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"').lower()
    return None
