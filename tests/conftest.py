"""Shared fixtures: a real tritonserver, a real Redis, and gateways in front of them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.gateway_server import GatewayServer, running_gateway
from tests.redis_server import RedisServer, redis_server, redis_url
from tests.triton_server import TritonServer, triton_server

__all__ = ["redis_server", "redis_url", "triton_server"]


@pytest.fixture(scope="session")
def gateway(triton_server: TritonServer) -> Iterator[GatewayServer]:
    """One gateway with the in-memory store, shared by the tests that leave it as they found it."""
    with running_gateway([triton_server.grpc_url], "classic_edit", "qwen_image_edit") as server:
        yield server


@pytest.fixture
def redis_gateway(
    triton_server: TritonServer, redis_server: RedisServer
) -> Iterator[GatewayServer]:
    redis_server.flush()
    with running_gateway(
        [triton_server.grpc_url], "classic_edit", "qwen_image_edit", REDIS_URL=redis_server.url
    ) as server:
        yield server
