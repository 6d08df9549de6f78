"""The compose stack from nothing and from cache to READY, and the size of its images.

    .venv/bin/python -m benchmarks.containers --fresh   # first removes EVERY image and build cache
    .venv/bin/python -m benchmarks.containers           # cached: images and layers stay

It starts the stack the container suite starts (dev_stack/containers.py: the `cpu`
profile plus Prometheus, on the stand-in bases, loopback ports) and times three phases: the
stand-in bases (debootstrap and four small images), the build of both project images, and `up`
until every health check passes, which for the gateway means READY. Then it reads the image
sizes and removes the stack with `down -v`. Figures print and go to .bench/containers-*.json;
nothing here is a test. --fresh deletes every image on the engine, not only this project's.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.results import DEFAULT_OUT_DIR, environment, save_json, table
from dev_stack import base_images, docker_engine
from dev_stack.compose import docker
from dev_stack.console import Voice
from dev_stack.containers import start_stack

NAME = "containers"
say = Voice(NAME)
PROJECT_IMAGES = ("qwen-image-edit-triton:latest", "qwen-image-edit-gateway:latest")


def wipe_engine() -> None:
    """No container, image or build cache left: the engine as on a fresh machine."""
    if docker("ps", "--quiet").split():
        raise SystemExit("containers are running: stop them before a --fresh run")
    docker("system", "prune", "--all", "--force", "--volumes")
    docker("builder", "prune", "--all", "--force")


def image_sizes() -> dict[str, float]:
    """MB per image of the stack: the two project images and every stand-in base."""
    images = [*PROJECT_IMAGES, *(item.image for item in base_images.stand_ins().values())]
    sizes: dict[str, float] = {}
    for image in images:
        found = docker("image", "inspect", "--format", "{{.Size}}", image).strip()
        sizes[image] = round(int(found) / 1e6, 1)
    return sizes


def measure(fresh: bool) -> dict[str, Any]:
    if fresh:
        say("removing every image, container, volume and the build cache")
        wipe_engine()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="qie-bench-") as tmp:
        running = start_stack(Path(tmp))
        try:
            total = time.monotonic() - started
            status = running.health()["status"]
            sizes = image_sizes()
        finally:
            running.stack.down(timeout_s=60)
    timings = running.timings_s
    return {
        "fresh": fresh,
        "bases_s": round(timings["bases"], 1),
        "build_s": round(timings["build"], 1),
        "up_s": round(timings["ready"] - timings["bases"] - timings["build"], 1),
        "to_ready_s": round(total, 1),
        "gateway_status": status,
        "image_mb": sizes,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fresh", action="store_true", help="wipe the engine first (see above)")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR)
    args = parser.parse_args(argv)
    env = environment()
    engine_started = docker_engine.start()
    try:
        figures = measure(args.fresh)
    finally:
        if engine_started is not None:
            docker_engine.stop(engine_started)
    kind = "fresh" if args.fresh else "cached"
    phases = [figures[key] for key in ("bases_s", "build_s", "up_s", "to_ready_s")]
    print(table(["run", "bases s", "build s", "up s", "to READY s"], [[kind, *phases]]))
    print(table(["image", "MB"], list(figures["image_mb"].items())))
    save_json(NAME, {"environment": env, **figures}, args.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
