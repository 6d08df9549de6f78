"""Idempotency that retries safely (QUALITY.md 26, 44): a retry after a dropped connection gets
an answer, not the cancel its disconnect caused, and a key reused for another request is refused
whatever field differs."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests import images
from tests.gateway_server import KEY_A, GatewayServer

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {KEY_A}"}
# Long enough that the first caller has given up before it ends (seconds on the tiny model).
SLOW = {"steps": 48, "width": 256, "height": 256, "true_cfg_scale": 1.0, "seed": 3}
QUICK = {**SLOW, "steps": 2}


@pytest.fixture(params=["memory", "redis"])
def replica(request: pytest.FixtureRequest) -> GatewayServer:
    fixture = "gateway" if request.param == "memory" else "redis_gateway"
    server: GatewayServer = request.getfixturevalue(fixture)
    return server


def process(
    gw: GatewayServer,
    key: str,
    wait_s: float = 60,
    options: dict[str, Any] = QUICK,
    **fields: str,
) -> httpx.Response:
    """POST /process; `fields` are form fields (`timeout` among them), `wait_s` the client's."""
    data: dict[str, Any] = {"prompt": "brighter", "options": json.dumps(options), **fields}
    return httpx.post(
        f"{gw.url}/process",
        headers={**AUTH, "Idempotency-Key": key},
        files={"image": ("a.png", images.png_bytes(), "image/png")},
        data=data,
        timeout=wait_s,
    )


def test_a_retry_after_a_dropped_connection_gets_the_edit(replica: GatewayServer) -> None:
    with pytest.raises(httpx.ReadTimeout):
        process(
            replica, "retry-1", wait_s=0.5, options=SLOW
        )  # gives up: the gateway cancels that edit

    again = process(replica, "retry-1", options=SLOW)

    assert again.status_code == 200, again.text[:300]
    assert again.json()["success"] is True


@pytest.mark.parametrize(
    "other",
    [{"image_id": "photo-2"}, {"timeout": "120"}, {"async": "false"}],
    ids=["image-id", "deadline", "sync-not-async"],
)
def test_a_key_reused_for_another_request_is_refused(
    gateway: GatewayServer, other: dict[str, str]
) -> None:
    key = f"reused-{next(iter(other))}"
    same = {"image_id": "photo-1", "async": "true"}
    assert process(gateway, key, **same).status_code == 202

    again = process(gateway, key, **{**same, **other})

    assert again.status_code == 422, again.text[:300]
    assert again.json()["code"] == "idempotency_key_reused"


def test_the_same_request_again_is_the_same_job(gateway: GatewayServer) -> None:
    first = process(gateway, "same-1", image_id="photo-1", **{"async": "true"})
    again = process(gateway, "same-1", image_id="photo-1", **{"async": "true"})
    assert first.status_code == again.status_code == 202
    assert first.json()["job_id"] == again.json()["job_id"]
