"""API keys: where a key is read from, and the owner id that jobs store instead of it."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from gateway.http.security import ANONYMOUS, Authenticator, needs_key, owner_id, presented_key


def _request(headers: dict[str, str]) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return Request({"type": "http", "headers": raw})


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


def _from(address: str, **headers: str) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return Request({"type": "http", "headers": raw, "client": (address, 40000)})


def test_with_auth_off_every_client_address_has_a_rate_bucket_of_its_own() -> None:
    auth = Authenticator([], disabled=True)
    one, other = auth.identify(_from("10.0.0.1")), auth.identify(_from("10.0.0.2"))
    assert one.owner == other.owner == ANONYMOUS  # their jobs are everyone's, as before
    assert one.bucket != other.bucket  # but one client cannot 429 the other


def test_with_keys_the_bucket_is_the_keys_own_wherever_it_comes_from() -> None:
    auth = Authenticator(["k1"], disabled=False)
    here = auth.identify(_from("10.0.0.1", Authorization="Bearer k1"))
    there = auth.identify(_from("10.0.0.9", Authorization="Bearer k1"))
    assert here == there and here.owner == owner_id("k1")


@pytest.mark.parametrize(
    ("path", "keyed"),
    [
        ("/process", True),
        ("/jobs/abc", True),
        ("/batches", True),
        ("/batches/x/events", True),
        ("/models", True),
        ("/health", False),
        ("/metrics", False),
        ("/", False),
        ("/playground/app.js", False),
        ("/docs", False),
        ("/processing", False),  # no route: 404, key or not
        ("/nowhere", False),
    ],
)
def test_the_gate_asks_for_a_key_on_the_api_only(path: str, keyed: bool) -> None:
    assert needs_key(path) is keyed
