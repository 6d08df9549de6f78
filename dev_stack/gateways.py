"""The gateway: `python -m gateway` as a process (configured by its environment, like a
deployment), or create_app served by uvicorn in a thread of this process."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import time
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from dev_stack.processes import ProcessGroup, free_port, temp_log
from dev_stack.triton import DEFAULT_MODELS

T = TypeVar("T")


def gateway_env(triton_urls: Sequence[str], port: int, **overrides: str) -> dict[str, str]:
    """A gateway's environment for a private stack: loopback only, quick Triton polling."""
    return {
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_PORT": str(port),
        "TRITON_URLS": ",".join(triton_urls),
        "TRITON_POLL_INTERVAL_S": "0.5",
        "GATEWAY_REPLICA_ID": f"replica-{port}",
        **overrides,
    }


def ready_models(gateway_url: str) -> dict[str, bool]:
    import httpx

    try:
        body = httpx.get(f"{gateway_url}/health", timeout=2).json()
    except (httpx.HTTPError, ValueError):
        return {}
    models: dict[str, bool] = body.get("models", {}) if isinstance(body, dict) else {}
    return models


class GatewayProcess(ProcessGroup):
    """`python -m gateway`, configured by its environment like a deployment."""

    def __init__(
        self, env: Mapping[str, str], log_path: Path | None = None, *, inherit_output: bool = False
    ) -> None:
        super().__init__(log_path or temp_log("gateway-"), inherit_output=inherit_output)
        self.env = dict(env)
        self.port = int(self.env["GATEWAY_PORT"])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.spawn([sys.executable, "-m", "gateway"], self.env)

    def wait_models(self, models: Sequence[str], timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"the gateway exited early:\n{self.log_tail(30)}")
            ready = ready_models(self.url)
            if ready and all(ready.get(m) for m in models):
                return
            time.sleep(0.2)
        raise TimeoutError(f"the gateway did not report {list(models)} ready:\n{self.log_tail()}")


class GatewayThread:
    """The gateway built by create_app, served by uvicorn in a thread of this process."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        import uvicorn

        from gateway.app import create_app
        from gateway.http.server import uvicorn_config
        from gateway.settings import Settings

        self.settings = Settings.model_validate(dict(settings))
        self.port = self.settings.port
        self.app = create_app(self.settings)
        config = uvicorn_config(self.app, self.settings, host="127.0.0.1", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the gateway did not start")
            time.sleep(0.05)

    def wait_models(self, models: Sequence[str], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready = ready_models(self.url)
            if all(ready.get(m) for m in models):
                return
            time.sleep(0.2)
        raise TimeoutError(f"models {list(models)} not ready in the gateway")

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        """Run a coroutine on the server's event loop."""
        loop: asyncio.AbstractEventLoop = self.app.state.loop
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout=timeout)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


@contextlib.contextmanager
def gateway(
    triton_urls: Sequence[str], models: Sequence[str] = DEFAULT_MODELS, **env: str
) -> Iterator[GatewayProcess]:
    """A `python -m gateway` on a free port, stopped (and its log removed) afterwards."""
    process = GatewayProcess(gateway_env(triton_urls, free_port(), **env))
    try:
        process.start()
        process.wait_models(models)
        yield process
    finally:
        process.stop(timeout=30)
        process.log_path.unlink(missing_ok=True)
