"""Runs queued jobs in Triton: one dispatcher per model takes jobs from the (global) queue while
a slot is free, and each job then streams its edit, records its progress and ends in one write.

A job stops at its deadline, or when a cancel arrives from any replica: the runner waits on a
blocking read of the job's control stream, and closing the gRPC stream cancels the Triton
request. While it runs, the runner renews the job's lease; a job whose runner died is taken
again by another replica and retried once (MAX_ATTEMPTS), then fails `gateway_restarted`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from gateway.errors import StoreUnavailable
from gateway.jobs.lifecycle import JobLifecycle, persist
from gateway.store import Backend
from gateway.store.job_models import EditRequest, Job, JobStatus
from gateway.store.job_store import MAX_ATTEMPTS, Ticket
from gateway.triton.client import FinalResult, TritonCallError, TritonPool

log = logging.getLogger(__name__)

TAKE_TIMEOUT_S = 1.0
OUTAGE_PAUSE_S = 1.0
REPLICA_LOST = "the gateway replica running this job stopped, twice; submit it again"
SHUTDOWN = "the gateway shut down before this job finished; submit it again"


class JobRunner:
    def __init__(
        self,
        backend: Backend,
        pool: TritonPool,
        lifecycle: JobLifecycle,
        limit: Callable[[str], int],
        lease_s: float,
    ) -> None:
        self.store, self.queue = backend.store, backend.queue
        self.pool = pool
        self.lifecycle = lifecycle
        self.metrics = lifecycle.metrics
        self.limit = limit
        self.lease_s = lease_s
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

    async def _dispatch(self, model: str) -> None:
        while True:
            try:
                ticket = await self.queue.take(model, self.limit(model), TAKE_TIMEOUT_S)
            except StoreUnavailable:
                await asyncio.sleep(OUTAGE_PAUSE_S)  # the store is down: try again shortly
                continue
            if ticket is not None:
                task = asyncio.create_task(self._run(ticket), name=f"job-{model}")
                self.running[ticket.job_id] = task

    async def _run(self, ticket: Ticket) -> None:
        lost = asyncio.Event()
        heartbeat = asyncio.create_task(self._heartbeat(ticket, lost))
        self.metrics.inflight.labels(model=ticket.model).set(self.running_for(ticket.model))
        run_s: float | None = None
        try:
            run_s = await self._run_job(ticket, lost)
        except Exception:
            log.exception("runner of job %s crashed", ticket.job_id)
        finally:
            heartbeat.cancel()
            self.running.pop(ticket.job_id, None)
            self.metrics.inflight.labels(model=ticket.model).set(self.running_for(ticket.model))
            if not lost.is_set():
                with contextlib.suppress(StoreUnavailable):
                    await persist(lambda: self.queue.release(ticket, run_s))

    async def _heartbeat(self, ticket: Ticket, lost: asyncio.Event) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                if not await self.queue.renew(ticket):
                    log.warning("job %s: lease lost to another replica", ticket.job_id)
                    lost.set()
                    return
            except StoreUnavailable:
                continue

    async def _run_job(self, ticket: Ticket, lost: asyncio.Event) -> float | None:
        job = await persist(lambda: self.store.get(ticket.job_id))
        if job is None or job.finished:
            return None  # expired, or cancelled while it waited
        if job.status is JobStatus.PROCESSING and job.attempts >= MAX_ATTEMPTS:
            await self.lifecycle.finish(
                job, JobStatus.FAILED, ("gateway_restarted", REPLICA_LOST), expect=[job.status]
            )
            return None
        if job.status is JobStatus.PROCESSING:
            log.warning("job %s: its runner died; running it again", job.id)
        request = await persist(lambda: self.store.get_request(ticket.job_id))
        started = await self.lifecycle.start(job)
        if started is None:
            return None  # cancelled just now
        if request is None:
            error = ("internal_error", "the job's edit was lost; submit it again")
            await self.lifecycle.finish(started, JobStatus.FAILED, error)
            return None
        return await self._edit_until_stopped(started, request, lost)

    async def _edit_until_stopped(
        self, job: Job, request: EditRequest, lost: asyncio.Event
    ) -> float | None:
        began = time.monotonic()
        remaining = None if job.deadline_at is None else job.deadline_at - time.time()
        edit = asyncio.ensure_future(self._edit(job, request))
        cancel = asyncio.ensure_future(self._wait_cancel(job.id))
        lease_lost = asyncio.ensure_future(lost.wait())
        try:
            done, _ = await asyncio.wait(
                {edit, cancel, lease_lost},
                timeout=max(remaining, 0.0) if remaining is not None else None,
                return_when=asyncio.FIRST_COMPLETED,
            )
        except asyncio.CancelledError:  # the gateway shuts down
            await _stop(edit)
            await self.lifecycle.finish(job, JobStatus.FAILED, ("gateway_shutdown", SHUTDOWN))
            raise
        finally:
            cancel.cancel()
            lease_lost.cancel()
        if edit in done:
            return await self._record_outcome(job, edit, time.monotonic() - began)
        await _stop(edit)
        if lease_lost in done:
            return None  # another replica runs it now: it writes the outcome
        if cancel in done:
            await self.lifecycle.finish(job, JobStatus.CANCELLED)
        else:
            limit = (job.deadline_at or 0) - job.created_at
            message = f"the edit did not finish within {limit:g}s; it was stopped"
            await self.lifecycle.finish(job, JobStatus.FAILED, ("deadline_exceeded", message))
        return None

    async def _record_outcome(
        self, job: Job, edit: asyncio.Future[FinalResult], elapsed: float
    ) -> float | None:
        try:
            result = edit.result()
        except TritonCallError as exc:
            status = JobStatus.CANCELLED if exc.kind == "cancelled" else JobStatus.FAILED
            error = None if status is JobStatus.CANCELLED else (exc.code, exc.message)
            await self.lifecycle.finish(job, status, error)
            return None
        except Exception as exc:
            log.exception("job %s crashed", job.id)
            await self.lifecycle.finish(
                job, JobStatus.FAILED, ("internal_error", type(exc).__name__)
            )
            return None
        self.metrics.edit_duration.labels(model=job.model).observe(elapsed)
        await self.lifecycle.finish(job, JobStatus.COMPLETED, result=result)
        return elapsed

    async def _edit(self, job: Job, request: EditRequest) -> FinalResult:
        request.request_id = request.request_id or job.id
        async for item in self.pool.stream_edit(request):
            if isinstance(item, FinalResult):
                return item
            await self.lifecycle.progress(job.id, item)
        raise TritonCallError("internal", "triton_error", "Triton ended without a result")

    async def _wait_cancel(self, job_id: str) -> None:
        while True:
            try:
                await self.store.wait_cancel(job_id)
                return
            except StoreUnavailable:
                await asyncio.sleep(OUTAGE_PAUSE_S)  # cancels wait until the store is back


async def _stop(task: asyncio.Future[Any]) -> None:
    """Cancel the edit (closing its gRPC stream cancels the Triton request) and wait for it."""
    task.cancel()
    with contextlib.suppress(BaseException):
        await task
