"""Restarts in the running stack: the gateway restarted by hand, and Triton dying on its own.

Triton dies by a SIGKILL of its main process, sent from the host to the pid `docker inspect`
reports. To Docker that is a crash, which `restart: unless-stopped` answers with a restart.
`docker kill` would not do: Docker counts it as a manual stop and restarts nothing.
"""

from __future__ import annotations

import os
import signal
import time

import httpx
import numpy as np
import pytest

from dev_stack.compose import GATEWAY
from dev_stack.containers import RunningStack
from tests import images
from tests.gateway_server import wait_for

pytestmark = [pytest.mark.containers, pytest.mark.timeout(1800)]
TRITON = "triton-cpu"
TERMINAL = ("completed", "failed", "cancelled")
# Triton loads both models and warms the tiny one up before it reports ready.
RECOVERY_TIMEOUT_S = 300


def ready(stack: RunningStack) -> bool:
    try:
        return bool(stack.health()["status"] == "READY")
    except (httpx.HTTPError, ValueError):
        return False  # restarting: nothing listens yet


def starts(stack: RunningStack, service: str) -> tuple[str, int]:
    """When the service's container last started, and how often Docker restarted it."""
    container = stack.container(service)
    return container["State"]["StartedAt"], container["RestartCount"]


def test_jobs_in_redis_stay_readable_across_a_gateway_restart(stack: RunningStack) -> None:
    with stack.client() as client:
        finished = client.submit(images.jpeg_bytes(), "invert", model="classic_edit")
        wait_for(lambda: client.job(finished)["status"] == "completed", timeout=60, interval=0.2)
        result_before = client.result(finished)
        running = client.submit(images.png_bytes(), "x", options={"steps": 100})
        wait_for(lambda: client.job(running)["status"] == "processing", timeout=60, interval=0.2)
    container_before = stack.stack.container(GATEWAY)
    started_before, _ = starts(stack, GATEWAY)

    stack.stack.compose("restart", GATEWAY)
    wait_for(lambda: ready(stack), timeout=120, interval=0.5)

    assert stack.stack.container(GATEWAY) == container_before  # the same container, restarted
    assert starts(stack, GATEWAY)[0] != started_before
    with stack.client() as client:
        assert client.job(finished)["status"] == "completed"
        assert client.result(finished) == result_before
        # Nothing stuck: the job in flight finished within the stop grace period, or it ended
        # failed with a reason that says the gateway went away.
        final = wait_for(
            lambda: (j := client.job(running))["status"] in TERMINAL and j, timeout=60, interval=0.5
        )
        if final["status"] == "failed":
            assert final["error"]["code"] in ("gateway_shutdown", "gateway_restarted")
        else:
            assert final["status"] == "completed"


def test_triton_killed_mid_job_fails_it_within_5_s_and_the_stack_recovers_by_itself(
    stack: RunningStack,
) -> None:
    wait_for(lambda: ready(stack), timeout=RECOVERY_TIMEOUT_S, interval=0.5)
    gateway_before = starts(stack, GATEWAY)
    triton = stack.container(TRITON)
    with stack.client() as client:
        job_id = client.submit(images.png_bytes(), "x", options={"steps": 100})
        wait_for(lambda: client.job(job_id)["progress"]["step"] >= 1, timeout=60, interval=0.2)

        os.kill(triton["State"]["Pid"], signal.SIGKILL)
        killed_at = time.monotonic()
        failed = wait_for(
            lambda: (j := client.job(job_id))["status"] == "failed" and j, timeout=5, interval=0.1
        )
        assert time.monotonic() - killed_at < 5
        assert failed["error"]["code"] == "triton_unavailable"
        assert "Triton" in failed["error"]["message"]

        # The restart policy brings Triton back, and its health check passes again (it restarts
        # at "starting"); then the gateway, polling Triton, finds it on its own.
        wait_for(
            lambda: starts(stack, TRITON)[1] > triton["RestartCount"], timeout=60, interval=0.5
        )
        wait_for(
            lambda: stack.container(TRITON)["State"]["Health"]["Status"] == "healthy",
            timeout=RECOVERY_TIMEOUT_S,
            interval=1,
        )
        wait_for(lambda: ready(stack), timeout=RECOVERY_TIMEOUT_S, interval=1)
        edited = client.edit(images.jpeg_bytes(), "make it black and white", model="classic_edit")
        pixels = np.asarray(images.decode(edited.image).convert("RGB"))
        assert (pixels[..., 0] == pixels[..., 2]).all()
        assert client.edit(images.png_bytes(), "again", options={"steps": 2}).image

    assert starts(stack, GATEWAY) == gateway_before  # nobody touched the gateway
