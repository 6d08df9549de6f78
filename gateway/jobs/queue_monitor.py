"""The queues as /health and the metrics see them: sampled in the background (summable over
replicas), so neither reads the store on the request path."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from gateway.errors import StoreUnavailable
from gateway.jobs.runner import JobRunner
from gateway.metrics import Metrics
from gateway.store.job_store import JobQueue, JobStore, QueueStats

# The share of Redis's maxmemory past which new work is refused: the rest is for running jobs.
STORE_HIGH_WATER = 0.9


class QueueMonitor:
    def __init__(
        self,
        store: JobStore,
        queue: JobQueue,
        runner: JobRunner,
        metrics: Metrics,
        limit: Callable[[str], int],
    ) -> None:
        self._store = store
        self._queue = queue
        self._runner = runner
        self._metrics = metrics
        self._limit = limit
        self._stats: dict[str, QueueStats] = {}
        self.fullness: float | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self, interval_s: float) -> None:
        self._task = asyncio.create_task(self._watch(interval_s), name="queue-stats")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def queues(self) -> dict[str, dict[str, int]]:
        """Waiting and running jobs per model (all replicas), as last sampled."""
        return {
            model: {
                "waiting": stats.waiting,
                "running": stats.running,
                "max_running": self._limit(model),
            }
            for model, stats in sorted(self._stats.items())
        }

    def trouble(self) -> dict[str, str]:
        """Runner loops that fail now (taking jobs), and why."""
        return self._runner.trouble

    def store_full(self) -> bool:
        """Past the high-water mark: new work is refused while running jobs finish."""
        return self.fullness is not None and self.fullness >= STORE_HIGH_WATER

    def saturated(self, model: str) -> bool:
        stats = self._stats.get(model)
        return stats is not None and stats.running >= self._limit(model) and stats.waiting > 0

    async def _watch(self, interval_s: float) -> None:
        while True:
            with contextlib.suppress(StoreUnavailable):
                await self.sample()
            await asyncio.sleep(interval_s)

    async def sample(self) -> None:
        waiting_here = 0
        for model in self._runner.models:
            stats = await self._queue.stats(model)
            self._stats[model] = stats
            waiting_here += stats.waiting_here
            self._metrics.queue_depth.labels(model=model).set(stats.waiting_here)
        self._metrics.jobs_active.labels(status="pending").set(waiting_here)
        self._metrics.jobs_active.labels(status="processing").set(len(self._runner.running))
        self.fullness = await self._store.fullness()
        if self.fullness is not None:
            self._metrics.store_fullness.set(self.fullness)
