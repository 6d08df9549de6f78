"""A real tritonserver for the tests: start, stop, kill and restart it, and stream one request.

`scripts/start_triton.sh` is the one start command, so the tests start Triton the way `make run`
and the Docker image do. The server runs in its own process group, so stopping it also ends the
Python-backend stubs it forked. Import the session fixture into a conftest.py (or a test module):

    from tests.triton_server import TritonServer, triton_server
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
START_SCRIPT = ROOT / "scripts" / "start_triton.sh"
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
DEV_MODEL = ROOT / "models" / "tiny-qwen-image-edit"
DEFAULT_MODELS = ("classic_edit", "qwen_image_edit")
SHM_DIR = Path("/dev/shm")
SHM_REGION = re.compile(r"triton_python_backend_shm_region_[0-9a-f-]+")
RESERVED_PORTS = range(8000, 8004)  # a dev server (gateway and Triton) may hold these


def free_port() -> int:
    """A TCP port nobody listens on now, outside the ports a dev server may use."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in RESERVED_PORTS:
            return port


class TritonServer:
    """One tritonserver process group on three private ports, with its log in a temp file."""

    def __init__(
        self,
        models: Sequence[str] = DEFAULT_MODELS,
        *,
        env: Mapping[str, str] | None = None,
        model_id: str | Path = DEV_MODEL,
    ) -> None:
        self.models = tuple(models)
        self.http_port = free_port()
        self.grpc_port = free_port()
        self.metrics_port = free_port()
        self.env = {
            "PYTHON": str(VENV_PYTHON),
            "MODEL_ID": str(model_id),
            "TRITON_MODELS": ",".join(self.models),
            "TRITON_HTTP_PORT": str(self.http_port),
            "TRITON_GRPC_PORT": str(self.grpc_port),
            "TRITON_METRICS_PORT": str(self.metrics_port),
            "TRITON_EXIT_TIMEOUT": "5",
            **(env or {}),
        }
        fd, log_name = tempfile.mkstemp(prefix="tritonserver-", suffix=".log")
        os.close(fd)
        self.log_path = Path(log_name)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Spawn the server in a new process group; the log is appended to across restarts."""
        if self.running:
            return
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start {time.strftime('%H:%M:%S')} =====\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [str(START_SCRIPT)],
                cwd=ROOT,
                env={**os.environ, **self.env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Block until the server and every model say ready; fail with the log tail otherwise."""
        deadline = time.monotonic() + timeout
        urls = [f"{self.http_url}/v2/health/ready"] + [
            f"{self.http_url}/v2/models/{model}/ready" for model in self.models
        ]
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise RuntimeError(
                    f"tritonserver exited (code {code}) before ready\n{self.log_tail()}"
                )
            if all(_http_ok(url) for url in urls):
                return
            time.sleep(0.25)
        raise TimeoutError(f"tritonserver not ready after {timeout:.0f}s\n{self.log_tail()}")

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the whole group, then SIGKILL whatever is left after `timeout` seconds."""
        if self.process is None:
            return
        self._signal_group(signal.SIGTERM)
        self._reap(timeout)
        if self.group_alive():
            self.kill()

    def kill(self) -> None:
        """SIGKILL the whole group at once: a crash, as far as clients can tell."""
        if self.process is None:
            return
        regions = self.shm_regions()
        self._signal_group(signal.SIGKILL)
        self._reap()
        # A killed stub cannot unlink its shared memory; do it for it, so tests leave nothing.
        for region in regions:
            (SHM_DIR / region).unlink(missing_ok=True)

    def restart(self, timeout: float = 120.0) -> None:
        self.stop()
        self.start()
        self.wait_ready(timeout)

    def group_alive(self) -> bool:
        """Whether any process of the server's group (stubs included) still exists."""
        return bool(self.group_pids())

    def group_pids(self) -> list[int]:
        """The live processes of the server's group: tritonserver and its Python stubs."""
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

    def shm_regions(self) -> list[str]:
        """Names of the shared-memory regions (in /dev/shm) the Python stubs of this server use."""
        regions: set[str] = set()
        for pid in self.group_pids():
            try:
                cmdline = (
                    (Path("/proc") / str(pid) / "cmdline").read_bytes().decode(errors="replace")
                )
            except OSError:
                continue
            regions.update(SHM_REGION.findall(cmdline))
        return sorted(regions)

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no tritonserver log)"
        tail = "\n".join(text.splitlines()[-lines:])
        return f"--- last {lines} lines of {self.log_path} ---\n{tail}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)

    def _reap(self, timeout: float = 10.0) -> None:
        assert self.process is not None
        with contextlib.suppress(subprocess.TimeoutExpired):  # SIGKILL cannot be ignored
            self.process.wait(timeout=timeout)
        # The stubs are reparented to init when tritonserver dies first; wait until they are gone
        # too, so the next start gets the ports and the shared memory back.
        deadline = time.monotonic() + timeout
        while self.group_alive() and time.monotonic() < deadline:
            time.sleep(0.05)

    def __enter__(self) -> TritonServer:
        self.start()
        self.wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


_shared: TritonServer | None = None
_shared_lock = threading.Lock()


def shared_server() -> TritonServer:
    """The one session-wide server (both models), started on first use and ready on return."""
    global _shared  # noqa: PLW0603 - one server per test process, whoever asks first
    with _shared_lock:
        if _shared is None:
            _shared = TritonServer()
        server = _shared
        if not server.running:
            server.start()
        try:
            server.wait_ready()
        except BaseException:
            server.stop()
            raise
        return server


@pytest.fixture(scope="session")
def triton_server() -> Iterator[TritonServer]:
    """A real tritonserver with classic_edit and the tiny qwen_image_edit, ready to serve."""
    server = shared_server()
    yield server
    server.stop()
    server.log_path.unlink(missing_ok=True)  # failures already showed its tail


# --- one streaming request ---------------------------------------------------------------------


@dataclass
class StreamResult:
    """Everything one streamed request produced, in arrival order."""

    events: list[dict[str, Any]] = field(default_factory=list)  # progress events
    final_meta: dict[str, Any] | None = None  # the result (or describe) EVENT of the last response
    image: bytes | None = None
    error: str | None = None  # the Triton error message, "[code] ..."

    @property
    def error_code(self) -> str | None:
        if self.error is None or not self.error.startswith("["):
            return None
        return self.error[1 : self.error.index("]")]

    @property
    def steps(self) -> list[int]:
        return [event["step"] for event in self.events]


def edit_inputs(
    images: Sequence[bytes] | None,
    prompt: str | bytes | None,
    *,
    options: Mapping[str, Any] | str | bytes | None = None,
    negative_prompt: str | None = None,
    describe: bool = False,
) -> list[Any]:
    """The contract's input tensors; None leaves a tensor out of the request."""
    import tritonclient.grpc as grpcclient

    inputs = []

    def add_bytes(name: str, values: Sequence[bytes]) -> None:
        tensor = grpcclient.InferInput(name, [len(values)], "BYTES")
        tensor.set_data_from_numpy(np.array(list(values), dtype=object))
        inputs.append(tensor)

    if images is not None:
        add_bytes("IMAGES", list(images))
    if prompt is not None:
        add_bytes("PROMPT", [prompt.encode() if isinstance(prompt, str) else prompt])
    if negative_prompt is not None:
        add_bytes("NEGATIVE_PROMPT", [negative_prompt.encode()])
    if options is not None:
        raw = json.dumps(options) if isinstance(options, Mapping) else options
        add_bytes("OPTIONS", [raw.encode() if isinstance(raw, str) else raw])
    if describe:
        flag = grpcclient.InferInput("DESCRIBE", [1], "BOOL")
        flag.set_data_from_numpy(np.array([True]))
        inputs.append(flag)
    return inputs


class EditStream:
    """One gRPC stream; responses land in a queue that `collect` turns into a StreamResult."""

    def __init__(self, grpc_url: str) -> None:
        import tritonclient.grpc as grpcclient

        self.client = grpcclient.InferenceServerClient(grpc_url)
        self.responses: queue.Queue[tuple[Any, Any]] = queue.Queue()
        self.client.start_stream(callback=self._on_response)
        self.closed = False

    def _on_response(self, result: Any, error: Any) -> None:
        self.responses.put((result, error))

    def send(self, model: str, inputs: list[Any], request_id: str = "") -> None:
        self.client.async_stream_infer(model, inputs, request_id=request_id)

    def next(self, result: StreamResult, timeout: float) -> bool:
        """Take one response into `result`; False once the request is over (final or error)."""
        try:
            got, error = self.responses.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no response from Triton within {timeout:.0f}s") from None
        if error is not None:
            result.error = str(error.message() if hasattr(error, "message") else error)
            return False
        event = json.loads(got.as_numpy("EVENT")[0])
        image = got.as_numpy("IMAGE")
        if event.get("type") == "progress":
            result.events.append(event)
            return True
        result.final_meta = event
        result.image = None if image is None else bytes(image[0])
        return False

    def collect(self, timeout: float = 120.0) -> StreamResult:
        result = StreamResult()
        deadline = time.monotonic() + timeout
        while self.next(result, timeout=max(0.0, deadline - time.monotonic())):
            pass
        return result

    def cancel(self) -> None:
        """Close the stream and cancel its in-flight requests, as a client that gives up does."""
        if not self.closed:
            self.client.stop_stream(cancel_requests=True)
            self.closed = True

    def close(self) -> None:
        if not self.closed:
            self.client.stop_stream()
            self.closed = True
        self.client.close()

    def __enter__(self) -> EditStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def stream_edit(
    grpc_url: str,
    model: str,
    images: Sequence[bytes] | None,
    prompt: str | bytes | None,
    *,
    options: Mapping[str, Any] | str | bytes | None = None,
    negative_prompt: str | None = None,
    describe: bool = False,
    request_id: str = "",
    timeout: float = 120.0,
) -> StreamResult:
    """Send one request on its own stream and wait for its final response or error."""
    inputs = edit_inputs(
        images, prompt, options=options, negative_prompt=negative_prompt, describe=describe
    )
    with EditStream(grpc_url) as stream:
        stream.send(model, inputs, request_id=request_id)
        return stream.collect(timeout)
