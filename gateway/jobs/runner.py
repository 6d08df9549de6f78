"""The runner of each replica: one dispatcher per model takes jobs from the (global) queue while a
slot is free, and runs each one (execution.py) while renewing its lease; at shutdown it stops
taking jobs and lets the running ones finish for a while."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable

from gateway.errors import ErrorCode, StoreUnavailable
from gateway.jobs.execution import JobExecution
from gateway.jobs.lifecycle import JobLifecycle, persist
from gateway.metrics import Metrics
from gateway.store.job_models import JobStatus
from gateway.store.job_store import JobQueue, JobStore, Ticket

log = logging.getLogger(__name__)

TAKE_TIMEOUT_S = 1.0
OUTAGE_PAUSE_S = 1.0
SHUTDOWN_STOP_S = 10.0
NOT_STARTED = "the gateway shut down before this job started; submit it again"


class JobRunner:
    def __init__(
        self,
        store: JobStore,
        queue: JobQueue,
        execution: JobExecution,
        lifecycle: JobLifecycle,
        *,
        limit: Callable[[str], int],
        lease_s: float,
    ) -> None:
        self._store = store
        self._queue = queue
        self._execution = execution
        self._lifecycle = lifecycle
        self._metrics: Metrics = lifecycle.metrics
        self._limit = limit
        self._lease_s = lease_s
        self.running: dict[str, asyncio.Task[None]] = {}
        self._dispatchers: dict[str, asyncio.Task[None]] = {}

    @property
    def models(self) -> list[str]:
        return sorted(self._dispatchers)

    def serve(self, model: str) -> None:
        """Start taking the model's jobs (once; the registry calls this when it is ready)."""
        if model not in self._dispatchers:
            self._dispatchers[model] = asyncio.create_task(
                self._dispatch(model), name=f"dispatch-{model}"
            )

    def running_for(self, model: str) -> int:
        return sum(1 for task in self.running.values() if task.get_name() == f"job-{model}")

    async def stop_taking(self) -> None:
        for task in self._dispatchers.values():
            task.cancel()
        await asyncio.gather(*self._dispatchers.values(), return_exceptions=True)

    async def shutdown(self, grace_s: float) -> None:
        """Stop taking jobs, let running ones finish for a while, then stop the rest as failed.

        Jobs still waiting stay in a shared (Redis) queue for the other replicas; in memory
        nobody else can run them, so they fail as `gateway_shutdown` too.
        """
        await self.stop_taking()
        running = list(self.running.values())
        if running:
            log.info("waiting up to %.0fs for %d job(s) to finish", grace_s, len(running))
            _, pending = await asyncio.wait(running, timeout=grace_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=SHUTDOWN_STOP_S)
        if not self._queue.shared:
            await self._fail_waiting()

    async def _fail_waiting(self) -> None:
        error = (ErrorCode.GATEWAY_SHUTDOWN, NOT_STARTED)
        for model in self.models:
            while (ticket := await self._queue.take(model, sys.maxsize, 0)) is not None:
                job = await self._store.get(ticket.job_id)
                if job is not None:
                    await self._lifecycle.finish(job, JobStatus.FAILED, error)
                await self._queue.release(ticket)

    async def _dispatch(self, model: str) -> None:
        while True:
            try:
                ticket = await self._queue.take(model, self._limit(model), TAKE_TIMEOUT_S)
            except StoreUnavailable:
                await asyncio.sleep(OUTAGE_PAUSE_S)  # the store is down: try again shortly
                continue
            if ticket is not None:
                task = asyncio.create_task(self._run(ticket), name=f"job-{model}")
                self.running[ticket.job_id] = task

    async def _run(self, ticket: Ticket) -> None:
        lost = asyncio.Event()
        heartbeat = asyncio.create_task(self._heartbeat(ticket, lost))
        self._count_inflight(ticket.model)
        run_s: float | None = None
        try:
            run_s = await self._execution.run(ticket, lost)
        except Exception:
            log.exception("runner of job %s crashed", ticket.job_id)
        finally:
            heartbeat.cancel()
            self.running.pop(ticket.job_id, None)
            self._count_inflight(ticket.model)
            if not lost.is_set():
                with contextlib.suppress(StoreUnavailable):
                    await persist(lambda: self._queue.release(ticket, run_s))

    def _count_inflight(self, model: str) -> None:
        self._metrics.inflight.labels(model=model).set(self.running_for(model))

    async def _heartbeat(self, ticket: Ticket, lost: asyncio.Event) -> None:
        while True:
            await asyncio.sleep(self._lease_s / 3)
            try:
                if not await self._queue.renew(ticket):
                    log.warning("job %s: lease lost to another replica", ticket.job_id)
                    lost.set()
                    return
            except StoreUnavailable:
                continue
