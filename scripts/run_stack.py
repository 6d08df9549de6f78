"""`make run`: tritonserver plus the gateway on port 8000, until Ctrl-C stops both.

With no MODEL_ID it serves the tiny random-weight dev model (meaningless pixels) beside
classic_edit. The parts come from the dev_stack package, which the tests and benchmarks use too.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dev_stack.console import Voice
from dev_stack.gateways import GatewayProcess
from dev_stack.processes import ROOT, http_ok, stop_on_sigterm
from dev_stack.triton import TritonServer

say = Voice("make run")


def gateway_env(grpc_port: int) -> dict[str, str]:
    env = {
        "GATEWAY_PORT": os.environ.get("GATEWAY_PORT", "8000"),
        "TRITON_URLS": os.environ.get("TRITON_URLS", f"127.0.0.1:{grpc_port}"),
    }
    if not os.environ.get("GATEWAY_API_KEYS"):
        env["GATEWAY_AUTH_DISABLED"] = os.environ.get("GATEWAY_AUTH_DISABLED", "true")
        say("GATEWAY_API_KEYS is not set: API key auth is OFF (local use only)")
    return env


def start_triton() -> TritonServer | None:
    ports = tuple(
        int(os.environ.get(name, default))
        for name, default in (
            ("TRITON_HTTP_PORT", "8003"),
            ("TRITON_GRPC_PORT", "8001"),
            ("TRITON_METRICS_PORT", "8002"),
        )
    )
    log_dir = ROOT / ".triton"
    log_dir.mkdir(exist_ok=True)
    model_id = os.environ.get("MODEL_ID") or None
    if model_id is None:
        say("MODEL_ID is not set: serving the tiny dev model (RANDOM WEIGHTS, meaningless pixels)")
    models = os.environ.get("TRITON_MODELS", "classic_edit,qwen_image_edit").split(",")
    triton = TritonServer(
        [m for m in models if m],
        model_id=model_id,
        ports=(ports[0], ports[1], ports[2]),
        log_path=log_dir / "tritonserver.log",
    )
    triton.log_path.write_bytes(b"")
    say(f"starting tritonserver (log: {triton.log_path.relative_to(ROOT)}) ...")
    triton.start()
    try:
        triton.wait_ready(timeout=600)
    except (RuntimeError, TimeoutError) as exc:
        say(f"tritonserver did not become ready:\n{exc}")
        triton.stop()
        return None
    say(f"Triton ready: gRPC {triton.grpc_url}, HTTP {triton.http_port}, metrics "
        f"{triton.metrics_port}; models: {', '.join(triton.models)}")  # fmt: skip
    return triton


def main() -> int:
    stop_on_sigterm()
    triton = start_triton()
    if triton is None:
        return 1
    gateway = GatewayProcess(
        gateway_env(triton.grpc_port), log_path=Path(os.devnull), inherit_output=True
    )
    try:
        gateway.start()
        if not _wait(f"{gateway.url}/health/live", gateway, 60):
            say("the gateway did not start")
            return 1
        say(f"gateway ready: {gateway.url}  (docs: /docs, metrics: /metrics)")
        say(f"playground: open {gateway.url}/ in a browser")
        say(
            "try: curl -F image=@photo.jpg -F prompt='make it black and white' "
            f"-F model=classic_edit {gateway.url}/process"
        )
        say("Ctrl-C stops everything")
        while triton.running and gateway.running:
            time.sleep(0.5)
        say("a process exited; stopping the rest")
        return 1
    except KeyboardInterrupt:
        say("stopping ...")
        return 0
    finally:
        gateway.stop(timeout=15)
        triton.stop(timeout=15)


def _wait(url: str, child: GatewayProcess, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and child.running:
        if http_ok(url):
            return True
        time.sleep(0.5)
    return False


if __name__ == "__main__":
    sys.exit(main())
