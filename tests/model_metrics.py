"""What a model itself reports on Triton's metrics port (qie_engine.triton_adapter.ModelCounters):
the steps it ran and how its requests ended. Tests read these instead of log lines."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import httpx

from scripts.stack import TritonServer

SAMPLE = re.compile(r"^(qie_model_\w+)\{([^}]*)\} ([0-9.e+]+)$", re.MULTILINE)


@dataclass(frozen=True)
class ModelCounts:
    steps: float
    completed: float
    cancelled: float


def model_counts(triton: TritonServer, model: str) -> ModelCounts:
    values: dict[str, float] = {}
    for name, labels, value in SAMPLE.findall(httpx.get(triton.metrics_url, timeout=10).text):
        if f'model="{model}"' not in labels:
            continue
        outcome = re.search(r'outcome="(\w+)"', labels)
        values[outcome.group(1) if outcome else name] = float(value)
    return ModelCounts(
        values.get("qie_model_steps_total", 0.0),
        values.get("completed", 0.0),
        values.get("cancelled", 0.0),
    )


def steps_until_cancelled(
    triton: TritonServer, model: str, before: ModelCounts, timeout: float = 15.0
) -> int:
    """Steps the model ran since `before`, once it reports one more cancelled request."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = model_counts(triton, model)
        if now.cancelled > before.cancelled:
            assert now.completed == before.completed, "a request ran to the end"
            return int(now.steps - before.steps)
        time.sleep(0.1)
    raise AssertionError(f"{model} reported no cancelled request within {timeout:.0f}s")
