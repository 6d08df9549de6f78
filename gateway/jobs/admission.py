"""Admission: a checked submission becomes a queued job, while the model's queue has room; a
batch's jobs are queued all together or not at all. An Idempotency-Key replay gets the job (or
batch item) its key named."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from gateway.errors import ApiError, ErrorCode, StoreFull
from gateway.jobs.lookup import eta
from gateway.jobs.submission import Refusal, Submission
from gateway.metrics import Metrics
from gateway.store.job_models import (
    IdempotencyConflict,
    Job,
    JobStatus,
    NewEvent,
    new_job_id,
)
from gateway.store.job_store import JobQueue, JobStore, NewJob, QueueFull, QueueStats, Room

REUSED_KEY = (
    "this Idempotency-Key was used with a different request (another image, prompt, option, "
    "deadline, callback or image_id); use a new key for a new request"
)


class JobAdmission:
    def __init__(
        self,
        store: JobStore,
        queue: JobQueue,
        metrics: Metrics,
        *,
        limit: Callable[[str], int],
        max_depth: int,
        replica: str,
        store_full: Callable[[], bool] = lambda: False,
    ) -> None:
        self._store = store
        self._queue = queue
        self._metrics = metrics
        self._limit = limit
        self._max_depth = max_depth
        self._replica = replica
        self._store_full = store_full

    async def submit(self, sub: Submission) -> Job:
        """Queue the job (or return the job an idempotent replay names)."""
        return (await self.submit_many([sub]))[0]

    async def submit_many(self, entries: Sequence[Submission | Refusal]) -> list[Job]:
        """A batch's jobs, in order: a refused item as a job that failed at once, the others
        queued. The queue takes all of them or none (queue_full): the room check and the
        writes are one atomic step in the store, across replicas."""
        if self._store_full():
            raise StoreFull("past 90 % of its memory; running jobs finish first")
        wanted = [e for e in entries if isinstance(e, Submission)]
        model = wanted[0].request.model if wanted else ""
        stats = await self._queue.stats(model)  # for the positions and ETAs the events state
        limit = self._limit(model)
        free = max(0, limit - stats.running)
        new_jobs, queued = [], 0
        for entry in entries:
            if isinstance(entry, Refusal):
                new_jobs.append(self._refused(entry))
                continue
            queued += 1
            position = max(0, stats.waiting + queued - free)
            new_jobs.append(self._queued(entry, position, stats, limit))
        try:
            created = await self._store.create_many(new_jobs, Room(self._max_depth, limit))
        except QueueFull as full:
            raise self._full(model, len(wanted), full, stats) from None
        except IdempotencyConflict:
            raise ApiError(ErrorCode.IDEMPOTENCY_KEY_REUSED, REUSED_KEY) from None
        for (_, new), entry in zip(created, entries, strict=True):
            if new and isinstance(entry, Refusal):
                self._metrics.rejects.labels(reason=entry.code.value).inc()
        return [job for job, _ in created]

    def _full(self, model: str, wanted: int, full: QueueFull, stats: QueueStats) -> ApiError:
        if wanted == 1:
            message = f"the queue for {model} is full ({self._max_depth} waiting); retry later"
        else:
            message = (
                f"the queue for {model} has room for {full.left} more job(s) and this batch "
                f"needs {wanted}; retry later, or send fewer images"
            )
        return ApiError(ErrorCode.QUEUE_FULL, message, retry_after_s=round(stats.avg_run_s))

    def _queued(self, sub: Submission, position: int, stats: QueueStats, limit: int) -> NewJob:
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
        return NewJob(job, queued, sub.request)

    def _refused(self, refusal: Refusal) -> NewJob:
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
        return NewJob(job, NewEvent("failed", {"status": "failed", "error": error}), None)
