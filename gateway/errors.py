"""The gateway's one error hierarchy; every error body is {"code", "message", "detail"}."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    status = 500
    code = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        detail: Any = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.code
        self.status = status or self.status
        self.detail = detail
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "detail": self.detail}


class BadRequest(ApiError):
    status = 400
    code = "bad_request"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class Conflict(ApiError):
    status = 409
    code = "conflict"


class Gone(ApiError):
    status = 410
    code = "gone"


class PayloadTooLarge(ApiError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(ApiError):
    status = 415
    code = "unsupported_media_type"


class Unprocessable(ApiError):
    status = 422
    code = "validation_error"


class TooManyRequests(ApiError):
    status = 429
    code = "rate_limited"


class BadGateway(ApiError):
    status = 502
    code = "triton_error"


class ServiceUnavailable(ApiError):
    status = 503
    code = "service_unavailable"


class GatewayTimeout(ApiError):
    status = 504
    code = "deadline_exceeded"


# Engine error codes (qie_engine.errors and the classic editor) and their HTTP statuses.
ENGINE_CODE_STATUS = {
    "unsupported_media_type": 415,
    "payload_too_large": 413,
}


def from_engine_code(code: str, message: str) -> ApiError:
    """An input error found by the engine (in the gateway or in the model) as an HTTP error."""
    return ApiError(message, code=code, status=ENGINE_CODE_STATUS.get(code, 422))
