"""What a model itself says it did, in its DESCRIBE answer (`served`, kept by
qie_engine.triton_adapter): the steps it ran and how its requests ended. Tests read this instead
of log lines. A model with one instance (qwen_image_edit here) answers for all its requests."""

from __future__ import annotations

import time
from dataclasses import dataclass

from dev_stack.triton import TritonServer
from dev_stack.triton_stream import stream_edit


@dataclass(frozen=True)
class ModelCounts:
    steps: int
    completed: int
    cancelled: int


def model_counts(triton: TritonServer, model: str) -> ModelCounts:
    answer = stream_edit(triton.grpc_url, model, None, None, describe=True, timeout=60)
    assert answer.final_meta is not None, answer.error
    served = answer.final_meta["served"]
    return ModelCounts(served["steps"], served["completed"], served["cancelled"])


def steps_until_cancelled(
    triton: TritonServer, model: str, before: ModelCounts, timeout: float = 15.0
) -> int:
    """Steps the model ran since `before`, once it reports one more cancelled request."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = model_counts(triton, model)
        if now.cancelled > before.cancelled:
            assert now.completed == before.completed, "a request ran to the end"
            return now.steps - before.steps
        time.sleep(0.1)
    raise AssertionError(f"{model} reported no cancelled request within {timeout:.0f}s")
