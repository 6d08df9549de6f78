"""The gateway's packages in layers (gateway/__init__.py): each module imports only from its own
package or a layer below it, and no import runs in a circle."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

GATEWAY = Path(__file__).resolve().parents[2] / "gateway"
# From the bottom up; the name is a module or a package of gateway.
LAYERS = (
    ("settings", "errors", "metrics"),
    ("store",),
    ("triton", "webhooks"),
    ("jobs",),
    ("batches",),
    ("http",),
    ("app",),
    ("__main__",),
)
LAYER_OF = {part: level for level, parts in enumerate(LAYERS) for part in parts}


def module_name(path: Path) -> str:
    parts = path.relative_to(GATEWAY.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    path = GATEWAY.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def gateway_imports(path: Path) -> set[str]:
    """The gateway modules this file imports (at any depth of the file); `from package import
    module` counts as the module."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "gateway" or node.module.startswith("gateway."):
                for alias in node.names:
                    name = f"{node.module}.{alias.name}"
                    found.add(name if is_module(name) else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("gateway.")}
    return found


def room(module: str) -> str:
    """The part of the gateway a module lives in: `jobs` for gateway.jobs.runner."""
    return module.split(".")[1]


MODULES = {module_name(p): gateway_imports(p) for p in sorted(GATEWAY.rglob("*.py"))}


def test_every_part_of_the_gateway_has_a_layer() -> None:
    assert {room(m) for m in MODULES if m != "gateway"} <= set(LAYER_OF)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != "gateway"))
def test_nothing_imports_upward_or_sideways(module: str) -> None:
    level = LAYER_OF[room(module)]
    wrong = sorted(
        imported
        for imported in MODULES[module]
        if room(imported) != room(module) and LAYER_OF[room(imported)] >= level
    )
    assert wrong == [], f"{module} (layer {level}) imports {wrong}"


def test_no_import_runs_in_a_circle() -> None:
    graph = {module: {i for i in imports if i in MODULES} for module, imports in MODULES.items()}
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as cycle:
        pytest.fail(f"an import cycle: {' -> '.join(cycle.args[1])}")


def test_the_layer_rule_would_see_an_upward_import() -> None:
    assert "gateway.http.deps" in gateway_imports(GATEWAY / "app.py")
    assert LAYER_OF[room("gateway.http.deps")] > LAYER_OF[room("gateway.jobs.runner")]
