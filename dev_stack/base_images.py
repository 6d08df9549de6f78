"""Base images for the two Dockerfiles and the compose stack, made locally when none can be pulled.

Production builds start from NVIDIA's tritonserver image and a slim Python image, and the stack
runs the official Redis and Prometheus images. Where no registry answers, this script builds
stand-ins from Debian bookworm's own packages instead (recipes in deploy/base-images/):

    debian        debootstrap from the host's apt mirror, trusting the host's CA bundle
    python        Debian's Python 3.11 with venv                 -> PYTHON_BASE (Dockerfile.gateway)
    tritonserver  python + the nvidia-pytriton wheel's Triton    -> TRITON_BASE (Dockerfile.triton)
    redis         Debian's redis-server                          -> REDIS_IMAGE (compose)
    prometheus    Debian's prometheus                            -> PROMETHEUS_IMAGE (compose)

Its result is a set of variables for `docker compose` (an env file, or lines on stdout); the
Dockerfiles and the compose file stay as they are. It is idempotent: an image that exists with
the same recipe is not rebuilt. docs/deployment.md says what the stand-ins change.

    python -m dev_stack.base_images                     # real images where they can be pulled
    python -m dev_stack.base_images --stand-ins --monitoring --env-file bases.env
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from dev_stack.console import Voice

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "deploy" / "base-images"
NAMESPACE = "qwen-image-edit-standin"
RECIPE_LABEL = "org.qwen-image-edit.stand-in-recipe"
# Dockerfile.triton installs Debian/Ubuntu's python3.11 packages, which bookworm has.
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
APT_SOURCES = Path("/etc/apt")
PULL_TIMEOUT_S = 3600
PROBE_TIMEOUT_S = 5


class BaseImageError(Exception):
    """A base image could be neither pulled nor built; the message says what to do."""


say = Voice("base images")


# --- The real images, read from the files that name them --------------------------------------


def dockerfile_arg(dockerfile: Path, name: str) -> str:
    """The default of `ARG name=...` in a Dockerfile."""
    found = re.search(rf"^ARG {name}=(\S+)$", dockerfile.read_text(), re.MULTILINE)
    if found is None:
        raise BaseImageError(f"{dockerfile.name} declares no default for ARG {name}")
    return found[1]


def compose_default(variable: str) -> str:
    """The default of `${variable:-...}` in docker-compose.yaml."""
    text = (ROOT / "docker-compose.yaml").read_text()
    found = re.search(rf"\$\{{{variable}:-([^}}]+)\}}", text)
    if found is None:
        raise BaseImageError(f"docker-compose.yaml has no default for {variable}")
    return found[1]


@dataclass(frozen=True)
class StandIn:
    """A local image standing in for `real`, and the compose variable that selects it."""

    name: str
    variable: str
    real: str
    tag: str
    parent: str | None = None  # the stand-in it is built on; None for the debootstrap base
    extra_files: tuple[str, ...] = ()  # besides <name>.Dockerfile, under deploy/base-images/

    @property
    def image(self) -> str:
        return f"{NAMESPACE}/{self.name}:{self.tag}"

    @property
    def parent_arg(self) -> str:
        """The build argument of deploy/base-images/<name>.Dockerfile that names the parent."""
        return f"{(self.parent or '').upper()}_BASE"

    @property
    def dockerfile(self) -> Path:
        return RECIPES / f"{self.name}.Dockerfile"


def pytriton_version() -> str:
    return dockerfile_arg(ROOT / "Dockerfile.triton", "PYTRITON_VERSION")


def stand_ins() -> dict[str, StandIn]:
    """Every stand-in, by name."""
    gateway_base = dockerfile_arg(ROOT / "Dockerfile.gateway", "PYTHON_BASE")
    triton_base = dockerfile_arg(ROOT / "Dockerfile.triton", "TRITON_BASE")
    items = [
        StandIn("debian", "", f"debian:{SUITE}", SUITE),
        StandIn("python", "PYTHON_BASE", gateway_base, SUITE, parent="debian"),
        StandIn(
            "tritonserver",
            "TRITON_BASE",
            triton_base,
            f"pytriton-{pytriton_version()}",
            parent="python",
        ),
        StandIn(
            "redis",
            "REDIS_IMAGE",
            compose_default("REDIS_IMAGE"),
            SUITE,
            parent="debian",
            extra_files=("redis-server.sh",),
        ),
        StandIn(
            "prometheus",
            "PROMETHEUS_IMAGE",
            compose_default("PROMETHEUS_IMAGE"),
            SUITE,
            parent="debian",
        ),
    ]
    return {item.name: item for item in items}


# --- Docker ------------------------------------------------------------------------------------


def docker(
    *args: str, check: bool = True, capture: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], check=check, text=True, capture_output=capture, timeout=PULL_TIMEOUT_S
    )


def image_id(image: str) -> str | None:
    found = docker("image", "inspect", "--format", "{{.Id}}", image, check=False)
    return found.stdout.strip() if found.returncode == 0 else None


def image_label(image: str, label: str) -> str | None:
    found = docker("image", "inspect", "--format", "{{json .Config.Labels}}", image, check=False)
    if found.returncode != 0:
        return None
    labels = json.loads(found.stdout) or {}
    value = labels.get(label)
    return str(value) if value is not None else None


def pulled(image: str) -> bool:
    """True once `image` is local: already there, or pulled now."""
    if image_id(image):
        return True
    say(f"pulling {image}")
    result = docker("pull", image, check=False, capture=False)
    return result.returncode == 0


# --- The Debian base ---------------------------------------------------------------------------


def host_mirrors(apt_dir: Path = APT_SOURCES) -> tuple[str, str]:
    """The Debian archive and security mirrors this host's apt uses, else deb.debian.org's."""
    uris: list[str] = []
    for path in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        uris += re.findall(r"^URIs:\s*(.+)$", path.read_text(), re.MULTILINE)
    for path in [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]:
        if path.is_file():
            uris += re.findall(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)", path.read_text(), re.MULTILINE)
    flat = [uri.rstrip("/") for line in uris for uri in line.split()]
    archive = next((u for u in flat if u.endswith("/debian")), DEFAULT_MIRROR)
    security = next((u for u in flat if u.endswith("/debian-security")), DEFAULT_SECURITY_MIRROR)
    return archive, security


def sources_list(archive: str, security: str) -> str:
    return (
        f"deb {archive} {SUITE} main\n"
        f"deb {archive} {SUITE}-updates main\n"
        f"deb {security} {SUITE}-security main\n"
    )


def debian_recipe(archive: str, security: str) -> str:
    digest = hashlib.sha256()
    digest.update(sources_list(archive, security).encode())
    digest.update(HOST_CA_BUNDLE.read_bytes())
    digest.update(inspect.getsource(build_debian).encode())
    return digest.hexdigest()[:16]


def build_debian(item: StandIn, recipe: str, archive: str, security: str) -> None:
    """debootstrap a minimal bookworm, trusting the host's CAs, and import it as an image."""
    for tool in ("debootstrap", "tar"):
        if shutil.which(tool) is None:
            raise BaseImageError(f"{tool} is missing: run `make system-deps`")
    say(f"building {item.image} with debootstrap from {archive} (about a minute)")
    with tempfile.TemporaryDirectory(prefix="qie-debootstrap-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        subprocess.run(
            ["debootstrap", "--variant=minbase", "--include=ca-certificates", SUITE, str(rootfs),
             archive],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        (rootfs / "etc/apt/sources.list").write_text(sources_list(archive, security))
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (rootfs / leftover).glob("*"):
                if path.is_file():
                    path.unlink()
        # Egress may pass a TLS-inspecting proxy whose CA only the host trusts. The copy under
        # /usr/local/share survives any later update-ca-certificates run inside a build.
        shutil.copyfile(HOST_CA_BUNDLE, rootfs / "etc/ssl/certs/ca-certificates.crt")
        shutil.copyfile(HOST_CA_BUNDLE, rootfs / "usr/local/share/ca-certificates/host.crt")
        # No service may start while a build installs packages (there is no init to stop it).
        policy = rootfs / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(
            ["docker", "import",
             "--change", 'CMD ["bash"]',
             "--change", "ENV LANG=C.UTF-8",
             "--change", f"LABEL {RECIPE_LABEL}={recipe}",
             "-", item.image],
            stdin=tar.stdout, check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        if tar.wait() != 0:
            raise BaseImageError(f"packing the Debian root file system failed for {item.image}")


# --- Images built from deploy/base-images/ -----------------------------------------------------


def build_args(item: StandIn, parent_image: str) -> dict[str, str]:
    args = {item.parent_arg: parent_image}
    if item.name == "tritonserver":
        args["PYTRITON_VERSION"] = pytriton_version()
    return args


def dockerfile_recipe(item: StandIn, args: Mapping[str, str], parent_id: str) -> str:
    """A digest of what the image is made of: its files, its arguments and its parent."""
    digest = hashlib.sha256()
    for name in (item.dockerfile.name, *item.extra_files):
        digest.update(name.encode() + (RECIPES / name).read_bytes())
    digest.update(json.dumps(dict(args), sort_keys=True).encode())
    digest.update(parent_id.encode())
    return digest.hexdigest()[:16]


def build_from_dockerfile(item: StandIn, recipe: str, args: Mapping[str, str]) -> None:
    say(f"building {item.image} from {item.dockerfile.relative_to(ROOT)}")
    command = ["build", "--file", str(item.dockerfile), "--tag", item.image]
    command += ["--label", f"{RECIPE_LABEL}={recipe}"]
    for key, value in args.items():
        command += ["--build-arg", f"{key}={value}"]
    docker(*command, str(RECIPES), capture=False)


# --- Putting it together -----------------------------------------------------------------------


def ensure_stand_in(item: StandIn, items: Mapping[str, StandIn], done: dict[str, str]) -> str:
    """Build `item` (and its parents) unless an image with the same recipe exists."""
    if item.name in done:
        return done[item.name]
    if item.parent is None:
        archive, security = host_mirrors()
        recipe = debian_recipe(archive, security)
    else:
        parent_image = ensure_stand_in(items[item.parent], items, done)
        args = build_args(item, parent_image)
        recipe = dockerfile_recipe(item, args, image_id(parent_image) or "")
    if image_label(item.image, RECIPE_LABEL) == recipe:
        say(f"{item.image} is present")
    elif item.parent is None:
        build_debian(item, recipe, archive, security)
    else:
        build_from_dockerfile(item, recipe, args)
    done[item.name] = item.image
    return item.image


def torch_index_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/torch/", timeout=PROBE_TIMEOUT_S) as r:
            return bool(r.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def resolve(names: Iterable[str], *, prefer_real: bool) -> dict[str, str]:
    """The compose variables for the bases `names`: real images where pulled, else stand-ins."""
    items = stand_ins()
    done: dict[str, str] = {}
    env: dict[str, str] = {}
    for name in names:
        item = items[name]
        if prefer_real and pulled(item.real):
            say(f"{item.variable}: {item.real}")
            continue
        if prefer_real:
            say(f"{item.real} can't be pulled: using a stand-in built from Debian packages")
        env[item.variable] = ensure_stand_in(item, items, done)
    if "tritonserver" in names:
        index = dockerfile_arg(ROOT / "Dockerfile.triton", "TORCH_INDEX_URL")
        if not torch_index_answers(index):
            say(f"{index} does not answer: torch comes from PyPI instead")
            env["TORCH_INDEX_URL"] = ""
    return env


def env_lines(env: Mapping[str, str]) -> str:
    return "".join(f"{key}={value}\n" for key, value in env.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--stand-ins", action="store_true", help="use the local stand-ins even if real ones pull"
    )
    parser.add_argument(
        "--monitoring", action="store_true", help="include Prometheus (the monitoring profile)"
    )
    parser.add_argument("--env-file", type=Path, help="write the variables here, not to stdout")
    args = parser.parse_args(argv)
    names = ["python", "tritonserver", "redis"] + (["prometheus"] if args.monitoring else [])
    try:
        env = resolve(names, prefer_real=not args.stand_ins)
    except (BaseImageError, subprocess.CalledProcessError) as exc:
        print(f"[base images] failed: {exc}", file=sys.stderr)
        return 1
    if args.env_file:
        args.env_file.write_text(env_lines(env))
    else:
        print(env_lines(env), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
