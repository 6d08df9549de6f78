"""Rooms a newcomer can read: no class over 250 lines and no function over 60 lines in the
gateway, the engine and the client."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gateway", "qie_engine", "qie_client")
MAX_CLASS_LINES = 250
MAX_FUNCTION_LINES = 60
SOURCES = sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


def too_long(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ClassDef):
            limit = MAX_CLASS_LINES
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            limit = MAX_FUNCTION_LINES
        else:
            continue
        lines = (node.end_lineno or node.lineno) - node.lineno + 1
        if lines > limit:
            found.append(f"{node.name}: {lines} lines (at most {limit})")
    return found


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_class_or_function_is_too_long_to_read(path: Path) -> None:
    assert too_long(path) == []


def test_the_rule_would_see_a_long_function(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    source = tmp_path / "long.py"
    source.write_text(f"def long():\n{body}\n")
    assert too_long(source) == [f"long: {MAX_FUNCTION_LINES + 1} lines (at most 60)"]
