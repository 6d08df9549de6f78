"""`docker compose down -v` leaves nothing of the stack behind (it runs after the other modules)."""

from __future__ import annotations

import pytest

from dev_stack.compose import docker
from dev_stack.containers import SERVICES, RunningStack

pytestmark = [pytest.mark.containers, pytest.mark.timeout(1800)]


def test_down_v_leaves_no_container_network_or_volume_behind(stack: RunningStack) -> None:
    containers = [stack.container(service) for service in SERVICES]
    ids = {c["Id"] for c in containers}
    volumes = {m["Name"] for c in containers for m in c["Mounts"] if m["Type"] == "volume"}
    networks = {name for c in containers for name in c["NetworkSettings"]["Networks"]}
    # Redis and Prometheus data, and the anonymous volume of the Triton image's VOLUME.
    assert len(volumes) == 3
    assert len(networks) == 2  # backend, and the one Serverpod joins

    stack.stack.down(timeout_s=60)

    assert stack.stack.leftovers() == {"containers": [], "networks": [], "volumes": []}
    assert not ids & set(docker("ps", "--all", "--quiet", "--no-trunc").split())
    assert not volumes & set(docker("volume", "ls", "--quiet").split())
    assert not networks & set(docker("network", "ls", "--format", "{{.Name}}").split())
