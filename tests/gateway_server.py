"""A gateway under test: an in-process GatewayThread (dev_stack/gateways.py) with the test keys, and
the checks the tests make on it (jobs kept, metrics, files and descriptors left behind)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

from dev_stack.gateways import GatewayThread, gateway_env
from dev_stack.processes import free_port
from qie_client.client import QieClient

KEY_A = "test-key-alpha"
KEY_B = "test-key-bravo"


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05) -> Any:
    """Poll until predicate() is truthy and return it; TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError("condition not met in time")


class GatewayServer(GatewayThread):
    def __init__(self, triton_urls: list[str], **overrides: Any) -> None:
        port = free_port()
        values: dict[str, Any] = gateway_env(
            triton_urls,
            port,
            GATEWAY_API_KEYS=f"{KEY_A},{KEY_B}",
            RATE_LIMIT="1000/minute",
            # Every keyless request of the whole suite comes from 127.0.0.1; the throttle has
            # its own tests, with a small rate.
            FAILED_AUTH_RATE="100000/minute",
        )
        values.update(overrides)
        super().__init__(values)

    def job_count(self) -> int:
        """Jobs the store holds now: every replica's, with Redis."""
        url = self.settings.redis_url
        if url is None:
            return len(self.app.state.store)
        with redis.Redis.from_url(url) as client:
            return sum(1 for key in client.scan_iter("qie:job:*") if key.count(b":") == 2)

    def metric(self, name: str, **labels: str) -> float:
        value = self.app.state.services.metrics.registry.get_sample_value(name, labels)
        return value or 0.0

    def client(self, key: str | None = KEY_A) -> QieClient:
        return QieClient(self.url, key, timeout=60)

    def __enter__(self) -> GatewayServer:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


@contextmanager
def running_gateway(
    triton_urls: list[str], *models: str, **overrides: Any
) -> Iterator[GatewayServer]:
    with GatewayServer(triton_urls, **overrides) as server:
        if models:
            server.wait_models(models)
        yield server


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def temp_files(directory: str) -> set[Path]:
    return set(Path(directory).iterdir())
