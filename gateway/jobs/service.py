"""The one thing routes call (with the batch service over it): submit, look at, wait for,
stream, fetch and cancel jobs.

The store, the queue, the runner and the Triton pool are private to it. With Redis they are
shared by every replica, so any replica answers for any job.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.errors import ApiError, StoreUnavailable
from gateway.jobs.lifecycle import JobLifecycle, persist
from gateway.jobs.runner import JobRunner
from gateway.settings import Settings
from gateway.store import Backend
from gateway.store.job_models import (
    EditRequest,
    IdempotencyConflict,
    Job,
    JobEvent,
    JobStatus,
    NewEvent,
    new_job_id,
)
from gateway.store.job_store import JobGone, QueueStats
from gateway.triton.client import TritonPool
from gateway.triton.registry import ModelRegistry
from gateway.webhooks.sender import WebhookSender

log = logging.getLogger(__name__)

CANCEL_WAIT_S = 5.0
EXPIRED = "the job expired or was evicted; its events are gone"
EVENT_WAIT_S = 15.0
SHUTDOWN_STOP_S = 10.0


@dataclass
class Submission:
    """A validated edit request, ready to queue."""

    owner: str
    request: EditRequest
    deadline_s: float
    respond_async: bool = False
    idempotency_key: str | None = None
    request_hash: str | None = None
    callback_url: str | None = None
    image_id: str | None = None


@dataclass
class Refusal:
    """A batch item refused at the door (a bad image): it becomes a job that failed at once, so
    that it fails its own item and not the whole batch."""

    owner: str
    model: str
    request_id: str
    code: str
    message: str
    idempotency_key: str | None = None
    request_hash: str | None = None


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


@dataclass(frozen=True)
class StreamError:
    """The last thing an event stream says when the job it follows is gone."""

    code: str
    message: str


@dataclass(frozen=True)
class Followed:
    """One thing said while following several jobs: an event of one of them, or an error (with
    no job: the store is unreachable, and following stops), and how many are still followed."""

    job_id: str | None
    item: JobEvent | StreamError
    still_open: int

    @property
    def closes(self) -> bool:
        return isinstance(self.item, StreamError) or self.item.final


def outcome_error(job: Job) -> ApiError:
    """The HTTP error for a job that did not complete (synchronous /process)."""
    if job.status is JobStatus.CANCELLED:
        return ApiError("cancelled", "the edit was cancelled")
    return ApiError(job.error_code or "internal_error", job.error_message or "the edit failed")


class JobService:
    def __init__(
        self,
        backend: Backend,
        pool: TritonPool,
        registry: ModelRegistry,
        webhooks: WebhookSender,
        settings: Settings,
    ) -> None:
        self._store, self._queue = backend.store, backend.queue
        self._registry = registry
        self._metrics = registry.metrics
        self._replica = settings.replica_id
        self._max_depth = settings.max_queue_depth
        self._lifecycle = JobLifecycle(self._store, self._metrics, webhooks)
        self._runner = JobRunner(
            backend, pool, self._lifecycle, registry.inflight_limit, settings.job_lease_s
        )
        self._stats: dict[str, QueueStats] = {}
        self._watch: asyncio.Task[None] | None = None
        registry.on_ready = self._runner.serve

    # --- lifetime --------------------------------------------------------------------------

    def start(self, interval_s: float) -> None:
        self._watch = asyncio.create_task(self._watch_queues(interval_s), name="queue-stats")

    async def shutdown(self, grace_s: float) -> None:
        """Stop taking jobs, let running ones finish for a while, then stop the rest as failed.

        Jobs still waiting stay in a shared (Redis) queue for the other replicas; in memory
        nobody else can run them, so they fail as `gateway_shutdown` too.
        """
        if self._watch is not None:
            self._watch.cancel()
        await self._runner.stop_taking()
        running = list(self._runner.running.values())
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
        message = "the gateway shut down before this job started; submit it again"
        for model in self._runner.models:
            while (ticket := await self._queue.take(model, sys.maxsize, 0)) is not None:
                job = await self._store.get(ticket.job_id)
                if job is not None:
                    error = ("gateway_shutdown", message)
                    await self._lifecycle.finish(job, JobStatus.FAILED, error)
                await self._queue.release(ticket)

    # --- submit ----------------------------------------------------------------------------

    async def submit(self, sub: Submission) -> Job:
        """Queue the job (or return the job an idempotent replay names)."""
        model = sub.request.model
        stats = await self._queue.stats(model)
        limit = self._registry.inflight_limit(model)
        if stats.running >= limit and stats.waiting >= self._max_depth:
            raise ApiError(
                "queue_full",
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
        limit = self._registry.inflight_limit(model)
        free = max(0, limit - stats.running)
        room = max(0, self._max_depth - stats.waiting + free)
        if wanted and len(wanted) > room:
            raise ApiError(
                "queue_full",
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
                position = max(0, stats.waiting + 1 + sum(map(_queued, jobs)) - free)
                jobs.append(await self._queue_job(entry, position, stats, limit))
        except BaseException:
            # Jobs of a batch that was not accepted are of no use to anyone: stop them.
            with contextlib.suppress(Exception):
                await asyncio.shield(self.cancel_many([job.id for job in jobs]))
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
        queued = NewEvent("queued", {"position": position, "eta_s": _eta(stats, limit, position)})
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
            error_code=refusal.code,
            error_message=refusal.message,
            idempotency_key=refusal.idempotency_key,
            request_hash=refusal.request_hash,
        )
        error = {"code": refusal.code, "message": refusal.message}
        job = await self._create(job, NewEvent("failed", {"status": "failed", "error": error}))
        self._metrics.rejects.labels(reason=refusal.code).inc()
        return job

    async def _create(self, job: Job, event: NewEvent, request: EditRequest | None = None) -> Job:
        try:
            job, _ = await self._store.create(job, event, request)
        except IdempotencyConflict:
            raise ApiError(
                "idempotency_conflict",
                "this Idempotency-Key was used with a different request; use a new key",
            ) from None
        return job

    # --- look -------------------------------------------------------------------------------

    async def get(self, job_id: str, owner: str) -> JobState:
        job = await self._owned(job_id, owner)
        if job.status is not JobStatus.PENDING and job.finished:
            return JobState(job, None, None)
        stats = await self._queue.stats(job.model)
        limit = self._registry.inflight_limit(job.model)
        if job.status is JobStatus.PROCESSING:
            eta = None
            if job.progress_total:
                per_step = stats.avg_run_s / max(job.progress_total, 1)
                eta = round(per_step * (job.progress_total - job.progress_step), 1)
            return JobState(job, None, eta)
        position = await self._queue.position(job.model, job.id)
        return JobState(job, position, _eta(stats, limit, position))

    async def result(self, job_id: str, owner: str) -> Outcome:
        job = await self._owned(job_id, owner)
        if job.status is JobStatus.CANCELLED:
            raise ApiError("job_cancelled", f"job {job_id} was cancelled; it has no result")
        if job.status is JobStatus.FAILED:
            raise ApiError(
                "job_failed",
                f"job {job_id} failed: {job.error_message}",
                detail={"error": {"code": job.error_code, "message": job.error_message}},
            )
        if job.status is not JobStatus.COMPLETED:
            raise ApiError(
                "job_not_ready", f"job {job_id} is {job.status.value}; wait for it to complete"
            )
        image = await self._store.get_result(job_id)
        if image is None:
            raise ApiError("result_expired", f"the result of job {job_id} has expired")
        return Outcome(job, image)

    async def peek_many(self, job_ids: Sequence[str]) -> list[Job | None]:
        """The jobs as stored now (None: expired), for a batch whose owner was checked."""
        return list(await asyncio.gather(*(self._store.get(j) for j in job_ids)))

    async def images_of(self, job_ids: Sequence[str]) -> list[bytes | None]:
        """The result images of completed jobs (None: expired)."""
        return list(await asyncio.gather(*(self._store.get_result(j) for j in job_ids)))

    async def events(
        self, job_id: str, owner: str, last_event_id: int
    ) -> AsyncIterator[JobEvent | StreamError]:
        """Checks the owner now; the iterator then yields events after `last_event_id` until
        the final one. A resume at or after the final event gets that event again, and ends."""
        job = await self._owned(job_id, owner)
        return self._event_stream(job, last_event_id)

    async def _event_stream(self, job: Job, last: int) -> AsyncIterator[JobEvent | StreamError]:
        if job.finished:
            history = await self._store.events_after(job.id, 0)
            if history and last >= history[-1].id:
                yield history[-1]
                return
        while True:
            try:
                batch = await self._store.wait_events(job.id, last, EVENT_WAIT_S)
            except JobGone:
                yield StreamError("job_expired", EXPIRED)
                return
            except StoreUnavailable as exc:
                yield StreamError(exc.code, exc.message)
                return
            for event in batch:
                last = event.id
                yield event
                if event.final:
                    return

    async def follow(self, cursors: Mapping[str, int]) -> AsyncIterator[Followed]:
        """The events of several jobs as they come, each after its cursor, until each job's
        final one; one blocking read waits for all of them. A job already ended, whose cursor
        is at or past its final event, gives nothing."""
        open_jobs = dict(cursors)
        async for followed in self._ended(open_jobs):
            yield followed
            if followed.job_id is None:
                return
        while open_jobs:
            try:
                found = await self._store.wait_many(open_jobs, EVENT_WAIT_S)
            except JobGone as gone:
                del open_jobs[gone.job_id]
                yield Followed(gone.job_id, StreamError("job_expired", EXPIRED), len(open_jobs))
                continue
            except StoreUnavailable as exc:
                yield Followed(None, StreamError(exc.code, exc.message), 0)
                return
            for followed in _advance(open_jobs, found):
                yield followed

    async def _ended(self, open_jobs: dict[str, int]) -> AsyncIterator[Followed]:
        """The rest of each job that has ended (or expired), which then is followed no more."""
        for job_id, last in list(open_jobs.items()):
            try:
                job = await self._store.get(job_id)
                rest = await self._store.events_after(job_id, last) if job else []
            except StoreUnavailable as exc:
                yield Followed(None, StreamError(exc.code, exc.message), 0)
                return
            if job is None:
                del open_jobs[job_id]
                yield Followed(job_id, StreamError("job_expired", EXPIRED), len(open_jobs))
            elif job.finished:
                del open_jobs[job_id]
                for event in rest:
                    yield Followed(job_id, event, len(open_jobs))

    # --- wait and cancel --------------------------------------------------------------------

    async def outcome(self, job: Job, disconnected: Awaitable[Any]) -> Outcome:
        """Wait for the job to end, on whichever replica runs it; a caller gone cancels it."""
        final = asyncio.ensure_future(self._until_final(job))
        gone = asyncio.ensure_future(disconnected)
        try:
            done, _ = await asyncio.wait({final, gone}, return_when=asyncio.FIRST_COMPLETED)
            if final not in done:
                await self._cancel(job)
            ended = await final
        finally:
            gone.cancel()
            final.cancel()
        if ended.status is not JobStatus.COMPLETED:
            return Outcome(ended, None)
        return Outcome(ended, await persist(lambda: self._store.get_result(job.id)))

    async def _until_final(self, job: Job) -> Job:
        """The job once finished. A job still waiting at its deadline fails there."""
        last = 0
        while True:
            timeout = EVENT_WAIT_S
            if job.deadline_at is not None:
                timeout = max(0.0, min(timeout, job.deadline_at - time.time()))
            try:
                batch = await persist(
                    functools.partial(self._store.wait_events, job.id, last, timeout)
                )
            except JobGone:
                raise ApiError("result_expired", f"job {job.id} expired") from None
            if any(event.final for event in batch):
                return await self._require(job.id)
            last = batch[-1].id if batch else last
            if not batch and job.deadline_at is not None and time.time() >= job.deadline_at:
                await self._expire(job)

    async def _expire(self, job: Job) -> None:
        limit = (job.deadline_at or 0) - job.created_at
        message = f"the edit did not start within {limit:g}s; it was dropped"
        failed = await self._lifecycle.finish(
            job, JobStatus.FAILED, ("deadline_exceeded", message), expect=[JobStatus.PENDING]
        )
        if failed is not None:
            await self._queue.remove(job.model, job.id)

    async def cancel(self, job_id: str, owner: str) -> JobState:
        """Idempotent: pending → cancelled now; processing → stops at the next step."""
        await self._cancel(await self._owned(job_id, owner))
        return await self.get(job_id, owner)

    async def cancel_many(self, job_ids: Sequence[str]) -> None:
        """Cancel every one of these jobs still unfinished, all at once (a batch's)."""

        async def stop(job: Job | None) -> None:
            if job is not None and not job.finished:
                with contextlib.suppress(ApiError):  # it finished first: nothing to cancel
                    await self._cancel(job)

        await asyncio.gather(*(stop(job) for job in await self.peek_many(job_ids)))

    async def _cancel(self, job: Job) -> None:
        if job.status is JobStatus.PENDING:
            cancelled = await self._lifecycle.finish(
                job, JobStatus.CANCELLED, expect=[JobStatus.PENDING]
            )
            if cancelled is not None:
                await self._queue.remove(job.model, job.id)
                return
            job = await self._require(job.id)  # it started meanwhile
        if job.status is JobStatus.CANCELLED:
            return
        if job.finished:
            raise ApiError("job_finished", f"job {job.id} already {job.status.value}")
        await self._store.request_cancel(job.id)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._until_final(job), CANCEL_WAIT_S)

    # --- health -----------------------------------------------------------------------------

    def queues(self) -> dict[str, dict[str, int]]:
        """Waiting and running jobs per model (all replicas), as last sampled."""
        return {
            model: {
                "waiting": stats.waiting,
                "running": stats.running,
                "max_running": self._registry.inflight_limit(model),
            }
            for model, stats in sorted(self._stats.items())
        }

    def saturated(self, model: str) -> bool:
        stats = self._stats.get(model)
        limit = self._registry.inflight_limit(model)
        return stats is not None and stats.running >= limit and stats.waiting > 0

    async def _watch_queues(self, interval_s: float) -> None:
        """Sample the queues for /health and the metrics (summable over replicas)."""
        while True:
            with contextlib.suppress(StoreUnavailable):
                await self._sample_queues()
            await asyncio.sleep(interval_s)

    async def _sample_queues(self) -> None:
        waiting_here = 0
        for model in self._runner.models:
            stats = await self._queue.stats(model)
            self._stats[model] = stats
            waiting_here += stats.waiting_here
            self._metrics.queue_depth.labels(model=model).set(stats.waiting_here)
        self._metrics.jobs_active.labels(status="pending").set(waiting_here)
        self._metrics.jobs_active.labels(status="processing").set(len(self._runner.running))

    # --- helpers ----------------------------------------------------------------------------

    async def _owned(self, job_id: str, owner: str) -> Job:
        """Another key's job is reported exactly like a missing one."""
        job = await self._store.get(job_id) if len(job_id) <= 64 else None
        if job is None or job.owner != owner:
            raise ApiError("job_not_found", f"no job {job_id[:64]}")
        return job

    async def _require(self, job_id: str) -> Job:
        job = await persist(lambda: self._store.get(job_id))
        if job is None:
            raise ApiError("result_expired", f"job {job_id} expired")
        return job


def _advance(open_jobs: dict[str, int], found: Mapping[str, list[JobEvent]]) -> Iterator[Followed]:
    """The events found, each moving its job's cursor on; a final one ends its job."""
    for job_id, events in found.items():
        for event in events:
            open_jobs[job_id] = event.id
            if event.final:
                del open_jobs[job_id]
            yield Followed(job_id, event, len(open_jobs))
            if event.final:
                break


def _queued(job: Job) -> int:
    return 0 if job.finished else 1


def _eta(stats: QueueStats, limit: int, position: int | None) -> float:
    """Seconds until a job at this position finishes, from the average run time."""
    rounds = math.ceil(((position or 0) + 1) / max(1, limit))
    return round(rounds * stats.avg_run_s, 1)
