"""Reading jobs: a job's state with its place in the queue and an ETA, its result, the raw jobs
and images a batch is made of, and the wait for a job to end. Nothing here writes."""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway.errors import ApiError, ErrorCode
from gateway.jobs.lifecycle import persist
from gateway.store.job_models import Job, JobStatus, is_job_id
from gateway.store.job_store import JobGone, JobQueue, JobStore, QueueStats

EVENT_WAIT_S = 15.0


@dataclass
class JobState:
    """A job as a client sees it: the stored job plus its place in the queue and an ETA."""

    job: Job
    queue_position: int | None
    eta_s: float | None


@dataclass
class Outcome:
    job: Job
    image: bytes | None


def eta(stats: QueueStats, limit: int, position: int | None) -> float:
    """Seconds until a job at this position finishes, from the average run time."""
    rounds = math.ceil(((position or 0) + 1) / max(1, limit))
    return round(rounds * stats.avg_run_s, 1)


async def require(store: JobStore, job_id: str) -> Job:
    """The job, waiting out a brief store outage; 410 once it expired."""
    job = await persist(lambda: store.get(job_id))
    if job is None:
        raise ApiError(ErrorCode.RESULT_EXPIRED, f"job {job_id} expired")
    return job


async def until_final(store: JobStore, job_id: str, until: float | None = None) -> Job | None:
    """The job once it has ended; None when `until` (a time.time()) passes first."""
    last = 0
    while True:
        timeout = EVENT_WAIT_S if until is None else min(EVENT_WAIT_S, until - time.time())
        if timeout <= 0:
            return None
        try:
            batch = await persist(functools.partial(store.wait_events, job_id, last, timeout))
        except JobGone:
            raise ApiError(ErrorCode.RESULT_EXPIRED, f"job {job_id} expired") from None
        if any(event.final for event in batch):
            return await require(store, job_id)
        if batch:
            last = batch[-1].id


class JobLookup:
    def __init__(self, store: JobStore, queue: JobQueue, limit: Callable[[str], int]) -> None:
        self._store = store
        self._queue = queue
        self._limit = limit

    async def owned(self, job_id: str, owner: str) -> Job:
        """Another key's job is reported exactly like a missing one."""
        job = await self._store.get(job_id) if is_job_id(job_id) else None
        if job is None or job.owner != owner:
            raise ApiError(ErrorCode.JOB_NOT_FOUND, f"no job {job_id[:64]}")
        return job

    async def get(self, job_id: str, owner: str) -> JobState:
        return await self.state(await self.owned(job_id, owner))

    async def state(self, job: Job) -> JobState:
        if job.finished:
            return JobState(job, None, None)
        stats = await self._queue.stats(job.model)
        if job.status is JobStatus.PROCESSING:
            left = None
            if job.progress_total:
                per_step = stats.avg_run_s / max(job.progress_total, 1)
                left = round(per_step * (job.progress_total - job.progress_step), 1)
            return JobState(job, None, left)
        position = await self._queue.position(job.model, job.id)
        return JobState(job, position, eta(stats, self._limit(job.model), position))

    async def result(self, job_id: str, owner: str) -> Outcome:
        job = await self.owned(job_id, owner)
        if job.status is JobStatus.CANCELLED:
            raise ApiError(ErrorCode.JOB_CANCELLED, f"job {job_id} was cancelled; it has no result")
        if job.status is JobStatus.FAILED:
            raise ApiError(
                ErrorCode.JOB_FAILED,
                f"job {job_id} failed: {job.error_message}",
                detail={"error": {"code": job.error_code, "message": job.error_message}},
            )
        if job.status is not JobStatus.COMPLETED:
            raise ApiError(
                ErrorCode.JOB_NOT_READY,
                f"job {job_id} is {job.status.value}; wait for it to complete",
            )
        image = await self._store.get_result(job_id)
        if image is None:
            raise ApiError(ErrorCode.RESULT_EXPIRED, f"the result of job {job_id} has expired")
        return Outcome(job, image)

    async def image(self, job: Job) -> bytes | None:
        """A completed job's image, waiting out a brief store outage (None: expired)."""
        return await persist(lambda: self._store.get_result(job.id))

    async def peek_many(self, job_ids: Sequence[str]) -> list[Job | None]:
        """The jobs as stored now (None: expired), for a batch whose owner was checked."""
        return list(await asyncio.gather(*(self._store.get(j) for j in job_ids)))

    async def images_of(self, job_ids: Sequence[str]) -> list[bytes | None]:
        """The result images of completed jobs (None: expired)."""
        return list(await asyncio.gather(*(self._store.get_result(j) for j in job_ids)))
