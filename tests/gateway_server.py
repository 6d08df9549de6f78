"""A real gateway (uvicorn on a private port, in a thread) for the tests, built by create_app."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from gateway.app import create_app
from gateway.settings import Settings
from qie_client.client import QieClient
from tests.triton_server import free_port

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


class GatewayServer:
    def __init__(self, triton_urls: list[str], **overrides: Any) -> None:
        self.port = free_port()
        values: dict[str, Any] = {
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": self.port,
            "TRITON_URLS": ",".join(triton_urls),
            "GATEWAY_API_KEYS": f"{KEY_A},{KEY_B}",
            "TRITON_POLL_INTERVAL_S": 0.5,
            "RATE_LIMIT": "1000/minute",
            "GATEWAY_REPLICA_ID": "test-replica",
        }
        values.update(overrides)
        self.settings = Settings.model_validate(values)
        self.app = create_app(self.settings)
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_config=None, lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the gateway did not start")
            time.sleep(0.05)

    def wait_models(self, *models: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            body = httpx.get(f"{self.url}/health").json()
            if all(body["models"].get(m) for m in models):
                return
            time.sleep(0.2)
        raise TimeoutError(f"models {models} not ready in the gateway: {body}")

    def stop(self) -> None:
        if self.server is not None and self.thread is not None:
            self.server.should_exit = True
            self.thread.join(timeout=20)

    def run(self, coroutine: Any) -> Any:
        """Run a coroutine on the server's event loop (to inspect its store)."""
        assert self.server is not None
        loop = self.app.state.loop
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout=10)

    def job_count(self) -> int:
        counts = self.run(self.app.state.service.store.count_by_status())
        return sum(counts.values())

    def metric(self, name: str, **labels: str) -> float:
        value = self.app.state.metrics.registry.get_sample_value(name, labels)
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
            server.wait_models(*models)
        yield server


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def temp_files(directory: str) -> set[Path]:
    return set(Path(directory).iterdir())
