"""The one stack launcher: tritonserver, redis-server and the gateway (a process, or a thread in
this process), on free ports. `make run` (scripts/run_stack.py), the test fixtures and the
benchmarks all start their parts through here.

Each child runs in its own process group, so stopping it also ends what it forked (Triton's
Python-backend stubs), and nothing is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
START_SCRIPT = ROOT / "scripts" / "start_triton.sh"
DEV_MODEL = ROOT / "models" / "tiny-qwen-image-edit"
DEFAULT_MODELS = ("classic_edit", "qwen_image_edit")
SHM_DIR = Path("/dev/shm")
SHM_REGION = re.compile(r"triton_python_backend_shm_region_[0-9a-f-]+")
RESERVED_PORTS = range(8000, 8004)  # a dev server (gateway and Triton) may hold these
T = TypeVar("T")


def free_port() -> int:
    """A TCP port nobody listens on now, outside the ports a dev server may use."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in RESERVED_PORTS:
            return port


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def model_env(model_id: str | Path | None = None) -> dict[str, str]:
    """What Triton's models are told: the weights (the dev model carries its own stand-ins)."""
    return {"MODEL_ID": str(model_id or DEV_MODEL)}


def _temp_log(prefix: str) -> Path:
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=".log")
    os.close(fd)
    return Path(name)


class ProcessGroup:
    """A child in a process group of its own: signalled, reaped and listed as one."""

    def __init__(self, log_path: Path, *, inherit_output: bool = False) -> None:
        self.log_path = log_path
        self.inherit_output = inherit_output  # print to this terminal instead of the log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def spawn(self, command: Sequence[str], env: Mapping[str, str]) -> None:
        if self.inherit_output:
            self.process = subprocess.Popen(
                list(command),
                cwd=ROOT,
                env={**os.environ, **env},
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            return
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start {time.strftime('%H:%M:%S')} =====\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                list(command),
                cwd=ROOT,
                env={**os.environ, **env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def signal_group(self, sig: signal.Signals) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)

    def group_pids(self) -> list[int]:
        """The live processes of the group (the leader and what it forked)."""
        if self.process is None:
            return []
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                # The command name may hold spaces; the fields after its ")" are fixed.
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == self.process.pid and fields[0] != "Z":
                pids.append(int(stat.parent.name))
        return pids

    def group_alive(self) -> bool:
        return bool(self.group_pids())

    def reap(self, timeout: float = 10.0) -> None:
        if self.process is None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):  # SIGKILL cannot be ignored
            self.process.wait(timeout=timeout)
        # Children are reparented when the leader dies first; wait until they are gone too,
        # so the next start gets the ports (and any shared memory) back.
        deadline = time.monotonic() + timeout
        while self.group_alive() and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the whole group, then SIGKILL whatever is left after `timeout` seconds."""
        if self.process is None:
            return
        self.signal_group(signal.SIGTERM)
        self.reap(timeout)
        if self.group_alive():
            self.kill()

    def kill(self) -> None:
        """SIGKILL the whole group at once: a crash, as far as its clients can tell."""
        self.signal_group(signal.SIGKILL)
        self.reap()

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return f"(no log at {self.log_path})"
        tail = "\n".join(text.splitlines()[-lines:])
        return f"--- last {lines} lines of {self.log_path} ---\n{tail}"


class TritonServer(ProcessGroup):
    """tritonserver through scripts/start_triton.sh (as `make run` and the image start it)."""

    def __init__(
        self,
        models: Sequence[str] = DEFAULT_MODELS,
        *,
        env: Mapping[str, str] | None = None,
        model_id: str | Path | None = None,
        ports: tuple[int, int, int] | None = None,
        log_path: Path | None = None,
    ) -> None:
        super().__init__(log_path or _temp_log("tritonserver-"))
        self.models = tuple(models)
        self.http_port, self.grpc_port, self.metrics_port = ports or (
            free_port(),
            free_port(),
            free_port(),
        )
        self.env = {
            "PYTHON": sys.executable,
            **model_env(model_id),
            "TRITON_MODELS": ",".join(self.models),
            "TRITON_HTTP_PORT": str(self.http_port),
            "TRITON_GRPC_PORT": str(self.grpc_port),
            "TRITON_METRICS_PORT": str(self.metrics_port),
            # Unloading takes a couple of seconds idle and several times that on a busy machine;
            # a stop cut short leaves the stubs' shared memory behind.
            "TRITON_EXIT_TIMEOUT": "15",
            **(env or {}),
        }

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def start(self) -> None:
        if not self.running:
            self.spawn([str(START_SCRIPT)], self.env)

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Block until the server and every model say ready; fail with the log tail otherwise."""
        deadline = time.monotonic() + timeout
        urls = [f"{self.http_url}/v2/health/ready"] + [
            f"{self.http_url}/v2/models/{model}/ready" for model in self.models
        ]
        while time.monotonic() < deadline:
            if not self.running:
                code = None if self.process is None else self.process.returncode
                raise RuntimeError(
                    f"tritonserver exited (code {code}) before ready\n{self.log_tail()}"
                )
            if all(http_ok(url) for url in urls):
                return
            time.sleep(0.25)
        raise TimeoutError(f"tritonserver not ready after {timeout:.0f}s\n{self.log_tail()}")

    def stop(self, timeout: float = 30.0) -> None:
        super().stop(timeout)

    def kill(self) -> None:
        regions = self.shm_regions()
        super().kill()
        # A killed stub cannot unlink its shared memory; do it for it, so nothing is left.
        for region in regions:
            (SHM_DIR / region).unlink(missing_ok=True)

    def restart(self, timeout: float = 120.0) -> None:
        self.stop()
        self.start()
        self.wait_ready(timeout)

    def shm_regions(self) -> list[str]:
        """Names of the shared-memory regions (in /dev/shm) the Python stubs of this server use."""
        regions: set[str] = set()
        for pid in self.group_pids():
            try:
                cmdline = (Path("/proc") / str(pid) / "cmdline").read_bytes()
            except OSError:
                continue
            regions.update(SHM_REGION.findall(cmdline.decode(errors="replace")))
        return sorted(regions)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def __enter__(self) -> TritonServer:
        self.start()
        self.wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RedisServer(ProcessGroup):
    """redis-server on 127.0.0.1 with an append-only file fsynced on every write, so a restart
    (even after SIGKILL) keeps what was written, as a production Redis with AOF does."""

    def __init__(self, directory: Path, binary: str = "redis-server") -> None:
        super().__init__(directory / "redis.log")
        self.directory = directory
        self.binary = binary
        self.port = free_port()
        self.paused = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0) -> None:
        """Start the server (or resume it) and wait until it answers PING."""
        if self.running:
            self.resume()
            return
        command = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--daemonize", "no",
            "--logfile", str(self.log_path),
        ]  # fmt: skip
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, start_new_session=True)
        self._wait_ready(timeout)

    def stop(self, timeout: float = 10.0, *, hard: bool = False) -> None:
        """SIGTERM (a clean shutdown) or, with `hard`, SIGKILL (a crash); waits for the exit."""
        if self.process is None:
            return
        if self.process.poll() is None:
            if hard:
                self.process.kill()
            else:
                self.resume()  # a stopped process would hold SIGTERM until continued
                self.process.terminate()
            self.process.wait(timeout)
        self.process = None
        self.paused = False

    def restart(self, *, hard: bool = False) -> None:
        self.stop(hard=hard)
        self.start()

    def pause(self) -> None:
        """SIGSTOP: the port still accepts connections but nothing answers (a hung Redis)."""
        if self.process is not None and not self.paused:
            os.kill(self.process.pid, signal.SIGSTOP)
            self.paused = True

    def resume(self) -> None:
        if self.process is not None and self.paused:
            os.kill(self.process.pid, signal.SIGCONT)
            self.paused = False

    @contextlib.contextmanager
    def stopped(self, *, hard: bool = False) -> Iterator[None]:
        """Down for the body of the `with`, up again (same port, same data) afterwards."""
        self.stop(hard=hard)
        try:
            yield
        finally:
            self.start()

    @contextlib.contextmanager
    def hung(self) -> Iterator[None]:
        self.pause()
        try:
            yield
        finally:
            self.resume()

    def flush(self) -> None:
        import redis

        with redis.Redis.from_url(self.url, socket_timeout=5) as client:
            client.flushall()

    def info(self, section: str) -> dict[str, Any]:
        import redis

        with redis.Redis.from_url(self.url, socket_timeout=5) as client:
            answer: dict[str, Any] = client.info(section)
            return answer

    def _wait_ready(self, timeout: float) -> None:
        import redis

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {self.process.returncode}:\n{self.log_tail(20)}"
                )
            try:
                with redis.Redis.from_url(self.url, socket_timeout=1) as client:
                    if client.ping():
                        return
            except redis.RedisError:  # refused, or LOADING while it replays the AOF
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer within {timeout}s:\n{self.log_tail(20)}")


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
        super().__init__(log_path or _temp_log("gateway-"), inherit_output=inherit_output)
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
        from gateway.settings import Settings

        self.settings = Settings.model_validate(dict(settings))
        self.port = self.settings.port
        self.app = create_app(self.settings)
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_config=None, lifespan="on"
        )
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


@dataclass(frozen=True)
class TritonEndpoints:
    grpc_url: str  # host:port
    metrics_url: str  # host:port/metrics, as perf_analyzer wants it

    @classmethod
    def given(cls, grpc_url: str | None, metrics_url: str | None = None) -> TritonEndpoints | None:
        """A Triton someone else runs, or None (start one); metrics default to its port 8002."""
        if not grpc_url:
            return None
        host = grpc_url.rsplit(":", 1)[0]
        return cls(grpc_url, metrics_url or f"{host}:8002/metrics")


@contextlib.contextmanager
def triton(
    models: Sequence[str] = DEFAULT_MODELS,
    *,
    external: TritonEndpoints | None = None,
    model_id: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 600.0,
) -> Iterator[TritonEndpoints]:
    """Use the `external` Triton, or start one with `models` and stop it afterwards."""
    if external is not None:
        yield external
        return
    server = TritonServer(models, model_id=model_id, env=env)
    server.start()
    try:
        server.wait_ready(timeout)
        yield TritonEndpoints(server.grpc_url, server.metrics_url.removeprefix("http://"))
    finally:
        server.stop()
        server.log_path.unlink(missing_ok=True)


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


def stop_on_sigterm(on_stop: Callable[[], None] | None = None) -> None:
    """Turn SIGTERM (and SIGINT) into KeyboardInterrupt, so `finally` blocks stop the stack."""

    def interrupt(_signum: int, _frame: object) -> None:
        if on_stop is not None:
            on_stop()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
