"""One taken job, run in Triton: started, streamed (each step recorded), and ended in one write.

It stops at its deadline, or when a cancel arrives from any replica (a blocking read of the job's
control stream), or when its lease is lost to another replica; closing the gRPC stream cancels
the Triton request. A job whose runner died is run again once (MAX_ATTEMPTS), then fails
`gateway_restarted`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from gateway.errors import ErrorCode, StoreUnavailable
from gateway.jobs.lifecycle import JobLifecycle, persist
from gateway.store.job_models import EditInputs, Job, JobStatus
from gateway.store.job_store import MAX_ATTEMPTS, JobStore, Ticket
from gateway.triton.client import FinalResult, TritonCallError, TritonPool

log = logging.getLogger(__name__)

OUTAGE_PAUSE_S = 1.0
REPLICA_LOST = "the gateway replica running this job stopped, twice; submit it again"
SHUTDOWN = "the gateway shut down before this job finished; submit it again"
LOST_EDIT = "the job's edit was lost; submit it again"


class JobExecution:
    def __init__(self, store: JobStore, pool: TritonPool, lifecycle: JobLifecycle) -> None:
        self._store = store
        self._pool = pool
        self._lifecycle = lifecycle

    async def run(self, ticket: Ticket, lost: asyncio.Event) -> float | None:
        """Run the ticket's job to its end; its run time when it completed, else None."""
        job = await persist(lambda: self._store.get(ticket.job_id))
        if job is None or job.finished:
            return None  # expired, or cancelled while it waited
        if job.status is JobStatus.PROCESSING and job.attempts >= MAX_ATTEMPTS:
            error = (ErrorCode.GATEWAY_RESTARTED, REPLICA_LOST)
            await self._lifecycle.finish(
                job, JobStatus.FAILED, error, expect=[job.status], fenced=True
            )
            return None
        if job.status is JobStatus.PROCESSING:
            log.warning("job %s: its runner died; running it again", job.id)
        request = await persist(lambda: self._store.get_request(ticket.job_id))
        started = await self._lifecycle.start(job)
        if started is None:
            return None  # cancelled just now
        if request is None:
            error = (ErrorCode.INTERNAL_ERROR, LOST_EDIT)
            await self._lifecycle.finish(started, JobStatus.FAILED, error, fenced=True)
            return None
        return await self._edit_until_stopped(started, request, lost)

    async def _edit_until_stopped(
        self, job: Job, request: EditInputs, lost: asyncio.Event
    ) -> float | None:
        began = time.monotonic()
        remaining = None if job.deadline_at is None else max(job.deadline_at - time.time(), 0.0)
        edit = asyncio.ensure_future(self._edit(job, request))
        cancel = asyncio.ensure_future(self._wait_cancel(job.id))
        lease_lost = asyncio.ensure_future(lost.wait())
        try:
            done, _ = await asyncio.wait(
                {edit, cancel, lease_lost}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
        except asyncio.CancelledError:  # the gateway shuts down
            await _stop(edit)
            error = (ErrorCode.GATEWAY_SHUTDOWN, SHUTDOWN)
            await self._lifecycle.finish(job, JobStatus.FAILED, error, fenced=True)
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
            await self._lifecycle.finish(job, JobStatus.CANCELLED, fenced=True)
        else:
            limit = (job.deadline_at or 0) - job.created_at
            message = f"the edit did not finish within {limit:g}s; it was stopped"
            error = (ErrorCode.DEADLINE_EXCEEDED, message)
            await self._lifecycle.finish(job, JobStatus.FAILED, error, fenced=True)
        return None

    async def _record_outcome(
        self, job: Job, edit: asyncio.Future[FinalResult], elapsed: float
    ) -> float | None:
        try:
            result = edit.result()
        except TritonCallError as exc:
            status = JobStatus.CANCELLED if exc.kind == "cancelled" else JobStatus.FAILED
            error = None if status is JobStatus.CANCELLED else (exc.code, exc.message)
            await self._lifecycle.finish(job, status, error, fenced=True)
            return None
        except Exception as exc:
            log.exception("job %s crashed", job.id)
            error = (ErrorCode.INTERNAL_ERROR, type(exc).__name__)
            await self._lifecycle.finish(job, JobStatus.FAILED, error, fenced=True)
            return None
        done = await self._lifecycle.finish(job, JobStatus.COMPLETED, result=result, fenced=True)
        if done is None:
            log.warning("job %s: another run took it over; this run's result is dropped", job.id)
            return None
        self._lifecycle.metrics.edit_duration.labels(model=job.model).observe(elapsed)
        return elapsed

    async def _edit(self, job: Job, request: EditInputs) -> FinalResult:
        request.request_id = request.request_id or job.id
        async for item in self._pool.stream_edit(request):
            if isinstance(item, FinalResult):
                return item
            await self._lifecycle.progress(job, item)
        raise TritonCallError("internal", ErrorCode.TRITON_ERROR, "Triton ended without a result")

    async def _wait_cancel(self, job_id: str) -> None:
        while True:
            try:
                await self._store.wait_cancel(job_id)
                return
            except StoreUnavailable:
                await asyncio.sleep(OUTAGE_PAUSE_S)  # cancels wait until the store is back


async def _stop(task: asyncio.Future[Any]) -> None:
    """Cancel the edit (closing its gRPC stream cancels the Triton request) and wait for it."""
    task.cancel()
    with contextlib.suppress(BaseException):
        await task
