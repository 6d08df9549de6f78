"""The Docker engine, started where nothing else starts it (no systemd), and stopped by its pid.

`make system-deps` and `make compose-up` start it when its socket doesn't answer, and leave it
running. The container tests start it the same way and stop it at the end only if they started
it. Either way the pid goes to a file, so `stop` ends exactly the dockerd that `start` began.

    python -m dev_stack.docker_engine start     # a no-op when the engine answers
    python -m dev_stack.docker_engine stop      # only a dockerd this script started
    python -m dev_stack.docker_engine status
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from dev_stack.console import Voice

PID_FILE = Path("/run/qwen-image-edit-dockerd.pid")
LOG_FILE = Path("/var/log/qwen-image-edit-dockerd.log")
START_TIMEOUT_S = 60.0
# dockerd gives running containers 15 s to stop before it exits.
STOP_TIMEOUT_S = 60.0


class DockerEngineError(Exception):
    """The engine could not be started or stopped; the message says what to do."""


say = Voice("docker engine")


def answers() -> bool:
    """True when the engine behind the docker client's socket responds."""
    if shutil.which("docker") is None:
        return False
    try:
        probe = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            timeout=20,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return probe.returncode == 0


def _is_dockerd(pid: int) -> bool:
    """True while `pid` is a live dockerd (an exited one is reaped if it is our child)."""
    with contextlib.suppress(ChildProcessError):  # not our child: its parent reaps it
        os.waitpid(pid, os.WNOHANG)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # "pid (comm) state ...": a zombie has exited already.
    name, _, rest = stat.partition("(")[2].rpartition(")")
    return name == "dockerd" and rest.split()[0] != "Z"


def recorded_pid() -> int | None:
    """The pid in PID_FILE, if that process is still a dockerd."""
    try:
        pid = int(PID_FILE.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _is_dockerd(pid) else None


def start() -> int | None:
    """Start dockerd unless the engine answers; return the pid of the one started, else None."""
    if answers():
        return None
    if shutil.which("dockerd") is None:
        raise DockerEngineError("dockerd is not installed: run `make system-deps`")
    if os.geteuid() != 0:
        raise DockerEngineError("the Docker engine is not running: start it as root (sudo dockerd)")
    say(f"starting dockerd (log: {LOG_FILE})")
    with LOG_FILE.open("ab") as log:
        process = subprocess.Popen(
            ["dockerd"], stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    PID_FILE.write_text(f"{process.pid}\n")
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            PID_FILE.unlink(missing_ok=True)
            tail = LOG_FILE.read_text(errors="replace").splitlines()[-15:]
            raise DockerEngineError("dockerd exited at start:\n" + "\n".join(tail))
        if answers():
            say(f"dockerd is up (pid {process.pid})")
            return process.pid
        time.sleep(0.5)
    raise DockerEngineError(
        f"dockerd did not answer within {START_TIMEOUT_S:.0f} s; see {LOG_FILE}"
    )


def stop(pid: int | None = None) -> bool:
    """Stop the dockerd `pid` (default: the recorded one) and wait for it; False if none ran."""
    pid = pid if pid is not None else recorded_pid()
    if pid is None or not _is_dockerd(pid):
        return False
    say(f"stopping dockerd (pid {pid})")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while _is_dockerd(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _is_dockerd(pid):
        os.kill(pid, signal.SIGKILL)
    if recorded_pid() in (pid, None):
        PID_FILE.unlink(missing_ok=True)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["start", "stop", "status"])
    action = parser.parse_args(argv).action
    try:
        if action == "start":
            if start() is None:
                say("the engine answers")
        elif action == "stop":
            if not stop():
                say("no dockerd started by this script is running")
        else:
            state = "answers" if answers() else "does not answer"
            pid = recorded_pid()
            say(f"the engine {state}" + (f"; dockerd pid {pid} was started here" if pid else ""))
    except DockerEngineError as exc:
        print(f"[docker engine] {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
