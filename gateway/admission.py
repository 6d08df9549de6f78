"""A bounded FIFO queue per model in front of Triton, with positions and ETAs."""

from __future__ import annotations

import asyncio
import math
from collections import OrderedDict
from dataclasses import dataclass, field


class QueueFull(Exception):
    """The model's queue is at its maximum depth."""


@dataclass
class ModelQueue:
    """At most `max_inflight` jobs run at once; up to `max_depth` wait in arrival order."""

    max_inflight: int
    max_depth: int
    inflight: int = 0
    waiting: OrderedDict[str, asyncio.Future[None]] = field(default_factory=OrderedDict)
    # Moving average of one edit's run time, seeding the ETAs.
    avg_run_s: float = 10.0

    def check_capacity(self) -> None:
        if self.inflight >= self.max_inflight and len(self.waiting) >= self.max_depth:
            raise QueueFull

    async def acquire(self, job_id: str) -> None:
        """Wait for a slot. Admission (check_capacity) happens earlier, when the job is accepted:
        a job already accepted is never refused here."""
        if self.inflight < self.max_inflight and not self.waiting:
            self.inflight += 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting[job_id] = future
        try:
            await future
        except BaseException:
            if self.waiting.pop(job_id, None) is None and future.done() and not future.cancelled():
                self.release()  # the slot was handed over just as we gave up: pass it on
            raise

    def release(self) -> None:
        while self.waiting:
            _, future = self.waiting.popitem(last=False)
            if not future.done():
                future.set_result(None)  # the slot passes straight to the next job
                return
        self.inflight -= 1

    def position(self, job_id: str) -> int | None:
        """1-based place in the queue, or None when not waiting."""
        for place, waiting_id in enumerate(self.waiting, start=1):
            if waiting_id == job_id:
                return place
        return None

    def eta_s(self, position: int | None) -> float:
        """Seconds until a job at this position finishes, from the average run time."""
        ahead = position or 0
        rounds = math.ceil((ahead + 1) / max(1, self.max_inflight))
        return round(rounds * self.avg_run_s, 1)

    def record_run(self, seconds: float) -> None:
        self.avg_run_s = 0.8 * self.avg_run_s + 0.2 * seconds

    @property
    def depth(self) -> int:
        return len(self.waiting)


class Admission:
    """One ModelQueue per model, created on first use."""

    def __init__(self, max_depth: int, default_inflight: int = 1) -> None:
        self.max_depth = max_depth
        self.default_inflight = default_inflight
        self.queues: dict[str, ModelQueue] = {}

    def queue(self, model: str, max_inflight: int | None = None) -> ModelQueue:
        queue = self.queues.get(model)
        if queue is None:
            queue = ModelQueue(max_inflight or self.default_inflight, self.max_depth)
            self.queues[model] = queue
        elif max_inflight is not None:
            queue.max_inflight = max_inflight
        return queue
