"""Batches: one prompt over several images (or one image with several seeds), one job each.

A batch is a record of its jobs, written once; everything else is the jobs' own, through the job
services: their queue, limits, runs, events, cancels and results. So a batch works on every
replica that shares the store, and its state is read off its jobs (progress.py).
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field

from gateway.batches.archive import ArchiveEntry, build_zip
from gateway.batches.progress import BatchTally, tally
from gateway.errors import ApiError, ErrorCode
from gateway.jobs.admission import REUSED_KEY, JobAdmission
from gateway.jobs.cancelling import JobCanceller
from gateway.jobs.lookup import JobLookup
from gateway.jobs.submission import Refusal, Submission
from gateway.store.batch_models import Batch, BatchItem, BatchKind, idempotent_batch_id
from gateway.store.job_models import Job, JobStatus, is_job_id, new_job_id
from gateway.store.job_store import BatchStore


@dataclass
class BatchSubmission:
    """A validated batch: one entry per item, in order (a Submission, or a Refusal)."""

    owner: str
    model: str
    kind: BatchKind
    entries: list[Submission | Refusal]
    names: list[str]  # each item's input name, cleaned
    files: list[str]  # each item's entry in the zip
    seeds: list[int | None]
    deadline_s: float
    idempotency_key: str | None = None
    request_hash: str | None = None


@dataclass
class BatchState:
    batch: Batch
    jobs: list[Job | None]  # in item order; None: expired
    tally: BatchTally = field(init=False)

    def __post_init__(self) -> None:
        self.tally = tally(self.jobs)


@dataclass(frozen=True)
class BatchArchive:
    data: bytes
    state: BatchState
    entries: int


class BatchReader:
    """A batch record and its jobs, as stored now."""

    def __init__(self, batches: BatchStore, lookup: JobLookup) -> None:
        self._batches = batches
        self._lookup = lookup

    async def owned(self, batch_id: str, owner: str) -> Batch:
        """Another key's batch is reported exactly like a missing one."""
        batch = await self._batches.get(batch_id) if is_job_id(batch_id) else None
        if batch is None or batch.owner != owner:
            raise ApiError(ErrorCode.BATCH_NOT_FOUND, f"no batch {batch_id[:64]}")
        return batch

    async def state(self, batch: Batch) -> BatchState:
        return BatchState(batch, await self._lookup.peek_many(batch.job_ids))

    async def get(self, batch_id: str, owner: str) -> BatchState:
        return await self.state(await self.owned(batch_id, owner))


class BatchService:
    def __init__(
        self,
        reader: BatchReader,
        batches: BatchStore,
        admission: JobAdmission,
        canceller: JobCanceller,
        lookup: JobLookup,
        *,
        ttl_s: int,
    ) -> None:
        self._reader = reader
        self._batches = batches
        self._admission = admission
        self._canceller = canceller
        self._lookup = lookup
        self._ttl_s = ttl_s

    async def submit(self, sub: BatchSubmission) -> BatchState:
        """Create the batch's jobs, then its record; an Idempotency-Key replay gets the batch it
        named, and its items' jobs are idempotent too, so a replay racing the first creates
        nothing twice."""
        if sub.idempotency_key is None:
            batch_id = new_job_id()
        else:
            batch_id = idempotent_batch_id(sub.owner, sub.idempotency_key)
            kept = await self._batches.get(batch_id)
            if kept is not None:
                return await self._replayed(kept, sub)
            for index, entry in enumerate(sub.entries):
                entry.idempotency_key = f"{batch_id}/{index}"
        jobs = await self._admission.submit_many(sub.entries)
        batch = Batch(
            id=batch_id,
            owner=sub.owner,
            model=sub.model,
            kind=sub.kind,
            created_at=time.time(),
            items=[
                BatchItem(job_id=job.id, name=name, file=file, seed=seed)
                for job, name, file, seed in zip(jobs, sub.names, sub.files, sub.seeds, strict=True)
            ],
            request_hash=sub.request_hash,
        )
        # It outlives its jobs: their last write is at their deadline, and they keep ttl_s.
        stored, created = await self._batches.create(batch, self._ttl_s + math.ceil(sub.deadline_s))
        if not created:
            return await self._replayed(stored, sub)
        return BatchState(stored, list(jobs))

    async def _replayed(self, batch: Batch, sub: BatchSubmission) -> BatchState:
        if batch.request_hash != sub.request_hash:
            raise ApiError(ErrorCode.IDEMPOTENCY_KEY_REUSED, REUSED_KEY)
        return await self._reader.state(batch)

    async def get(self, batch_id: str, owner: str) -> BatchState:
        return await self._reader.get(batch_id, owner)

    async def cancel(self, batch_id: str, owner: str) -> BatchState:
        """Cancel every job still unfinished. Idempotent: a cancelled batch answers the same
        again; one that ended by itself, with nothing cancelled, is a conflict (409)."""
        state = await self._reader.get(batch_id, owner)
        if state.tally.final and not state.tally.cancelled:
            raise ApiError(
                ErrorCode.BATCH_FINISHED,
                f"batch {batch_id} already ended ({state.tally.status}); nothing to cancel",
            )
        unfinished = [job.id for job in state.jobs if job is not None and not job.finished]
        await self._canceller.cancel_many(unfinished)
        return await self._reader.state(state.batch)

    async def archive(self, batch_id: str, owner: str) -> BatchArchive:
        """A zip of the images finished so far (all of them once the batch has ended)."""
        state = await self._reader.get(batch_id, owner)
        done = [
            (item, job)
            for item, job in zip(state.batch.items, state.jobs, strict=True)
            if job is not None and job.status is JobStatus.COMPLETED
        ]
        if not done:
            raise _no_result(state)
        images = await self._lookup.images_of([job.id for _, job in done])
        entries = [
            ArchiveEntry(item.file, image, job.finished_at or job.created_at)
            for (item, job), image in zip(done, images, strict=True)
            if image is not None
        ]
        if not entries:
            raise ApiError(
                ErrorCode.RESULT_EXPIRED, f"the results of batch {batch_id} have expired"
            )
        return BatchArchive(await asyncio.to_thread(build_zip, entries), state, len(entries))


def _no_result(state: BatchState) -> ApiError:
    t, batch_id = state.tally, state.batch.id
    if all(job is None for job in state.jobs):
        return ApiError(ErrorCode.RESULT_EXPIRED, f"the results of batch {batch_id} have expired")
    if not t.final:
        return ApiError(
            ErrorCode.BATCH_NOT_READY,
            f"batch {batch_id} is {t.status}: none of its {t.total} edits has finished yet",
        )
    if t.cancelled:
        return ApiError(
            ErrorCode.BATCH_CANCELLED, f"batch {batch_id} was cancelled before any edit ended"
        )
    errors = [
        {"index": i, "code": job.error_code, "message": job.error_message}
        for i, job in enumerate(state.jobs)
        if job is not None
    ]
    return ApiError(
        ErrorCode.BATCH_FAILED,
        f"every edit of batch {batch_id} failed",
        detail={"errors": errors},
    )
