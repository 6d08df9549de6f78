"""The gateway's one error vocabulary and its one error class.

Every answer other than success carries one of these codes, in one JSON shape:
{"code", "message", "detail"}, with no traceback, path or internal host name. A code's member
gives its HTTP status, its Retry-After (seconds, or None) and what it means. The engine's input
codes (qie_engine.errors, the classic vocabulary) are members too: a test checks that every code
the engine can raise is here, so none can fall through to a guess.
"""

from __future__ import annotations

from enum import Enum
from typing import Any


class ErrorCode(str, Enum):
    """A stable, machine-readable reason, with its HTTP status and meaning."""

    status: int
    retry_after_s: int | None
    meaning: str

    def __new__(
        cls, value: str, status: int, meaning: str, retry_after_s: int | None = None
    ) -> ErrorCode:
        member = str.__new__(cls, value)
        member._value_ = value
        member.status = status
        member.meaning = meaning
        member.retry_after_s = retry_after_s
        return member

    # 400-415: the request as a whole
    BAD_REQUEST = "bad_request", 400, "the request could not be read (e.g. a broken multipart body)"
    UNAUTHORIZED = "unauthorized", 401, "no valid API key"
    NOT_FOUND = "not_found", 404, "no such route or file"
    JOB_NOT_FOUND = "job_not_found", 404, "no such job (or another key's)"
    BATCH_NOT_FOUND = "batch_not_found", 404, "no such batch (or another key's)"
    MODEL_NOT_FOUND = "model_not_found", 404, "no such model; the detail lists the models"
    METHOD_NOT_ALLOWED = "method_not_allowed", 405, "the route takes other methods (see Allow)"
    JOB_NOT_READY = "job_not_ready", 409, "the job has not completed yet"
    JOB_FAILED = "job_failed", 409, "the job failed; the detail says why"
    JOB_FINISHED = "job_finished", 409, "the job already ended: nothing to cancel"
    BATCH_NOT_READY = "batch_not_ready", 409, "no edit of the batch has finished yet"
    BATCH_FAILED = "batch_failed", 409, "every edit of the batch failed"
    BATCH_FINISHED = "batch_finished", 409, "the batch already ended: nothing to cancel"
    JOB_CANCELLED = "job_cancelled", 410, "the job was cancelled: it has no result"
    BATCH_CANCELLED = "batch_cancelled", 410, "the batch was cancelled before any edit ended"
    RESULT_EXPIRED = "result_expired", 410, "the job or its result expired"
    PAYLOAD_TOO_LARGE = "payload_too_large", 413, "the body or an image is over its byte cap"
    UNSUPPORTED_MEDIA_TYPE = (
        "unsupported_media_type",
        415,
        "the file is not a JPEG, PNG or WebP image (the bytes decide)",
    )
    # 422: a field of the request; the message names it and says what to do
    VALIDATION_ERROR = "validation_error", 422, "a required part is missing or malformed"
    INVALID_INPUT = "invalid_input", 422, "a part of the edit is not acceptable"
    INVALID_OPTIONS = "invalid_options", 422, "an option is out of range or unknown"
    IMAGE_COUNT = "image_count", 422, "the model (or the batch) takes another number of images"
    EMPTY_FILE = "empty_file", 422, "an image part is empty"
    IMAGE_TOO_LARGE = "image_too_large", 422, "the image has more pixels than allowed"
    IMAGE_TOO_COMPLEX = (
        "image_too_complex",
        422,
        "the image would cost too much to decode (scans, frames or metadata over the limits)",
    )
    CORRUPT_IMAGE = "corrupt_image", 422, "the image is truncated or damaged"
    PROMPT_TOO_LONG = "prompt_too_long", 422, "the prompt is over MAX_PROMPT_CHARS"
    INVALID_INSTRUCTION = "invalid_instruction", 422, "classic_edit cannot do this instruction"
    UNKNOWN_INSTRUCTION = "unknown_instruction", 422, "classic_edit does not know the instruction"
    TOO_MANY_OPERATIONS = "too_many_operations", 422, "classic_edit takes fewer operations"
    INVALID_MASK = "invalid_mask", 422, "the mask part is not a JPEG, PNG or WebP image"
    MASK_SIZE_MISMATCH = (
        "mask_size_mismatch",
        422,
        "the mask has another size than the (first) image, after EXIF orientation",
    )
    MASK_EMPTY = "mask_empty", 422, "the mask marks nothing to edit"
    REGION_OUTSIDE_IMAGE = "region_outside_image", 422, "the region is not inside the image"
    INVALID_CALLBACK_URL = "invalid_callback_url", 422, "callback_url is not an http(s) URL"
    CALLBACK_NOT_ALLOWED = "callback_not_allowed", 422, "the callback host is not allowlisted"
    IDEMPOTENCY_KEY_REUSED = (
        "idempotency_key_reused",
        422,
        "the Idempotency-Key was used with a different request",
    )
    RATE_LIMITED = "rate_limited", 429, "over the rate limit; see Retry-After"
    # 499: a synchronous edit cancelled (by another request) while its caller waited
    CANCELLED = "cancelled", 499, "the edit was cancelled"
    INTERNAL_ERROR = "internal_error", 500, "a bug; the gateway log has the request id"
    # 502-504: the service behind the gateway, as a synchronous caller sees its edit end
    TRITON_ERROR = "triton_error", 502, "Triton failed to run the edit"
    MODEL_ERROR = "model_error", 502, "the model failed to run the edit"
    MODEL_CRASHED = "model_crashed", 502, "the model instance crashed"
    GATEWAY_RESTARTED = "gateway_restarted", 502, "the replica running the job stopped, twice"
    GATEWAY_SHUTDOWN = "gateway_shutdown", 502, "the gateway shut down before the job ended"
    TRITON_UNAVAILABLE = "triton_unavailable", 503, "Triton is not reachable", 5
    MODEL_UNAVAILABLE = "model_unavailable", 503, "the model is loading, failed or stopping", 10
    QUEUE_FULL = "queue_full", 503, "the model's queue is full", 5
    STORE_UNAVAILABLE = "store_unavailable", 503, "the job store (Redis) is unreachable", 2
    STORE_FULL = (
        "store_full",
        503,
        "the job store is full: new work waits for results to expire",
        30,
    )
    DEADLINE_EXCEEDED = "deadline_exceeded", 504, "the edit did not end within its timeout"
    # Said only inside an event stream, never as an HTTP status of its own.
    JOB_EXPIRED = "job_expired", 410, "the job expired or was evicted while followed"

    @classmethod
    def known(cls, value: str | None) -> ErrorCode | None:
        """The member for a code another part wrote (a job's error, a model's answer)."""
        return cls._value2member_map_.get(value or "")  # type: ignore[return-value]


class ApiError(Exception):
    """An answer other than success; its code decides the status and any Retry-After."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        detail: Any = None,
        headers: dict[str, str] | None = None,
        retry_after_s: int | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.detail = detail
        self.status = status or code.status
        self.headers = dict(headers or {})
        retry = retry_after_s if retry_after_s is not None else code.retry_after_s
        if retry is not None:
            self.headers["Retry-After"] = str(max(1, retry))

    def body(self) -> dict[str, Any]:
        return {"code": self.code.value, "message": self.message, "detail": self.detail}


class StoreFull(ApiError):
    """The job store has no room for new work; running jobs still finish."""

    def __init__(self, reason: str = "") -> None:
        because = f" ({reason})" if reason else ""
        super().__init__(
            ErrorCode.STORE_FULL,
            f"the job store is full{because}; retry once older results have expired",
        )


class StoreUnavailable(ApiError):
    """The job store (Redis) cannot be reached; the message names no host."""

    def __init__(self, reason: str = "") -> None:
        because = f" ({reason})" if reason else ""
        super().__init__(
            ErrorCode.STORE_UNAVAILABLE,
            f"the job store (Redis) is unreachable{because}; retry shortly",
        )
