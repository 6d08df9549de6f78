"""`make compose-up` and `make compose-down`: the compose stack of docker-compose.yaml.

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
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from dev_stack import base_images, docker_engine
from dev_stack.compose import GATEWAY, GATEWAY_PORT, ROOT, Stack, StackError, project_name, say


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
        docker_engine.DockerEngineError,
        subprocess.CalledProcessError,
    ) as exc:
        print(f"[compose] {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
