"""Gateway pieces that need no server: error table, Triton errors, settings, keys, webhooks."""

from __future__ import annotations

import grpc
import pytest
from pydantic import ValidationError
from starlette.requests import Request

from gateway.errors import ApiError
from gateway.http.schemas import RequestOptions
from gateway.http.security import owner_id, presented_key
from gateway.settings import Settings
from gateway.triton.client import classify_error
from gateway.webhooks.sender import sign
from gateway.webhooks.targets import CallbackPolicy
from qie_engine.contract import Preset


def _request(headers: dict[str, str]) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return Request({"type": "http", "headers": raw})


@pytest.mark.parametrize(
    ("code", "status", "retry_after"),
    [
        ("job_not_found", 404, None),
        ("job_failed", 409, None),
        ("job_cancelled", 410, None),
        ("unsupported_media_type", 415, None),
        ("image_too_large", 422, None),  # an engine input code: 422 unless listed
        ("rate_limited", 429, None),
        ("model_error", 502, None),
        ("queue_full", 503, "5"),
        ("store_unavailable", 503, "2"),
        ("deadline_exceeded", 504, None),
    ],
)
def test_one_table_gives_each_code_its_status_and_retry_after(
    code: str, status: int, retry_after: str | None
) -> None:
    error = ApiError(code, "what to do")
    assert error.status == status
    assert error.headers.get("Retry-After") == retry_after
    assert error.body() == {"code": code, "message": "what to do", "detail": None}


def test_an_explicit_retry_after_wins_and_is_at_least_one_second() -> None:
    assert ApiError("queue_full", "m", retry_after_s=0).headers["Retry-After"] == "1"
    assert ApiError("rate_limited", "m", retry_after_s=42).headers["Retry-After"] == "42"


@pytest.mark.parametrize(
    ("message", "status", "kind", "code"),
    [
        ("[image_too_large] the image is 9x9", None, "input", "image_too_large"),
        ("[cancelled] cancelled after step 3 of 50", None, "cancelled", "cancelled"),
        ("[internal] the edit failed (RuntimeError)", None, "internal", "model_error"),
        (
            "failed to connect to all addresses",
            grpc.StatusCode.UNAVAILABLE,
            "unavailable",
            "triton_unavailable",
        ),
        ("Deadline Exceeded", grpc.StatusCode.DEADLINE_EXCEEDED, "deadline", "deadline_exceeded"),
        ("Exceeds maximum queue size", None, "queue_full", "queue_full"),
        (
            "Request for unknown model: 'x' is not found",
            None,
            "model_unavailable",
            "model_unavailable",
        ),
        ("Stub process 'q_0_0' is not healthy.", None, "internal", "model_crashed"),
        ("something odd at 10.0.0.5:8001", None, "internal", "triton_error"),
    ],
)
def test_triton_errors_are_classified(
    message: str, status: grpc.StatusCode | None, kind: str, code: str
) -> None:
    error = classify_error(message, status)
    assert (error.kind, error.code) == (kind, code)
    assert "10.0.0.5" not in error.message  # internal hosts never reach a client


@pytest.mark.parametrize(
    ("headers", "key"),
    [
        ({"Authorization": "Bearer abc"}, "abc"),
        ({"Authorization": "bearer  abc "}, "abc"),
        ({"X-API-Key": "xyz"}, "xyz"),
        ({"Authorization": "Basic abc"}, None),
        ({"Authorization": "Bearer"}, None),
        ({"Authorization": "Bearer a b"}, None),
        ({}, None),
    ],
)
def test_keys_come_from_bearer_or_x_api_key(headers: dict[str, str], key: str | None) -> None:
    assert presented_key(_request(headers)) == key


def test_owner_id_hides_the_key() -> None:
    assert owner_id("secret") == owner_id("secret")
    assert "secret" not in owner_id("secret") and owner_id("a") != owner_id("b")


def test_settings_refuse_to_start_without_keys_unless_auth_is_disabled() -> None:
    with pytest.raises(ValidationError, match="GATEWAY_API_KEYS"):
        Settings.model_validate({})
    assert Settings.model_validate({"GATEWAY_AUTH_DISABLED": "true"}).auth_disabled
    settings = Settings.model_validate(
        {"GATEWAY_API_KEYS": "a, b", "TRITON_URLS": "t1:8001,t2:8001"}
    )
    assert settings.api_keys == ["a", "b"] and settings.triton_urls == ["t1:8001", "t2:8001"]


def test_seed_model_names_resolve_to_the_qwen_model() -> None:
    settings = Settings.model_validate({"GATEWAY_AUTH_DISABLED": True})
    assert settings.resolve_model("qwen2-vl-7b-instruct") == "qwen_image_edit"
    assert settings.resolve_model(None) == "qwen_image_edit"
    assert settings.resolve_model("classic_edit") == "classic_edit"


def test_seed_quality_maps_to_presets_and_an_explicit_preset_wins() -> None:
    assert RequestOptions(quality="low").edit_options().preset is Preset.FAST
    assert RequestOptions(quality="high").edit_options().preset is Preset.QUALITY
    assert (
        RequestOptions(quality="low", preset=Preset.QUALITY).edit_options().preset is Preset.QUALITY
    )
    assert "timeout" not in RequestOptions(timeout=5).edit_options().model_dump()


@pytest.mark.parametrize(
    "url",
    [
        "ftp://x/y",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "http://",
        "/relative",
        "http://x:99999/",
    ],
)
def test_callback_urls_must_be_absolute_http(url: str) -> None:
    with pytest.raises(ApiError) as refused:
        CallbackPolicy(["x"]).check_url(url)
    assert (refused.value.status, refused.value.code) == (422, "invalid_callback_url")


def test_webhook_signature_covers_timestamp_and_body() -> None:
    signature = sign("k", "1700000000", b'{"a":1}')
    assert signature.startswith("sha256=")
    assert signature != sign("k", "1700000001", b'{"a":1}')
    assert signature != sign("k", "1700000000", b'{"a":2}')
