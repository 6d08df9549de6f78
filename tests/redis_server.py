"""A private redis-server for the tests: its own port and directory, so tests may stop it.

The server keeps an append-only file fsynced on every write, so a restart (even after SIGKILL)
keeps what was written, as a production Redis with AOF does. Import the fixtures into a conftest.py
(or a test module):

    from tests.redis_server import redis_server, redis_url

`redis_server` (session) is the running server; `redis_url` (per test) is its URL with DB 0
emptied and the server running and unpaused, whatever the previous test did to it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0
INSTALL_HINT = "redis-server is not installed: apt-get install redis-server (make system-deps)"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class RedisServer:
    """One redis-server process on 127.0.0.1, restartable on the same port with the same data."""

    def __init__(self, directory: Path, binary: str = "redis-server") -> None:
        self.directory = directory
        self.binary = binary
        self.port = free_port()
        self.log_path = directory / "redis.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.paused = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start the server (a no-op if it runs) and wait until it answers PING."""
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
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        self._wait_ready()

    def stop(self, *, hard: bool = False) -> None:
        """SIGTERM (a clean shutdown) or, with `hard`, SIGKILL (a crash); waits for the exit."""
        if self.process is None:
            return
        if self.process.poll() is None:
            if hard:
                self.process.kill()
            else:
                self.resume()  # a stopped process would hold SIGTERM until continued
                self.process.terminate()
            self.process.wait(STOP_TIMEOUT_S)
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

    @contextmanager
    def stopped(self, *, hard: bool = False) -> Iterator[None]:
        """Down for the body of the `with`, up again (same port, same data) afterwards."""
        self.stop(hard=hard)
        try:
            yield
        finally:
            self.start()

    @contextmanager
    def hung(self) -> Iterator[None]:
        self.pause()
        try:
            yield
        finally:
            self.resume()

    def flush(self) -> None:
        with redis.Redis.from_url(self.url, socket_timeout=5) as client:
            client.flushall()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {self.process.returncode}:\n{self._log_tail()}"
                )
            try:
                with redis.Redis.from_url(self.url, socket_timeout=1) as client:
                    if client.ping():
                        return
            except redis.RedisError:  # refused, or LOADING while it replays the AOF
                time.sleep(0.05)
        raise RuntimeError(
            f"redis-server did not answer within {START_TIMEOUT_S}s:\n{self._log_tail()}"
        )

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return "(no log)"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    server = RedisServer(tmp_path_factory.mktemp("redis"), binary)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The URL of a running, empty Redis for one test."""
    redis_server.start()
    redis_server.flush()
    return redis_server.url
