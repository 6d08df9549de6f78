"""tritonserver through scripts/start_triton.sh, as `make run` and the image start it."""

from __future__ import annotations

import contextlib
import re
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from dev_stack.processes import ROOT, ProcessGroup, free_port, http_ok, temp_log

START_SCRIPT = ROOT / "scripts" / "start_triton.sh"
DEV_MODEL = ROOT / "models" / "tiny-qwen-image-edit"
DEFAULT_MODELS = ("classic_edit", "qwen_image_edit")
SHM_DIR = Path("/dev/shm")
SHM_REGION = re.compile(r"triton_python_backend_shm_region_[0-9a-f-]+")


def model_env(model_id: str | Path | None = None) -> dict[str, str]:
    """What Triton's models are told: the weights (the dev model carries its own stand-ins)."""
    return {"MODEL_ID": str(model_id or DEV_MODEL)}


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
        super().__init__(log_path or temp_log("tritonserver-"))
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
            # Loopback only: this machine's Triton, with model control on, is nobody else's.
            "TRITON_ADDRESS": "127.0.0.1",
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
