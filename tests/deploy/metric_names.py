"""The metric names that the alert rules and the Grafana dashboards depend on.

A test that scrapes a live Triton and a live gateway compares its metric families against
used_metric_names(), so a renamed metric fails a test instead of silently emptying a panel or
muting an alert. The names are the ones an exporter lists in its `# TYPE` lines: counters of
the gateway keep `_total` (prometheus_client writes the family that way), histograms lose the
`_bucket`, `_sum` and `_count` of their series.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "monitoring" / "alerts.yml"
DASHBOARDS = ROOT / "monitoring" / "grafana" / "dashboards"

# Triton's per-GPU metrics (DCGM). A Triton that sees no GPU emits none of them.
GPU_ONLY_METRICS = frozenset(
    {
        "nv_gpu_utilization",
        "nv_gpu_memory_total_bytes",
        "nv_gpu_memory_used_bytes",
        "nv_gpu_power_usage",
        "nv_gpu_power_limit",
        # Named without the nv_gpu_ prefix, but just as GPU-only.
        "nv_energy_consumption",
    }
)

# Series that Prometheus makes itself for every target or rule: no exporter exposes them.
PROMETHEUS_SYNTHETIC = frozenset(
    {
        "up",
        "scrape_duration_seconds",
        "scrape_samples_scraped",
        "scrape_samples_post_metric_relabeling",
        "scrape_series_added",
        "ALERTS",
        "ALERTS_FOR_STATE",
    }
)

# PromQL words that look like names but are operators or literals. Functions and aggregations
# need no list: a name followed by "(" is a call, never a metric.
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "group_left", "group_right", "inf", "nan"}
)
# Base units by Prometheus naming convention: `x_seconds_count` is a histogram's count series,
# while Triton's `nv_inference_count` is a counter of its own.
_UNIT_SUFFIXES = ("_seconds", "_bytes", "_ratio", "_percent", "_celsius", "_joules", "_watts")

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_NAME_MATCHER = re.compile(r'__name__\s*=\s*"([^"]+)"')
_LABEL_BLOCK = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_GRAFANA_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")
_IDENTIFIER = re.compile(r"(?<![\w.])[A-Za-z_:][\w:]*")
_LABEL_VALUES = re.compile(r"^\s*label_values\s*\((?P<inner>.*)\)\s*$", re.DOTALL)


def metric_names_in(expr: str) -> set[str]:
    """Metric names in one PromQL expression, exactly as written (suffixes kept)."""
    names = set(_NAME_MATCHER.findall(expr))
    text = _STRING.sub('""', expr)
    text = _LABEL_BLOCK.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = _GRAFANA_VARIABLE.sub(" ", text)
    for match in _IDENTIFIER.finditer(text):
        word = match.group()
        if word.lower() in _KEYWORDS:
            continue
        if text[match.end() :].lstrip().startswith("("):
            continue  # a function or an aggregation
        names.add(word)
    return names


def base_metric_names(names: Iterable[str]) -> set[str]:
    """Fold histogram series (`_bucket`, `_sum`, `_count`) into their family names."""
    names = set(names)
    histograms = {n.removesuffix("_bucket") for n in names if n.endswith("_bucket")}
    return {_family(name, histograms) for name in names}


def _family(name: str, histograms: set[str]) -> str:
    if name.endswith("_bucket"):
        return name.removesuffix("_bucket")
    for suffix in ("_sum", "_count"):
        stem = name.removesuffix(suffix)
        if stem != name and (stem in histograms or stem.endswith(_UNIT_SUFFIXES)):
            return stem
    return name


def alert_expressions(path: Path = ALERTS) -> list[str]:
    """The `expr` of every rule in a Prometheus rule file."""
    rules = yaml.safe_load(path.read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def recorded_names(path: Path = ALERTS) -> set[str]:
    """Series the rule file records itself: they need no exporter."""
    rules = yaml.safe_load(path.read_text())
    return {
        rule["record"] for group in rules["groups"] for rule in group["rules"] if "record" in rule
    }


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # panels inside a collapsed row


def dashboard_expressions(dashboard: dict[str, Any]) -> list[str]:
    """PromQL of every panel target, and of every query variable, in one dashboard."""
    exprs = [
        target["expr"]
        for panel in _panels(dashboard.get("panels", []))
        for target in panel.get("targets", [])
        if target.get("expr")
    ]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        text = query.get("query", "") if isinstance(query, dict) else str(query or "")
        # Grafana's label_values(selector, label): only the selector is PromQL.
        found = _LABEL_VALUES.match(text)
        if found:
            selector, _, _label = found["inner"].rpartition(",")
            text = selector or found["inner"]
        if text.strip():
            exprs.append(text)
    return exprs


def dashboard_files(folder: Path = DASHBOARDS) -> list[Path]:
    return sorted(folder.glob("*.json"))


def used_metric_names() -> set[str]:
    """Family names that Triton or the gateway must expose for the monitoring to work."""
    exprs = alert_expressions()
    for path in dashboard_files():
        exprs += dashboard_expressions(json.loads(path.read_text()))
    raw: set[str] = set()
    for expr in exprs:
        raw |= metric_names_in(expr)
    return base_metric_names(raw) - PROMETHEUS_SYNTHETIC - recorded_names()
