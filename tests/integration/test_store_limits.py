"""A store that cannot fill up and runners that do not die quietly (QUALITY.md 45), on a real
Redis: results keep their own TTL, a nearly full Redis refuses new work (503 store_full) while
the job already running finishes, and a read-only Redis is a clear 503 and UNHEALTHY, with the
runners taking jobs again by themselves once it is writable."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest
import redis

from dev_stack.processes import free_port
from dev_stack.triton import TritonServer
from tests import images
from tests.gateway_server import KEY_A, GatewayServer, running_gateway, wait_for

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {KEY_A}"}


def submit(gw: GatewayServer, model: str = "classic_edit", **options: object) -> httpx.Response:
    fields = {"prompt": "invert", "model": model, "options": json.dumps(options)}
    return httpx.post(
        f"{gw.url}/process",
        headers={**AUTH, "Prefer": "respond-async"},
        files={"image": ("a.png", images.png_bytes(), "image/png")},
        data=fields,
        timeout=30,
    )


def final_status(gw: GatewayServer, job_id: str) -> str:
    return str(wait_for(lambda: (s := job(gw, job_id)["status"]) in FINAL and s, timeout=60))


def job(gw: GatewayServer, job_id: str) -> dict[str, object]:
    answer: dict[str, object] = httpx.get(f"{gw.url}/jobs/{job_id}", headers=AUTH).json()
    return answer


FINAL = ("completed", "failed", "cancelled")


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url) as connection:
        yield connection
        connection.config_set("maxmemory", 0)
        connection.replicaof("NO", "ONE")


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_a_result_expires_at_its_own_ttl_and_the_job_stays(
    triton_server: TritonServer, redis_url: str, store: str
) -> None:
    extra = {"REDIS_URL": redis_url} if store == "redis" else {}
    with running_gateway([triton_server.grpc_url], "classic_edit", RESULT_TTL_S=1, **extra) as gw:
        job_id = submit(gw).json()["job_id"]
        assert final_status(gw, job_id) == "completed"
        assert httpx.get(f"{gw.url}/jobs/{job_id}/result", headers=AUTH).status_code == 200
        time.sleep(1.5)
        gone = httpx.get(f"{gw.url}/jobs/{job_id}/result", headers=AUTH)
        assert (gone.status_code, gone.json()["code"]) == (410, "result_expired")
        assert job(gw, job_id)["status"] == "completed"


def test_a_nearly_full_redis_refuses_new_work_and_the_running_job_finishes(
    redis_gateway: GatewayServer, client: redis.Redis
) -> None:
    running = submit(redis_gateway, model="qwen_image_edit", steps=8, width=256, height=256)
    job_id = running.json()["job_id"]
    wait_for(lambda: job(redis_gateway, job_id)["status"] == "processing")
    for i in range(32):  # a Redis holding 32 MiB of other data (1 MiB at a time: a larger
        client.set(f"filler:{i}", b"x" * 1024 * 1024)  # write's buffer would count as used)
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory-policy", "volatile-ttl")
    client.config_set("maxmemory", int(used / 0.93))  # past the 90 % mark, with room to finish

    refused = wait_for(lambda: (r := submit(redis_gateway)).status_code == 503 and r, timeout=10)

    assert refused.json()["code"] == "store_full"
    assert refused.headers["Retry-After"] == "30"
    assert final_status(redis_gateway, job_id) == "completed"
    client.config_set("maxmemory", 0)
    wait_for(lambda: submit(redis_gateway).status_code == 202, timeout=10)


def test_a_redis_out_of_memory_still_answers_reads_uncounted_and_refuses_new_work(
    redis_gateway: GatewayServer, client: redis.Redis
) -> None:
    job_id = submit(redis_gateway).json()["job_id"]
    assert final_status(redis_gateway, job_id) == "completed"
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", 1)  # every write is refused: OOM, even the rate limit's

    assert job(redis_gateway, job_id)["status"] == "completed"
    result = httpx.get(f"{redis_gateway.url}/jobs/{job_id}/result", headers=AUTH)
    assert result.status_code == 200 and result.content.startswith(b"\x89PNG")
    refused = submit(redis_gateway)
    assert (refused.status_code, refused.json()["code"]) == (503, "store_full")


def test_a_read_only_redis_is_503_and_unhealthy_and_the_runners_recover(
    redis_gateway: GatewayServer, client: redis.Redis
) -> None:
    client.replicaof("127.0.0.1", free_port())  # a master that is not there: read-only

    def troubled() -> dict[str, object] | None:
        health: dict[str, object] = httpx.get(f"{redis_gateway.url}/health").json()
        return health if health["trouble"] else None

    health = wait_for(troubled, timeout=20)
    assert health["status"] == "UNHEALTHY"
    assert "read-only" in json.dumps(health["trouble"])
    assert redis_gateway.metric("qie_runner_errors_total", loop="dispatch") >= 1
    refused = submit(redis_gateway)
    assert (refused.status_code, refused.json()["code"]) == (503, "store_unavailable")

    client.replicaof("NO", "ONE")

    wait_for(lambda: httpx.get(f"{redis_gateway.url}/health").json()["status"] == "READY", 30)
    job_id = submit(redis_gateway).json()["job_id"]
    assert final_status(redis_gateway, job_id) == "completed"
