"""Every error leaves through here: one JSON shape, counted by its code.

The engine's input errors (qie_engine.errors.InvalidInput, raised while a form is read) are
translated here, once; no other part of the gateway catches them to re-raise.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from gateway.errors import ApiError, ErrorCode
from qie_engine.errors import InvalidInput

log = logging.getLogger("gateway")

# Starlette's own HTTP errors, named.
HTTP_CODES = {
    400: ErrorCode.BAD_REQUEST,
    401: ErrorCode.UNAUTHORIZED,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
    422: ErrorCode.VALIDATION_ERROR,
}
UNPARSABLE_BODY = "There was an error parsing the body"


def json_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def from_engine(exc: InvalidInput) -> ApiError:
    """An engine input error as the API states it; its code is one of ours (tested)."""
    code = ErrorCode.known(exc.code) or ErrorCode.INVALID_INPUT
    return ApiError(code, str(exc))


def _field_errors(errors: list[Any]) -> list[dict[str, str]]:
    skip = ("body", "query", "header")
    return [
        {"field": ".".join(str(p) for p in e["loc"] if p not in skip), "message": e["msg"]}
        for e in errors
    ]


def _from_http(exc: HTTPException) -> ApiError:
    known: ApiError | None = getattr(exc, "api_error", None)
    if known is not None:
        return known
    message = str(exc.detail)
    if message == UNPARSABLE_BODY:
        message = "the request body could not be parsed; send valid multipart/form-data"
    code = HTTP_CODES.get(exc.status_code, ErrorCode.BAD_REQUEST)
    # The status stays Starlette's: a 405 keeps its Allow header (RFC 9110).
    return ApiError(code, message, headers=dict(exc.headers or {}), status=exc.status_code)


def install_error_handlers(app: FastAPI, count_reject: Callable[[ErrorCode], None]) -> None:
    def answer(error: ApiError) -> JSONResponse:
        count_reject(error.code)
        return json_response(error)

    @app.exception_handler(ApiError)
    async def on_api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return answer(exc)

    @app.exception_handler(InvalidInput)
    async def on_engine_input(_request: Request, exc: InvalidInput) -> JSONResponse:
        return answer(from_engine(exc))

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = _field_errors(list(exc.errors()))
        message = "invalid request: " + "; ".join(f"{f['field']}: {f['message']}" for f in fields)
        return answer(ApiError(ErrorCode.VALIDATION_ERROR, message, detail=fields))

    @app.exception_handler(HTTPException)
    async def on_http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        return answer(_from_http(exc))

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, _exc: Exception) -> JSONResponse:
        log.exception(
            "unhandled error", extra={"request_id": getattr(request.state, "request_id", None)}
        )
        return answer(ApiError(ErrorCode.INTERNAL_ERROR, "internal error; see the gateway log"))
