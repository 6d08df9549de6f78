"""The synchronous edit's wait: `JobWaiter` waits for the job to end (a read), and stops it,
through the canceller and in plain sight, when its caller leaves or when its deadline passes
while it still waits for a slot."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from gateway.errors import ApiError, ErrorCode
from gateway.jobs.cancelling import JobCanceller
from gateway.jobs.lookup import JobLookup, Outcome, until_final
from gateway.store.job_models import Job, JobStatus
from gateway.store.job_store import JobStore


def outcome_error(job: Job) -> ApiError:
    """The HTTP error for a job that did not complete (synchronous /process)."""
    if job.status is JobStatus.CANCELLED:
        return ApiError(ErrorCode.CANCELLED, "the edit was cancelled")
    code = ErrorCode.known(job.error_code) or ErrorCode.INTERNAL_ERROR
    return ApiError(code, job.error_message or "the edit failed")


class JobWaiter:
    def __init__(self, store: JobStore, lookup: JobLookup, canceller: JobCanceller) -> None:
        self._store = store
        self._lookup = lookup
        self._canceller = canceller

    async def outcome(self, job: Job, disconnected: Awaitable[Any]) -> Outcome:
        """The synchronous edit's end. A caller gone cancels the job; a job still waiting for a
        slot at its deadline fails there (a running one is stopped by its runner)."""
        final = asyncio.ensure_future(self._ended(job))
        gone = asyncio.ensure_future(disconnected)
        try:
            done, _ = await asyncio.wait({final, gone}, return_when=asyncio.FIRST_COMPLETED)
            if final not in done:
                # The caller left: stop the edit, and free its Idempotency-Key, so that the
                # caller's retry makes a new job instead of finding this cancelled one.
                await self._canceller.stop(job)
                await self._store.release_idempotency(job)
            ended = await final
        finally:
            gone.cancel()
            final.cancel()
        if ended.status is not JobStatus.COMPLETED:
            return Outcome(ended, None)
        return Outcome(ended, await self._lookup.image(ended))

    async def _ended(self, job: Job) -> Job:
        ended = await until_final(self._store, job.id, until=job.deadline_at)
        if ended is None:
            await self._canceller.expire(job)
            ended = await until_final(self._store, job.id)
        assert ended is not None  # no `until`: it waits until the job ends
        return ended
