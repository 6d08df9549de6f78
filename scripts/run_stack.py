"""`make run`: tritonserver plus the gateway on port 8000, until Ctrl-C stops both.

With no MODEL_ID it serves the tiny random-weight dev model (meaningless pixels) beside
classic_edit. Every child runs in its own process group, and all of them are stopped on exit.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEV_MODEL = ROOT / "models" / "tiny-qwen-image-edit"


def say(message: str) -> None:
    print(f"[make run] {message}", flush=True)


def triton_env() -> dict[str, str]:
    env = dict(os.environ, PYTHON=sys.executable)
    if not env.get("MODEL_ID"):
        env["MODEL_ID"] = str(DEV_MODEL)
        say(f"MODEL_ID is not set: serving the tiny dev model {DEV_MODEL} (RANDOM WEIGHTS)")
    return env


def wait_ready(url: str, child: subprocess.Popen[bytes], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if child.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def ready_models(http_port: str) -> list[str]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{http_port}/v2/repository/index", data=b"{}", method="POST"
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        index = json.load(response)
    return [m["name"] for m in index if m.get("state") == "READY"]


def stop(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()


def interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    # Ctrl-C and a plain `kill` both stop everything, even when started from a script that
    # left SIGINT ignored.
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    env = triton_env()
    http_port = env.setdefault("TRITON_HTTP_PORT", "8003")
    grpc_port = env.setdefault("TRITON_GRPC_PORT", "8001")
    env.setdefault("TRITON_METRICS_PORT", "8002")
    gateway_port = env.setdefault("GATEWAY_PORT", "8000")
    env.setdefault("TRITON_URLS", f"127.0.0.1:{grpc_port}")
    if not env.get("GATEWAY_API_KEYS"):
        env.setdefault("GATEWAY_AUTH_DISABLED", "true")
        say("GATEWAY_API_KEYS is not set: API key auth is OFF (local use only)")
    log_dir = ROOT / ".triton"
    log_dir.mkdir(exist_ok=True)
    triton_log = log_dir / "tritonserver.log"
    children: list[subprocess.Popen[bytes]] = []
    try:
        say(f"starting tritonserver (log: {triton_log.relative_to(ROOT)}) ...")
        with triton_log.open("wb") as log_file:
            triton = subprocess.Popen(
                [str(ROOT / "scripts" / "start_triton.sh")],
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        children.append(triton)
        if not wait_ready(f"http://127.0.0.1:{http_port}/v2/health/ready", triton, 600):
            say("tritonserver did not become ready; last log lines:")
            print("\n".join(triton_log.read_text(errors="replace").splitlines()[-25:]))
            return 1
        say(
            f"Triton ready: gRPC 127.0.0.1:{grpc_port}, HTTP {http_port}, metrics "
            f"{env['TRITON_METRICS_PORT']}; models: {', '.join(ready_models(http_port))}"
        )
        gateway = subprocess.Popen(
            [sys.executable, "-m", "gateway"], env=env, cwd=ROOT, start_new_session=True
        )
        children.append(gateway)
        if not wait_ready(f"http://127.0.0.1:{gateway_port}/health", gateway, 60):
            say("the gateway did not become ready")
            return 1
        say(f"gateway ready: http://127.0.0.1:{gateway_port}  (docs: /docs, metrics: /metrics)")
        say(
            "try: curl -F image=@photo.jpg -F prompt='make it black and white' "
            f"-F model=classic_edit http://127.0.0.1:{gateway_port}/process"
        )
        say("Ctrl-C stops everything")
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        say("a process exited; stopping the rest")
        return 1
    except KeyboardInterrupt:
        say("stopping ...")
        return 0
    finally:
        stop(children)


if __name__ == "__main__":
    sys.exit(main())
