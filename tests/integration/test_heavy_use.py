"""Heavy use on one replica (QUALITY.md 38): hundreds of progress viewers of one running job,
with Redis as with the memory store, while plain status requests keep coming. Every viewer
sees the job to its end, every status request is answered, and the job runs exactly once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import pytest

from dev_stack.gateways import gateway
from dev_stack.redis import RedisServer
from dev_stack.triton import TritonServer
from tests import images
from tests.gateway_server import KEY_A

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {KEY_A}"}
VIEWERS = 300
# Slow enough that every viewer is connected long before the job ends.
LONG_EDIT = {"steps": 30, "width": 512, "height": 512, "true_cfg_scale": 1.0, "seed": 1}


@pytest.fixture(params=["memory", "redis"])
def replica(
    request: pytest.FixtureRequest, triton_server: TritonServer, redis_server: RedisServer
) -> Iterator[str]:
    """One gateway process (its own GIL, as in production) with the store under test."""
    env = {"GATEWAY_API_KEYS": KEY_A, "RATE_LIMIT": "100000/minute", "MAX_CONCURRENT_REQUESTS": "1"}
    if request.param == "redis":
        redis_server.start()
        redis_server.flush()
        env["REDIS_URL"] = redis_server.url
    with gateway([triton_server.grpc_url], ["qwen_image_edit"], **env) as process:
        yield process.url


async def follow(client: httpx.AsyncClient, url: str, job_id: str) -> list[str]:
    """The event names one viewer sees, to the end of the stream."""
    names = []
    async with client.stream("GET", f"{url}/jobs/{job_id}/events", headers=AUTH) as response:
        if response.status_code != 200:
            return [f"http {response.status_code}: {(await response.aread())[:200]!r}"]
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                names.append(line.split(":", 1)[1].strip())
    return names


async def watch(url: str, job_id: str) -> tuple[list[list[str]], list[int]]:
    limits = httpx.Limits(max_connections=VIEWERS + 10)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        viewers = [asyncio.create_task(follow(client, url, job_id)) for _ in range(VIEWERS)]
        statuses = []
        while not all(v.done() for v in viewers):
            answer = await client.get(f"{url}/jobs/{job_id}", headers=AUTH)
            statuses.append(answer.status_code)
            await asyncio.sleep(0.2)
        return [v.result() for v in viewers], statuses


def test_hundreds_of_viewers_all_see_the_end_and_the_job_runs_once(replica: str) -> None:
    accepted = httpx.post(
        f"{replica}/process",
        headers={**AUTH, "Prefer": "respond-async"},
        files={"image": ("a.png", images.png_bytes(), "image/png")},
        data={"prompt": "brighter", "model": "qwen_image_edit", "options": json.dumps(LONG_EDIT)},
        timeout=30,
    )
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]

    seen, statuses = asyncio.run(watch(replica, job_id))

    cut_short = [names for names in seen if not names or names[-1] != "completed"]
    assert cut_short == [], f"{len(cut_short)} of {VIEWERS} viewers: {cut_short[:3]}"
    assert statuses and set(statuses) == {200}
    events = httpx.get(f"{replica}/jobs/{job_id}/events", headers=AUTH, timeout=30).text
    assert events.count("event: started") == 1  # no lease was lost: it ran once
