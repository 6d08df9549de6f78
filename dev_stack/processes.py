"""Children in process groups of their own, free ports, and the checks a launcher needs.

Each child runs in its own process group, so stopping it also ends what it forked (Triton's
Python-backend stubs), and nothing is left behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESERVED_PORTS = range(8000, 8004)  # a dev server (gateway and Triton) may hold these


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


def temp_log(prefix: str) -> Path:
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


def stop_on_sigterm(on_stop: Callable[[], None] | None = None) -> None:
    """Turn SIGTERM (and SIGINT) into KeyboardInterrupt, so `finally` blocks stop the stack."""

    def interrupt(_signum: int, _frame: object) -> None:
        if on_stop is not None:
            on_stop()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
