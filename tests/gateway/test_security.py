"""API keys: where a key is read from, and the owner id that jobs store instead of it."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from gateway.http.security import owner_id, presented_key


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
