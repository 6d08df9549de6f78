"""The gateway's one error hierarchy, its one code → status table and its one set of handlers.

Every error body is {"code", "message", "detail"}: no traceback, path or internal host name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

log = logging.getLogger("gateway")

# code: (HTTP status, Retry-After seconds or None). Engine input codes not listed here
# (image_too_large, corrupt_image, empty_file, prompt_too_long, unknown_instruction, ...) are 422.
CODES: dict[str, tuple[int, int | None]] = {
    "bad_request": (400, None),
    "unauthorized": (401, None),
    "not_found": (404, None),
    "job_not_found": (404, None),
    "model_not_found": (404, None),
    "batch_not_found": (404, None),
    "method_not_allowed": (405, None),
    "job_not_ready": (409, None),
    "job_failed": (409, None),
    "job_finished": (409, None),
    "batch_not_ready": (409, None),
    "batch_failed": (409, None),
    "batch_finished": (409, None),
    "job_cancelled": (410, None),
    "batch_cancelled": (410, None),
    "result_expired": (410, None),
    "payload_too_large": (413, None),
    "unsupported_media_type": (415, None),
    "rate_limited": (429, None),
    # A synchronous edit that was cancelled (by another request) while the caller waited.
    "cancelled": (499, None),
    "internal_error": (500, None),
    # Failures of the service behind the gateway, as a synchronous caller sees its edit end.
    "triton_error": (502, None),
    "model_error": (502, None),
    "model_crashed": (502, None),
    "gateway_restarted": (502, None),
    "gateway_shutdown": (502, None),
    "triton_unavailable": (503, 5),
    "model_unavailable": (503, 10),
    "queue_full": (503, 5),
    "store_unavailable": (503, 2),
    "deadline_exceeded": (504, None),
}
INPUT_ERROR_STATUS = 422
# Starlette's own HTTP errors, named.
HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
}


def status_of(code: str) -> int:
    return CODES.get(code, (INPUT_ERROR_STATUS, None))[0]


class ApiError(Exception):
    """An answer other than success; the code decides the status and any Retry-After."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        detail: Any = None,
        headers: dict[str, str] | None = None,
        retry_after_s: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.detail = detail
        self.status, default_retry = CODES.get(code, (INPUT_ERROR_STATUS, None))
        self.headers = dict(headers or {})
        retry = retry_after_s if retry_after_s is not None else default_retry
        if retry is not None:
            self.headers["Retry-After"] = str(max(1, retry))

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "detail": self.detail}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


class StoreUnavailable(ApiError):
    """The job store (Redis) cannot be reached; the message names no host."""

    def __init__(self, reason: str = "") -> None:
        because = f" ({reason})" if reason else ""
        super().__init__(
            "store_unavailable", f"the job store (Redis) is unreachable{because}; retry shortly"
        )


def _field_errors(errors: list[Any]) -> list[dict[str, str]]:
    skip = ("body", "query", "header")
    return [
        {"field": ".".join(str(p) for p in e["loc"] if p not in skip), "message": e["msg"]}
        for e in errors
    ]


def install_error_handlers(app: FastAPI, count_reject: Callable[[str], None]) -> None:
    """Every error leaves through here, as one JSON shape, counted by its code."""

    def answer(error: ApiError) -> JSONResponse:
        count_reject(error.code)
        return error.response()

    @app.exception_handler(ApiError)
    async def on_api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return answer(exc)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = _field_errors(list(exc.errors()))
        message = "invalid request: " + "; ".join(f"{f['field']}: {f['message']}" for f in fields)
        return answer(ApiError("validation_error", message, detail=fields))

    @app.exception_handler(HTTPException)
    async def on_http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        known: ApiError | None = getattr(exc, "api_error", None)
        if known is not None:
            return answer(known)
        code = HTTP_CODES.get(exc.status_code, "http_error")
        message = str(exc.detail)
        if message == "There was an error parsing the body":
            message = "the request body could not be parsed; send valid multipart/form-data"
        error = ApiError(code, message, headers=dict(exc.headers or {}))
        error.status = exc.status_code  # e.g. 405 keeps its Allow header (RFC 9110)
        return answer(error)

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, _exc: Exception) -> JSONResponse:
        log.exception(
            "unhandled error", extra={"request_id": getattr(request.state, "request_id", None)}
        )
        return answer(ApiError("internal_error", "internal error; see the gateway log"))
