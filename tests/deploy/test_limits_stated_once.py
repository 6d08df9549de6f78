"""The gateway's settings and the shared request limits have one home each (gateway/settings.py,
qie_engine/limits.py). Every other place that states a default (docker-compose.yaml, the
Kubernetes manifests, .env.example, the README's tables) must say the same thing."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.settings import Settings
from qie_engine import limits

ROOT = Path(__file__).resolve().parents[2]
LITERAL = re.compile(r"^(`[^`]*`|[\d.,]+( [KMG]iB)?)$")
COMPOSE_DEFAULT = re.compile(r"^\$\{(?P<name>[A-Z0-9_]+):-(?P<default>[^}]*)\}$")
# Stated on purpose with another value than the code's default, and why.
DEPLOYED_DIFFERENTLY = {
    "GATEWAY_HOST": "a container listens on every interface; its port is what gets published",
    "GATEWAY_PORT": "fixed inside the container; QIE_PORT publishes it",
    "TRITON_URLS": "the Triton service's name on the deployment's network",
    "REDIS_URL": "the Redis service's name on the deployment's network",
}


def home_defaults() -> dict[str, Any]:
    """Each variable's default, from its one home."""
    defaults: dict[str, Any] = {}
    for field in Settings.model_fields.values():
        if field.alias:
            factory = field.default_factory
            defaults[field.alias] = factory() if factory else field.default  # type: ignore[call-arg]
    for name in ("MAX_IMAGE_BYTES", "MAX_PIXELS", "MAX_PROMPT_CHARS"):
        defaults[name] = getattr(limits, name)
    return defaults


def agrees(text: str, default: Any) -> bool:
    if isinstance(default, bool):
        return text.strip().lower() == str(default).lower()
    if isinstance(default, (int, float)):
        return float(text) == float(default)
    if isinstance(default, list):
        return [item.strip() for item in text.split(",") if item.strip()] == default
    if default is None:
        return text == ""
    return text == str(default)


def stated(name: str, text: str) -> tuple[str, str] | None:
    """A (name, value) worth checking: a variable with a home, not deployed differently."""
    if name in home_defaults() and name not in DEPLOYED_DIFFERENTLY:
        return name, text
    return None


def compose_statements() -> list[tuple[str, str]]:
    compose = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
    found = []
    for service in compose["services"].values():
        for name, value in (service.get("environment") or {}).items():
            match = COMPOSE_DEFAULT.match(str(value or ""))
            if match and match["name"] == name and (pair := stated(name, match["default"])):
                found.append(pair)
    return found


def kubernetes_statements() -> list[tuple[str, str]]:
    found = []
    for path in sorted((ROOT / "deploy" / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "ConfigMap":
                for name, value in (doc.get("data") or {}).items():
                    if pair := stated(name, str(value)):
                        found.append(pair)
    return found


def env_example_statements() -> list[tuple[str, str]]:
    found = []
    for line in (ROOT / ".env.example").read_text().splitlines():
        name, sep, value = line.strip().partition("=")  # a commented line is an example
        if sep and (pair := stated(name, value)):
            found.append(pair)
    return found


def human_number(cell: str) -> str:
    """A README default as written for people ("25 MiB", "16,777,216") as plain digits."""
    cell = cell.strip().strip("`")
    units = {"KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
    number, _, unit = cell.partition(" ")
    if unit in units:
        return str(int(float(number) * units[unit]))
    return cell.replace(",", "")


def readme_statements() -> list[tuple[str, str]]:
    found = []
    for line in (ROOT / "README.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        names = [name.strip().strip("`") for name in cells[0].split("/")]
        values = [value.strip() for value in cells[1].split(" / ")]
        if len(names) != len(values):
            continue
        for name, value in zip(names, values, strict=True):
            if not LITERAL.match(value):
                continue  # described ("(empty)", "hostname"), not stated
            if pair := stated(name, human_number(value)):
                found.append(pair)
    return found


SOURCES = {
    "docker-compose.yaml": compose_statements,
    "deploy/k8s": kubernetes_statements,
    ".env.example": env_example_statements,
    "README.md": readme_statements,
}


@pytest.mark.parametrize("source", SOURCES)
def test_every_stated_default_agrees_with_its_home(source: str) -> None:
    statements = SOURCES[source]()
    assert statements, f"{source} states no default: the parser no longer reads it"
    defaults = home_defaults()
    wrong = [
        f"{name}={text!r} (home: {defaults[name]!r})"
        for name, text in statements
        if not agrees(text, defaults[name])
    ]
    assert wrong == [], f"{source} disagrees with the code"


def test_the_limits_every_model_enforces_reach_the_gateway_in_compose() -> None:
    gateway = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())["services"][
        "qwen-image-edit"
    ]["environment"]
    assert {"MAX_IMAGE_BYTES", "MAX_PIXELS", "MAX_PROMPT_CHARS"} <= set(gateway)


def test_a_wrong_statement_would_be_caught() -> None:
    assert not agrees("33", home_defaults()["MAX_QUEUE_DEPTH"])
    assert human_number("25 MiB") == str(25 * 1024 * 1024)
