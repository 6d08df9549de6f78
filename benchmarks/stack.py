"""A private serving stack for a benchmark: tritonserver and `python -m gateway` on free ports.

Triton starts through scripts/start_triton.sh (via the tests' TritonServer helper) with the dev
model by default; the gateway runs as its own process, as in production, so a benchmark client
in this process does not share its interpreter. Both are stopped on exit, even on Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.triton_server import DEV_MODEL, TritonServer, free_port

ROOT = Path(__file__).resolve().parent.parent
BENCH_KEY = "bench-key"
MODELS = ("classic_edit", "qwen_image_edit")


@dataclass(frozen=True)
class TritonEndpoints:
    grpc_url: str  # host:port
    metrics_url: str  # host:port/metrics, as perf_analyzer wants it


@contextmanager
def triton(
    models: Sequence[str] = MODELS,
    *,
    external_grpc: str | None = None,
    external_metrics: str | None = None,
    model_id: str | Path = DEV_MODEL,
    timeout: float = 600.0,
) -> Iterator[TritonEndpoints]:
    """Use the Triton at `external_grpc`, or start one with `models` and stop it afterwards."""
    if external_grpc:
        host = external_grpc.rsplit(":", 1)[0]
        yield TritonEndpoints(external_grpc, external_metrics or f"{host}:8002/metrics")
        return
    server = TritonServer(models, model_id=model_id)
    server.start()
    try:
        server.wait_ready(timeout)
        yield TritonEndpoints(server.grpc_url, server.metrics_url.removeprefix("http://"))
    finally:
        server.stop()
        server.log_path.unlink(missing_ok=True)


class GatewayProcess:
    """`python -m gateway` on a free port, configured by environment like a deployment."""

    def __init__(self, triton_urls: Sequence[str], **env: str) -> None:
        self.port = free_port()
        fd, log_name = tempfile.mkstemp(prefix="bench-gateway-", suffix=".log")
        os.close(fd)
        self.log_path = Path(log_name)
        self.env = {
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(self.port),
            "TRITON_URLS": ",".join(triton_urls),
            "GATEWAY_API_KEYS": BENCH_KEY,
            "GATEWAY_AUTH_DISABLED": "false",
            "RATE_LIMIT": "1000000/minute",  # the benchmark measures serving, not the limiter
            "TRITON_POLL_INTERVAL_S": "0.5",
            "GATEWAY_REPLICA_ID": f"bench-{self.port}",
            "REDIS_URL": "",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, models: Sequence[str], timeout: float = 120.0) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway"],
                cwd=ROOT,
                env={**os.environ, **self.env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        body: object = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the gateway exited early:\n{self.log_tail()}")
            try:
                body = httpx.get(f"{self.url}/health", timeout=2).json()
                ready = body.get("models", {}) if isinstance(body, dict) else {}
                if all(ready.get(m) for m in models):
                    return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.2)
        raise TimeoutError(f"the gateway did not report {list(models)} ready: {body}")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log_path.unlink(missing_ok=True)


@contextmanager
def gateway(
    triton_grpc: str, models: Sequence[str] = MODELS, **env: str
) -> Iterator[GatewayProcess]:
    process = GatewayProcess([triton_grpc], **env)
    try:
        process.start(models)
        yield process
    finally:
        process.stop()


def stop_on_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt, so `finally` blocks stop what a benchmark started."""

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
