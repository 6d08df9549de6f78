"""Event streams that end (QUALITY.md 28b), on a real gateway, with a ticker task on the
gateway's own event loop proving that no request makes it spin."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import redis

from dev_stack.triton import TritonServer
from tests import images
from tests.gateway_server import KEY_A, GatewayServer, running_gateway, wait_for

pytestmark = pytest.mark.integration
AUTH = {"Authorization": f"Bearer {KEY_A}"}
TICK_S = 0.01
# A 512 x 512 output makes each step of the tiny model slow enough to keep a job running.
SLOW = {"width": 512, "height": 512, "true_cfg_scale": 1.0}


@contextmanager
def ticking(gw: GatewayServer) -> Iterator[dict[str, Any]]:
    """A task on the gateway's loop that counts 10 ms ticks while the body runs."""
    state: dict[str, Any] = {"ticks": 0}

    async def ticker() -> None:
        while True:
            await asyncio.sleep(TICK_S)
            state["ticks"] += 1

    async def start() -> asyncio.Task[None]:
        return asyncio.create_task(ticker())

    task = gw.run(start())
    began = time.monotonic()
    try:
        yield state
    finally:
        state["elapsed"] = time.monotonic() - began

        async def stop() -> None:
            task.cancel()

        gw.run(stop())


def assert_kept_ticking(state: dict[str, Any]) -> None:
    expected = state["elapsed"] / TICK_S
    assert state["ticks"] >= expected * 0.3, (state, expected)


def stream(
    gw: GatewayServer, job_id: str, last_event_id: int | None = None
) -> list[tuple[str, str, Any]]:
    """(id, event, data) of every event until the server ends the stream (comments skipped)."""
    headers = dict(AUTH)
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    events, fields = [], {}
    with httpx.stream("GET", f"{gw.url}/jobs/{job_id}/events", headers=headers, timeout=20) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if not line:
                if "data" in fields:
                    events.append(
                        (fields.get("id", ""), fields["event"], json.loads(fields["data"]))
                    )
                fields = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                fields[name] = value.strip()
    return events


def submit(gw: GatewayServer, **options: Any) -> str:
    response = httpx.post(
        f"{gw.url}/process",
        headers={**AUTH, "Prefer": "respond-async"},
        files={"image": ("a.png", images.png_bytes(), "image/png")},
        data={"prompt": "invert", "model": options.pop("model", "classic_edit"),
              "options": json.dumps(options)},
    )  # fmt: skip
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id


def test_a_resume_at_or_after_the_final_event_gets_it_again_and_ends(
    gateway: GatewayServer,
) -> None:
    job_id = submit(gateway)
    everything = stream(gateway, job_id)
    final_id = int(everything[-1][0])
    assert everything[-1][1] == "completed"
    with ticking(gateway) as state:
        began = time.monotonic()
        for resume_at in (final_id, final_id + 5, 10**6):
            assert stream(gateway, job_id, resume_at) == [everything[-1]]
        assert time.monotonic() - began < 10  # each ended at once, never waiting for a ping
    assert_kept_ticking(state)


def test_a_job_that_expires_while_followed_ends_its_stream_with_an_error(
    triton_server: TritonServer,
) -> None:
    with running_gateway(
        [triton_server.grpc_url],
        "classic_edit",
        "qwen_image_edit",
        # Long enough that the running blocker, which writes at every step, never expires even
        # on a loaded machine; the waiting job, which writes nothing, does.
        JOB_TTL_S=5,
        MAX_CONCURRENT_REQUESTS=1,
    ) as gw:
        blocker = submit(gw, model="qwen_image_edit", steps=60, **SLOW)
        wait_for(lambda: httpx.get(f"{gw.url}/jobs/{blocker}", headers=AUTH).json()["status"]
                 == "processing")  # fmt: skip
        waiting = submit(gw, model="qwen_image_edit", steps=2)  # no writes while it waits
        with ticking(gw) as state:
            events = stream(gw, waiting)
        httpx.post(f"{gw.url}/jobs/{blocker}/cancel", headers=AUTH)
    assert [e[1] for e in events] == ["queued", "error"]
    assert events[-1][2]["code"] == "job_expired"
    assert_kept_ticking(state)


def test_a_job_evicted_from_redis_while_followed_ends_its_stream_with_an_error(
    triton_server: TritonServer, redis_url: str
) -> None:
    with running_gateway(
        [triton_server.grpc_url],
        "qwen_image_edit",
        REDIS_URL=redis_url,
        MAX_CONCURRENT_REQUESTS=1,
    ) as gw:
        blocker = submit(gw, model="qwen_image_edit", steps=60, **SLOW)
        waiting = submit(gw, model="qwen_image_edit", steps=2)
        with ticking(gw) as state, redis.Redis.from_url(redis_url) as client:

            def evict() -> None:
                time.sleep(1.0)
                client.delete(*client.keys(f"qie:job:{waiting}*"))  # as maxmemory eviction does

            evictor = threading.Thread(target=evict)
            evictor.start()
            events = stream(gw, waiting)
            evictor.join()
        httpx.post(f"{gw.url}/jobs/{blocker}/cancel", headers=AUTH)
    assert [e[1] for e in events] == ["queued", "error"]
    assert events[-1][2]["code"] == "job_expired"
    assert_kept_ticking(state)
