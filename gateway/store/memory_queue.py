"""One process's queues, in memory: a FIFO line per model and its running slots."""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict, defaultdict

from gateway.store.job_models import Job
from gateway.store.job_store import QueueStats, Ticket

DEFAULT_AVG_RUN_S = 10.0


def moving_average(previous: float, seconds: float) -> float:
    return 0.8 * previous + 0.2 * seconds


class MemoryJobQueue:
    """One FIFO line per model; at most `limit` of a model's jobs hold a slot at once."""

    shared = False

    def __init__(self) -> None:
        self._lines: defaultdict[str, OrderedDict[str, None]] = defaultdict(OrderedDict)
        self._running: defaultdict[str, set[str]] = defaultdict(set)
        self._avg: dict[str, float] = {}
        self._changed: asyncio.Event | None = None

    def push(self, job: Job) -> None:
        self._lines[job.model][job.id] = None
        self._notify()

    def discard(self, model: str, job_id: str) -> None:
        self._lines[model].pop(job_id, None)

    async def take(self, model: str, limit: int, timeout: float) -> Ticket | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            line = self._lines[model]
            if line and len(self._running[model]) < limit:
                job_id, _ = line.popitem(last=False)
                self._running[model].add(job_id)
                return Ticket(model=model, job_id=job_id)
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            if self._changed is None:
                self._changed = asyncio.Event()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def renew(self, ticket: Ticket) -> bool:
        return ticket.job_id in self._running[ticket.model]

    async def release(self, ticket: Ticket, run_s: float | None = None) -> None:
        self._running[ticket.model].discard(ticket.job_id)
        if run_s is not None:
            previous = self._avg.get(ticket.model, DEFAULT_AVG_RUN_S)
            self._avg[ticket.model] = moving_average(previous, run_s)
        self._notify()

    async def remove(self, model: str, job_id: str) -> None:
        self.discard(model, job_id)

    async def position(self, model: str, job_id: str) -> int | None:
        for place, waiting_id in enumerate(self._lines[model], start=1):
            if waiting_id == job_id:
                return place
        return None

    async def stats(self, model: str) -> QueueStats:
        waiting = len(self._lines[model])
        return QueueStats(
            waiting=waiting,
            waiting_here=waiting,
            running=len(self._running[model]),
            avg_run_s=self._avg.get(model, DEFAULT_AVG_RUN_S),
        )

    async def close(self) -> None:
        return None

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None
