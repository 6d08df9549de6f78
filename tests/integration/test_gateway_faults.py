"""Faults on loopback: Triton killed or absent, Redis restarted, a gateway replica killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from qie_client.client import QieClient, QieError
from tests import images
from tests.gateway_server import KEY_A, running_gateway, wait_for
from scripts.stack import RedisServer
from scripts.stack import TritonServer, free_port

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def private_triton() -> Iterator[TritonServer]:
    """A Triton of this module's own, since these tests kill it."""
    server = TritonServer(models=["qwen_image_edit"])
    server.start()
    server.wait_ready()
    try:
        yield server
    finally:
        server.stop()


def test_triton_killed_mid_job_fails_the_job_and_the_gateway_recovers(
    private_triton: TritonServer,
) -> None:
    with running_gateway([private_triton.grpc_url], "qwen_image_edit") as gw, gw.client() as client:
        job_id = client.submit(images.png_bytes(), "x", options={"steps": 100})
        wait_for(lambda: client.job(job_id)["progress"]["step"] >= 1)
        private_triton.kill()
        killed_at = time.monotonic()
        failed = wait_for(lambda: (j := client.job(job_id))["status"] == "failed" and j, timeout=5)
        assert time.monotonic() - killed_at < 5
        assert failed["error"]["code"] == "triton_unavailable"
        assert "Triton" in failed["error"]["message"]
        wait_for(lambda: httpx.get(f"{gw.url}/health").json()["status"] == "UNHEALTHY", timeout=10)
        assert httpx.get(f"{gw.url}/health").status_code == 503

        private_triton.start()
        private_triton.wait_ready()
        wait_for(lambda: httpx.get(f"{gw.url}/health").json()["status"] == "READY", timeout=30)
        result = client.edit(images.png_bytes(), "again", options={"steps": 2})
        assert result.image


def test_gateway_starts_when_triton_is_unreachable_and_says_starting() -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    with running_gateway([nowhere]) as gw:
        for _ in range(3):
            response = httpx.get(f"{gw.url}/health")
            assert response.status_code == 503
            assert response.json()["status"] == "STARTING"
            time.sleep(0.6)  # several poller rounds: it keeps running, never crashes
        refused = httpx.post(
            f"{gw.url}/process",
            headers={"Authorization": f"Bearer {KEY_A}"},
            files={"image": ("a.png", images.png_bytes(), "image/png")},
            data={"prompt": "x"},
        )
        assert refused.status_code == 404
        assert refused.json()["code"] == "model_not_found"


def test_redis_restart_while_a_job_runs_loses_nothing(
    triton_server: TritonServer, redis_server: RedisServer
) -> None:
    redis_server.start()
    redis_server.flush()
    with (
        running_gateway(
            [triton_server.grpc_url], "qwen_image_edit", REDIS_URL=redis_server.url
        ) as gw,
        gw.client() as client,
    ):
        job_id = client.submit(images.png_bytes(), "x", options={"steps": 30})
        wait_for(lambda: client.job(job_id)["progress"]["step"] >= 2)
        with redis_server.stopped():
            started = time.monotonic()
            with pytest.raises(QieError) as down:
                client.job(job_id)
            assert down.value.status == 503 and down.value.code == "store_unavailable"
            assert time.monotonic() - started < 5  # an answer, not a hang
            time.sleep(1.0)  # the job keeps running in Triton meanwhile
        final = wait_for(
            lambda: (j := client.job(job_id))["status"] in ("completed", "failed") and j, 60
        )
        assert final["status"] == "completed", final
        events = [e.event for e in client.events(job_id)]
        assert events[0] == "queued" and events[-1] == "completed"
        assert images.decode(client.result(job_id)).width == final["result"]["width"]


def _gateway_process(triton_url: str, redis_url: str, port: int) -> subprocess.Popen[bytes]:
    env = dict(
        os.environ,
        GATEWAY_HOST="127.0.0.1",
        GATEWAY_PORT=str(port),
        TRITON_URLS=triton_url,
        REDIS_URL=redis_url,
        GATEWAY_API_KEYS=KEY_A,
        GATEWAY_REPLICA_ID="replica-under-test",
        TRITON_POLL_INTERVAL_S="0.5",
    )
    return subprocess.Popen(
        [sys.executable, "-m", "gateway"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def test_jobs_of_a_killed_gateway_end_failed_when_it_restarts(
    triton_server: TritonServer, redis_server: RedisServer
) -> None:
    redis_server.start()
    redis_server.flush()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    first = _gateway_process(triton_server.grpc_url, redis_server.url, port)
    try:
        wait_for(lambda: _ready(url), timeout=30)
        with QieClient(url, KEY_A) as client:
            job_id = client.submit(images.png_bytes(), "x", options={"steps": 100})
            wait_for(lambda: client.job(job_id)["status"] == "processing")
        os.killpg(first.pid, signal.SIGKILL)  # a crash: nothing runs its shutdown
        first.wait()
        second = _gateway_process(triton_server.grpc_url, redis_server.url, port)
        try:
            wait_for(lambda: _ready(url), timeout=30)
            with QieClient(url, KEY_A) as client:
                job = client.job(job_id)
                assert job["status"] == "failed"
                assert job["error"]["code"] == "gateway_restarted"
                assert [e.event for e in client.events(job_id)][-1] == "failed"
        finally:
            os.killpg(second.pid, signal.SIGTERM)
            second.wait(timeout=30)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_cancel_sent_to_one_replica_stops_the_job_on_another(
    triton_server: TritonServer, redis_server: RedisServer
) -> None:
    redis_server.start()
    redis_server.flush()
    urls = [triton_server.grpc_url]
    with (
        running_gateway(
            urls, "qwen_image_edit", REDIS_URL=redis_server.url, GATEWAY_REPLICA_ID="a"
        ) as runner,
        running_gateway(
            urls, "qwen_image_edit", REDIS_URL=redis_server.url, GATEWAY_REPLICA_ID="b"
        ) as other,
        runner.client() as on_runner,
        other.client() as on_other,
    ):
        job_id = on_runner.submit(images.png_bytes(), "x", options={"steps": 100})
        wait_for(lambda: on_other.job(job_id)["progress"]["step"] >= 2)
        answer = on_other.cancel(job_id)
        assert answer["status"] == "cancelled"
        assert on_runner.job(job_id)["progress"]["step"] < 100
        assert [e.event for e in on_runner.events(job_id)][-1] == "cancelled"


def test_with_two_triton_urls_edits_go_to_the_one_that_answers(triton_server: TritonServer) -> None:
    dead = f"127.0.0.1:{free_port()}"
    with (
        running_gateway([dead, triton_server.grpc_url], "classic_edit") as gw,
        gw.client() as client,
    ):
        health = httpx.get(f"{gw.url}/health").json()
        assert health["triton"] == {dead: False, triton_server.grpc_url: True}
        for _ in range(3):
            assert client.edit(images.png_bytes(), "invert", model="classic_edit").image
