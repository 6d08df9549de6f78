"""The compose stack as shipped, built on the stand-in bases and started for the container tests.

What differs from a user's `docker compose --profile cpu --profile monitoring up` is one env file,
handed to compose in place of .env (so nothing of a developer's .env leaks in):

- the bases: the stand-ins of dev_stack/base_images.py (and torch from PyPI where the PyTorch
  index does not answer);
- an API key, and a rate limit the tests' polling never reaches;
- the gateway and Prometheus published on free 127.0.0.1 ports, never 8000 or 9090;
- a project name and a Serverpod network name of their own, so a running stack is untouched.

Grafana is not started: there is no package to make its image from, so its dashboard is checked
statically (tests/deploy/test_deploy_monitoring.py).
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from dev_stack import base_images
from dev_stack.compose import GATEWAY, GATEWAY_PORT, Stack, docker, inspect
from dev_stack.processes import free_port
from qie_client.client import QieClient

API_KEY = "container-test-key"
SERVICES = (GATEWAY, "triton-cpu", "redis", "prometheus")
PROFILES = ("cpu", "monitoring")
# The process environment compose gets: only what finds the engine and the network.
PASSED_THROUGH = ("PATH", "HOME", "DOCKER_HOST", "DOCKER_CONFIG", "HTTP_PROXY", "HTTPS_PROXY")


@dataclass
class RunningStack:
    """A started stack, with the loopback URLs of the gateway and Prometheus."""

    stack: Stack
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def gateway_url(self) -> str:
        return f"http://{self.stack.address(GATEWAY, GATEWAY_PORT)}"

    @property
    def prometheus_url(self) -> str:
        return f"http://{self.stack.address('prometheus', 9090)}"

    def client(self, key: str | None = API_KEY) -> QieClient:
        return QieClient(self.gateway_url, key, timeout=120)

    def health(self) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(f"{self.gateway_url}/health", timeout=10).json()
        return body

    def container(self, service: str) -> dict[str, Any]:
        """`docker inspect` of the service's container."""
        return inspect(self.stack.container(service))

    def process_uids(self, service: str) -> list[int]:
        """The user id of every process in the service's container, as the host sees them."""
        # `docker top` runs the host's ps over the container's processes; it needs the pid column.
        table = docker("top", self.stack.container(service), "-o", "pid,uid")
        return [int(line.split()[1]) for line in table.splitlines()[1:] if line.strip()]


def write_env_file(path: Path, project: str) -> None:
    bases = base_images.resolve(
        ["python", "tritonserver", "redis", "prometheus"], prefer_real=False
    )
    settings = {
        **bases,
        "GATEWAY_API_KEYS": API_KEY,
        "RATE_LIMIT": "100000/minute",
        "QIE_HOST": "127.0.0.1",
        "QIE_PORT": str(free_port()),
        "PROMETHEUS_PORT": str(free_port()),
        "QIE_NETWORK": project,
    }
    path.write_text(base_images.env_lines(settings))


def start_stack(directory: Path) -> RunningStack:
    """Build both images, start the stack and wait until every health check passes."""
    project = f"qie-test-{secrets.token_hex(3)}"
    env_file = directory / "stack.env"
    started = time.monotonic()
    write_env_file(env_file, project)
    env = {name: os.environ[name] for name in PASSED_THROUGH if name in os.environ}
    stack = Stack(project, SERVICES, PROFILES, env, env_file)
    running = RunningStack(stack)
    running.timings_s["bases"] = time.monotonic() - started
    stack.build(quiet=True)
    running.timings_s["build"] = time.monotonic() - started - running.timings_s["bases"]
    try:
        stack.up()
    except Exception:
        stack.down(timeout_s=30)
        raise
    running.timings_s["ready"] = time.monotonic() - started
    return running
