"""The one error vocabulary: each code's status and Retry-After, and every code the engine can
raise known to it (an unknown one would be a guess at a status)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from gateway.errors import ApiError, ErrorCode
from gateway.http.error_handlers import from_engine
from qie_engine.errors import ImageTooLarge, InvalidInput

ENGINE = Path(__file__).resolve().parents[2] / "qie_engine"


@pytest.mark.parametrize(
    ("code", "status", "retry_after"),
    [
        (ErrorCode.JOB_NOT_FOUND, 404, None),
        (ErrorCode.JOB_FAILED, 409, None),
        (ErrorCode.JOB_CANCELLED, 410, None),
        (ErrorCode.UNSUPPORTED_MEDIA_TYPE, 415, None),
        (ErrorCode.IMAGE_TOO_LARGE, 422, None),
        (ErrorCode.RATE_LIMITED, 429, None),
        (ErrorCode.MODEL_ERROR, 502, None),
        (ErrorCode.QUEUE_FULL, 503, "5"),
        (ErrorCode.STORE_UNAVAILABLE, 503, "2"),
        (ErrorCode.DEADLINE_EXCEEDED, 504, None),
    ],
)
def test_each_code_carries_its_status_and_retry_after(
    code: ErrorCode, status: int, retry_after: str | None
) -> None:
    error = ApiError(code, "what to do")
    assert error.status == status
    assert error.headers.get("Retry-After") == retry_after
    assert error.body() == {"code": code.value, "message": "what to do", "detail": None}


def test_an_explicit_retry_after_wins_and_is_at_least_one_second() -> None:
    assert ApiError(ErrorCode.QUEUE_FULL, "m", retry_after_s=0).headers["Retry-After"] == "1"
    assert ApiError(ErrorCode.RATE_LIMITED, "m", retry_after_s=42).headers["Retry-After"] == "42"


def test_every_code_has_a_meaning_and_a_status_an_http_client_knows() -> None:
    for code in ErrorCode:
        assert code.meaning and code.value == code.value.lower()
        assert 400 <= code.status <= 599


def _code_value(node: ast.AST) -> ast.expr | None:
    """The value given to `code`, as a keyword (code="...") or an assignment (code = "...")."""
    if isinstance(node, ast.keyword) and node.arg == "code":
        return node.value
    if isinstance(node, ast.Assign) and any(
        isinstance(t, ast.Name) and t.id == "code" for t in node.targets
    ):
        return node.value
    return None


def engine_codes() -> set[str]:
    """Every code the engine can raise: its error classes' `code` and every `code="..."`."""
    codes = set()
    for path in ENGINE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            value = _code_value(node)
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                codes.add(value.value)
    return codes


def test_every_code_the_engine_raises_is_in_the_vocabulary() -> None:
    codes = engine_codes()
    assert {"image_too_large", "prompt_too_long", "unknown_instruction"} <= codes  # it reads
    unknown = sorted(c for c in codes if ErrorCode.known(c) is None)
    assert unknown == [], f"add these engine codes to ErrorCode: {unknown}"


def test_an_engine_input_error_becomes_its_own_code() -> None:
    assert from_engine(ImageTooLarge("9x9 is too big")).code is ErrorCode.IMAGE_TOO_LARGE
    error = from_engine(InvalidInput("prompt is empty"))
    assert (error.status, error.code) == (422, ErrorCode.INVALID_INPUT)
