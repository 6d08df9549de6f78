"""Stopping jobs: a cancel (idempotent; a running job stops within its step, on any replica), a
batch's cancel of all its jobs, and the expiry of a job whose deadline passed while it waited."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

from gateway.errors import ApiError, ErrorCode
from gateway.jobs.lifecycle import JobLifecycle
from gateway.jobs.lookup import JobLookup, JobState, require, until_final
from gateway.store.job_models import Job, JobStatus
from gateway.store.job_store import JobQueue, JobStore

CANCEL_WAIT_S = 5.0


class JobCanceller:
    def __init__(
        self, store: JobStore, queue: JobQueue, lifecycle: JobLifecycle, lookup: JobLookup
    ) -> None:
        self._store = store
        self._queue = queue
        self._lifecycle = lifecycle
        self._lookup = lookup

    async def cancel(self, job_id: str, owner: str) -> JobState:
        """Idempotent: pending → cancelled now; processing → stops at the next step."""
        await self.stop(await self._lookup.owned(job_id, owner))
        return await self._lookup.get(job_id, owner)

    async def cancel_many(self, job_ids: Sequence[str]) -> None:
        """Cancel every one of these jobs still unfinished, all at once (a batch's)."""

        async def stop(job: Job | None) -> None:
            if job is not None and not job.finished:
                with contextlib.suppress(ApiError):  # it finished first: nothing to cancel
                    await self.stop(job)

        await asyncio.gather(*(stop(job) for job in await self._lookup.peek_many(job_ids)))

    async def stop(self, job: Job) -> None:
        """Cancel a job: at once if it waits, else through its runner, waiting a little for it
        to stop; 409 once it had ended by itself."""
        if job.status is JobStatus.PENDING:
            if await self._drop(job, JobStatus.CANCELLED, None):
                return
            job = await require(self._store, job.id)  # it started meanwhile
        if job.status is JobStatus.CANCELLED:
            return
        if job.finished:
            raise ApiError(ErrorCode.JOB_FINISHED, f"job {job.id} already {job.status.value}")
        await self._store.request_cancel(job.id)
        await until_final(self._store, job.id, until=time.time() + CANCEL_WAIT_S)

    async def expire(self, job: Job) -> None:
        """A job whose deadline passed while it still waited for a slot fails now."""
        limit = (job.deadline_at or 0) - job.created_at
        message = f"the edit did not start within {limit:g}s; it was dropped"
        await self._drop(job, JobStatus.FAILED, (ErrorCode.DEADLINE_EXCEEDED, message))

    async def _drop(self, job: Job, status: JobStatus, error: tuple[ErrorCode, str] | None) -> bool:
        """End a job that still waits, and take it out of its queue; False if it had moved on."""
        ended = await self._lifecycle.finish(job, status, error, expect=[JobStatus.PENDING])
        if ended is None:
            return False
        await self._queue.remove(job.model, job.id)
        return True
