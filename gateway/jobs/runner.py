"""The runner of each replica: one dispatcher per model takes jobs from the (global) queue while a
slot is free, and runs each one (execution.py) while renewing its lease; at shutdown it stops
taking jobs and lets the running ones finish for a while."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable

from tenacity import AsyncRetrying, RetryCallState, wait_exponential

from gateway.errors import ApiError, ErrorCode, StoreUnavailable
from gateway.jobs.execution import JobExecution
from gateway.jobs.lifecycle import JobLifecycle, persist
from gateway.metrics import Metrics
from gateway.store.job_models import JobStatus
from gateway.store.job_store import JobQueue, JobStore, Ticket

log = logging.getLogger(__name__)

TAKE_TIMEOUT_S = 1.0
OUTAGE_PAUSE_S = 0.5
MAX_PAUSE_S = 10.0
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
        self._trouble: dict[str, str] = {}

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

    @property
    def trouble(self) -> dict[str, str]:
        """What keeps a runner loop from working now, by loop (empty: all well)."""
        return dict(self._trouble)

    async def _dispatch(self, model: str) -> None:
        while True:
            ticket = await self._take(model)
            if ticket is not None:
                task = asyncio.create_task(self._run(ticket), name=f"job-{model}")
                self.running[ticket.job_id] = task

    async def _take(self, model: str) -> Ticket | None:
        """The next ticket, or None; any error (the store down, read-only, out of memory) is
        logged, counted and retried with backoff, and /health says so while it lasts."""
        loop = f"dispatch-{model}"
        retrying = AsyncRetrying(
            wait=wait_exponential(multiplier=OUTAGE_PAUSE_S, max=MAX_PAUSE_S),
            before_sleep=lambda state: self._troubled(loop, state),
        )
        async for attempt in retrying:
            with attempt:
                ticket = await self._queue.take(model, self._limit(model), TAKE_TIMEOUT_S)
        self._trouble.pop(loop, None)
        return ticket

    def _troubled(self, loop: str, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        why = error.message if isinstance(error, ApiError) else type(error).__name__
        if loop not in self._trouble:
            log.error("%s failed (%s); retrying with backoff", loop, why, exc_info=error)
        self._trouble[loop] = why
        self._metrics.runner_errors.labels(loop=loop.split("-", 1)[0]).inc()

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
                renewed = await self._queue.renew(ticket)
            except Exception as exc:  # the next beat tries again; the lease outlasts a few
                why = exc.message if isinstance(exc, ApiError) else type(exc).__name__
                log.warning("job %s: lease renewal failed (%s)", ticket.job_id, why)
                self._metrics.runner_errors.labels(loop="heartbeat").inc()
                continue
            if not renewed:
                log.warning("job %s: lease lost to another replica", ticket.job_id)
                lost.set()
                return
