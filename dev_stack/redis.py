"""redis-server on a free loopback port, with the faults the tests cause: stopped, killed, hung."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dev_stack.processes import ProcessGroup, free_port


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
