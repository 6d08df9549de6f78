"""Gateway pieces that need no server: queue, error mapping, settings, keys, webhooks."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from pydantic import ValidationError
from starlette.requests import Request

from gateway.admission import ModelQueue, QueueFull
from gateway.errors import Unprocessable
from gateway.schemas import RequestOptions
from gateway.security import owner_id, presented_key
from gateway.settings import Settings
from gateway.triton_client import classify_error
from gateway.webhooks import check_callback_url, sign
from qie_engine.contract import Preset


def _request(headers: dict[str, str]) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return Request({"type": "http", "headers": raw})


def test_queue_runs_in_arrival_order_and_refuses_past_its_depth() -> None:
    async def scenario() -> list[str]:
        queue = ModelQueue(max_inflight=1, max_depth=2)
        order: list[str] = []
        await queue.acquire("first")

        async def job(name: str) -> None:
            await queue.acquire(name)
            order.append(name)
            queue.release()

        waiting = [asyncio.create_task(job(n)) for n in ("second", "third")]
        await asyncio.sleep(0)
        assert queue.position("second") == 1 and queue.position("third") == 2
        with pytest.raises(QueueFull):
            queue.check_capacity()
        queue.release()
        await asyncio.gather(*waiting)
        assert queue.inflight == 0 and queue.depth == 0
        return order

    assert asyncio.run(scenario()) == ["second", "third"]


def test_a_cancelled_waiter_leaves_the_queue_and_its_slot_passes_on() -> None:
    async def scenario() -> None:
        queue = ModelQueue(max_inflight=1, max_depth=5)
        await queue.acquire("running")
        gone = asyncio.create_task(queue.acquire("gone"))
        stays = asyncio.create_task(queue.acquire("stays"))
        await asyncio.sleep(0)
        gone.cancel()
        await asyncio.sleep(0)
        assert queue.position("stays") == 1
        queue.release()
        await asyncio.wait_for(stays, 1)
        assert queue.inflight == 1

    asyncio.run(scenario())


def test_eta_grows_with_the_position() -> None:
    queue = ModelQueue(max_inflight=2, max_depth=10, avg_run_s=4.0)
    assert queue.eta_s(0) == 4.0
    assert queue.eta_s(3) == 8.0


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
    "url", ["ftp://x/y", "file:///etc/passwd", "javascript:alert(1)", "http://", "/relative"]
)
def test_callback_urls_must_be_absolute_http(url: str) -> None:
    with pytest.raises(Unprocessable):
        check_callback_url(url)


def test_webhook_signature_covers_timestamp_and_body() -> None:
    signature = sign("k", "1700000000", b'{"a":1}')
    assert signature.startswith("sha256=")
    assert signature != sign("k", "1700000001", b'{"a":1}')
    assert signature != sign("k", "1700000000", b'{"a":2}')
