"""Shared fixtures: a real tritonserver, a real Redis, and gateways in front of them."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator

import pytest

from dev_stack.redis import RedisServer
from dev_stack.triton import TritonServer
from tests.gateway_server import GatewayServer, running_gateway

_shared: TritonServer | None = None
_shared_lock = threading.Lock()


def shared_triton() -> TritonServer:
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
    server = shared_triton()
    yield server
    server.stop()
    server.log_path.unlink(missing_ok=True)  # failures already showed its tail


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private redis-server of the session; tests may stop, kill or pause it."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(
            "redis-server is not installed: apt-get install redis-server (make system-deps)",
            pytrace=False,
        )
    server = RedisServer(tmp_path_factory.mktemp("redis"), binary)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The URL of a running, empty Redis for one test, whatever the previous test did to it."""
    redis_server.start()
    redis_server.flush()
    return redis_server.url


@pytest.fixture(scope="session")
def gateway(triton_server: TritonServer) -> Iterator[GatewayServer]:
    """One gateway with the in-memory store, shared by the tests that leave it as they found it."""
    with running_gateway([triton_server.grpc_url], "classic_edit", "qwen_image_edit") as server:
        yield server


@pytest.fixture
def redis_gateway(triton_server: TritonServer, redis_url: str) -> Iterator[GatewayServer]:
    with running_gateway(
        [triton_server.grpc_url], "classic_edit", "qwen_image_edit", REDIS_URL=redis_url
    ) as server:
        yield server
