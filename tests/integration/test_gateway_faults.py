"""Faults on loopback: Triton killed or absent, Redis restarted, a gateway replica killed."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import httpx
import pytest

from dev_stack.gateways import GatewayProcess, gateway_env
from dev_stack.processes import free_port
from dev_stack.redis import RedisServer
from dev_stack.triton import TritonServer
from qie_client.client import QieClient, QieError
from tests import images
from tests.gateway_server import KEY_A, running_gateway, wait_for
from tests.model_metrics import model_counts, steps_until_cancelled

pytestmark = pytest.mark.integration


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
    triton_server: TritonServer, redis_server: RedisServer, redis_url: str
) -> None:
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


LEASE = {"JOB_LEASE_S": "2", "MAX_CONCURRENT_REQUESTS": "1"}
# A 512 x 512 output makes each step of the tiny model take a while (~0.3 s here), so a job is
# still running when the test acts on it.
SLOW_STEPS = {"width": 512, "height": 512, "true_cfg_scale": 1.0, "seed": 3}


def test_a_killed_replicas_jobs_run_on_another_replica(
    triton_server: TritonServer, redis_url: str
) -> None:
    """SIGKILL while one job runs and two wait: the other replica runs the two, and runs the
    killed one's job again (its gRPC stream died with it, so Triton stopped that request)."""
    env = gateway_env(
        [triton_server.grpc_url],
        free_port(),
        REDIS_URL=redis_url,
        GATEWAY_API_KEYS=KEY_A,
        GATEWAY_REPLICA_ID="doomed",
        **LEASE,
    )
    doomed = GatewayProcess(env)
    doomed.start()
    try:
        doomed.wait_models(["qwen_image_edit", "classic_edit"])
        with QieClient(doomed.url, KEY_A) as client:
            running = client.submit(images.png_bytes(), "x", options={**SLOW_STEPS, "steps": 20})
            wait_for(lambda: client.job(running)["progress"]["step"] >= 1)
            queued = [
                client.submit(images.png_bytes(), "y", options={"steps": 2}) for _ in range(2)
            ]
            assert [client.job(j)["queue_position"] for j in queued] == [1, 2]
        doomed.kill()  # a crash: no shutdown, no release, no final write
    finally:
        doomed.stop()
        doomed.log_path.unlink(missing_ok=True)
    with (
        running_gateway(
            [triton_server.grpc_url], "qwen_image_edit", REDIS_URL=redis_url,
            GATEWAY_REPLICA_ID="survivor", **LEASE,
        ) as survivor,
        survivor.client() as client,
    ):  # fmt: skip
        events = list(client.events(running))
        started = [e.data for e in events if e.event == "started"]
        assert started == [{"attempt": 1}, {"attempt": 2}]
        assert events[-1].event == "completed"
        for job_id in queued:
            assert [e.event for e in client.events(job_id)][-1] == "completed"
            assert client.job(job_id)["status"] == "completed"
        assert images.decode(client.result(running)).format == "PNG"


def test_cancel_sent_to_one_replica_stops_the_job_on_another(
    triton_server: TritonServer, redis_url: str
) -> None:
    urls = [triton_server.grpc_url]
    before = model_counts(triton_server, "qwen_image_edit")
    with (
        running_gateway(urls, "qwen_image_edit", REDIS_URL=redis_url, GATEWAY_REPLICA_ID="a")
        as runner,
        runner.client() as on_runner,
    ):  # fmt: skip
        job_id = on_runner.submit(images.png_bytes(), "x", options={**SLOW_STEPS, "steps": 100})
        wait_for(lambda: on_runner.job(job_id)["progress"]["step"] >= 1)
        # Replica b starts only now: the job runs on a, and b can only reach it through Redis.
        with (
            running_gateway(urls, "qwen_image_edit", REDIS_URL=redis_url, GATEWAY_REPLICA_ID="b")
            as other,
            other.client() as on_other,
        ):  # fmt: skip
            wait_for(lambda: on_other.job(job_id)["progress"]["step"] >= 2)
            answer = on_other.cancel(job_id)
            assert answer["status"] == "cancelled"
            assert on_runner.job(job_id)["progress"]["step"] < 100
            assert [e.event for e in on_runner.events(job_id)][-1] == "cancelled"
            assert other.metric("qie_inflight_requests", model="qwen_image_edit") == 0
    assert steps_until_cancelled(triton_server, "qwen_image_edit", before) < 100


def test_with_two_triton_urls_edits_go_to_the_one_that_answers(triton_server: TritonServer) -> None:
    dead = f"127.0.0.1:{free_port()}"
    with (
        running_gateway([dead, triton_server.grpc_url], "classic_edit") as gw,
        gw.client() as client,
    ):
        health = httpx.get(f"{gw.url}/health", headers={"Authorization": f"Bearer {KEY_A}"})
        assert health.json()["triton"] == {dead: False, triton_server.grpc_url: True}
        anonymous = httpx.get(f"{gw.url}/health").json()  # the hosts only to a key
        assert anonymous["triton"] == {"triton-1": False, "triton-2": True}
        for _ in range(3):
            assert client.edit(images.png_bytes(), "invert", model="classic_edit").image


def test_triton_told_to_stop_mid_edit_stops_it_within_a_step_and_says_retry() -> None:
    """SIGTERM to the start script alone, as `docker stop` sends it: the script passes it on to
    the model stubs, so the edit ends at its step instead of running its 100 to the end."""
    server = TritonServer(models=["qwen_image_edit"])
    server.start()
    try:
        server.wait_ready()
        with (
            running_gateway([server.grpc_url], "qwen_image_edit") as gw,
            gw.client() as client,
        ):
            job_id = client.submit(images.png_bytes(), "x", options={**SLOW_STEPS, "steps": 100})
            wait_for(lambda: client.job(job_id)["progress"]["step"] >= 2)
            assert server.process is not None
            os.kill(server.process.pid, signal.SIGTERM)
            job = wait_for(lambda: (j := client.job(job_id))["status"] == "failed" and j)
            assert job["error"]["code"] == "model_unavailable"
            assert "shutting down" in job["error"]["message"]
            assert job["progress"]["step"] < 100
        server.reap(30)
        assert not server.group_alive()
    finally:
        server.stop()
