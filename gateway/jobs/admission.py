"""Admission: a checked submission becomes a queued job, while the model's queue has room; a
batch's jobs are queued all together or not at all. An Idempotency-Key replay gets the job (or
batch item) its key named."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence

from gateway.errors import ApiError, ErrorCode
from gateway.jobs.cancelling import JobCanceller
from gateway.jobs.lookup import eta
from gateway.jobs.submission import Refusal, Submission
from gateway.metrics import Metrics
from gateway.store.job_models import (
    EditInputs,
    IdempotencyConflict,
    Job,
    JobStatus,
    NewEvent,
    new_job_id,
)
from gateway.store.job_store import JobQueue, JobStore, QueueStats

REUSED_KEY = "this Idempotency-Key was used with a different request; use a new key"


class JobAdmission:
    def __init__(
        self,
        store: JobStore,
        queue: JobQueue,
        canceller: JobCanceller,
        metrics: Metrics,
        *,
        limit: Callable[[str], int],
        max_depth: int,
        replica: str,
    ) -> None:
        self._store = store
        self._queue = queue
        self._canceller = canceller
        self._metrics = metrics
        self._limit = limit
        self._max_depth = max_depth
        self._replica = replica

    async def submit(self, sub: Submission) -> Job:
        """Queue the job (or return the job an idempotent replay names)."""
        model = sub.request.model
        stats = await self._queue.stats(model)
        limit = self._limit(model)
        if stats.running >= limit and stats.waiting >= self._max_depth:
            raise ApiError(
                ErrorCode.QUEUE_FULL,
                f"the queue for {model} is full ({self._max_depth} waiting); retry later",
                retry_after_s=round(stats.avg_run_s),
            )
        position = stats.waiting + 1 if stats.running >= limit else 0
        return await self._queue_job(sub, position, stats, limit)

    async def submit_many(self, entries: Sequence[Submission | Refusal]) -> list[Job]:
        """A batch's jobs, in order: a refused item as a job that failed at once, the others
        queued. The queue must have room for all of these, or none is created (queue_full);
        the room is read once, before the first, as /process reads it before its one job."""
        wanted = [e for e in entries if isinstance(e, Submission)]
        model = wanted[0].request.model if wanted else ""
        stats = await self._queue.stats(model)
        limit = self._limit(model)
        free = max(0, limit - stats.running)
        room = max(0, self._max_depth - stats.waiting + free)
        if wanted and len(wanted) > room:
            raise ApiError(
                ErrorCode.QUEUE_FULL,
                f"the queue for {model} has room for {room} more job(s) and this batch needs "
                f"{len(wanted)}; retry later, or send fewer images",
                retry_after_s=round(stats.avg_run_s),
            )
        jobs: list[Job] = []
        try:
            for entry in entries:
                if isinstance(entry, Refusal):
                    jobs.append(await self._refuse(entry))
                    continue
                queued = sum(1 for job in jobs if not job.finished)
                position = max(0, stats.waiting + 1 + queued - free)
                jobs.append(await self._queue_job(entry, position, stats, limit))
        except BaseException:
            # Jobs of a batch that was not accepted are of no use to anyone: stop them.
            with contextlib.suppress(Exception):
                await asyncio.shield(self._canceller.cancel_many([job.id for job in jobs]))
            raise
        return jobs

    async def _queue_job(
        self, sub: Submission, position: int, stats: QueueStats, limit: int
    ) -> Job:
        now = time.time()
        job = Job(
            id=new_job_id(),
            owner=sub.owner,
            model=sub.request.model,
            request_id=sub.request.request_id,
            replica=self._replica,
            created_at=now,
            deadline_at=now + sub.deadline_s,
            idempotency_key=sub.idempotency_key,
            request_hash=sub.request_hash,
            callback_url=sub.callback_url,
            image_id=sub.image_id,
        )
        queued = NewEvent("queued", {"position": position, "eta_s": eta(stats, limit, position)})
        return await self._create(job, queued, sub.request)

    async def _refuse(self, refusal: Refusal) -> Job:
        now = time.time()
        job = Job(
            id=new_job_id(),
            owner=refusal.owner,
            model=refusal.model,
            status=JobStatus.FAILED,
            request_id=refusal.request_id,
            replica=self._replica,
            created_at=now,
            finished_at=now,
            error_code=refusal.code.value,
            error_message=refusal.message,
            idempotency_key=refusal.idempotency_key,
            request_hash=refusal.request_hash,
        )
        error = {"code": refusal.code.value, "message": refusal.message}
        job = await self._create(job, NewEvent("failed", {"status": "failed", "error": error}))
        self._metrics.rejects.labels(reason=refusal.code.value).inc()
        return job

    async def _create(self, job: Job, event: NewEvent, request: EditInputs | None = None) -> Job:
        try:
            job, _ = await self._store.create(job, event, request)
        except IdempotencyConflict:
            raise ApiError(ErrorCode.IDEMPOTENCY_CONFLICT, REUSED_KEY) from None
        return job
