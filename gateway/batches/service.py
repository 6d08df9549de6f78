"""Batches: one prompt over several images (or one image with several seeds), one job each.

A batch is a record of its jobs, written once; everything else is the jobs' own, through the job
service: their queue, limits, runs, events, cancels and results. So a batch works on every
replica that shares the store, and its state is read off its jobs (batch_progress.py).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.batches.archive import ArchiveEntry, build_zip
from gateway.batches.progress import BatchTally, tally
from gateway.errors import ApiError, StoreUnavailable
from gateway.jobs.service import JobService, Refusal, StreamError, Submission
from gateway.store.batch_models import Batch, BatchItem, BatchKind, idempotent_batch_id
from gateway.store.job_models import Job, JobStatus, new_job_id
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
class BatchEvent:
    """One server-sent event of a batch stream; `id` is the cursor to resume after it."""

    event: str
    data: dict[str, Any]
    id: str


@dataclass(frozen=True)
class BatchArchive:
    data: bytes
    state: BatchState
    entries: int


def encode_cursor(cursor: Sequence[int]) -> str:
    """The last event id seen of each job, in item order: "4.2.0" (a Last-Event-ID)."""
    return ".".join(str(n) for n in cursor)


def parse_cursor(text: str | None, size: int) -> list[int]:
    """A Last-Event-ID of this batch's stream; anything else starts from the beginning."""
    parts = (text or "").strip().split(".")
    if len(parts) != size or not all(p.isascii() and p.isdigit() and len(p) <= 9 for p in parts):
        return [0] * size
    return [int(p) for p in parts]


class BatchService:
    def __init__(self, jobs: JobService, batches: BatchStore, ttl_s: int) -> None:
        self._jobs = jobs
        self._batches = batches
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
        jobs = await self._jobs.submit_many(sub.entries)
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
            raise ApiError(
                "idempotency_conflict",
                "this Idempotency-Key was used with a different request; use a new key",
            )
        return await self._state(batch)

    async def get(self, batch_id: str, owner: str) -> BatchState:
        return await self._state(await self._owned(batch_id, owner))

    async def cancel(self, batch_id: str, owner: str) -> BatchState:
        """Cancel every job still unfinished. Idempotent: a cancelled batch answers the same
        again; one that ended by itself, with nothing cancelled, is a conflict (409)."""
        state = await self.get(batch_id, owner)
        if state.tally.final and not state.tally.cancelled:
            raise ApiError(
                "batch_finished",
                f"batch {batch_id} already ended ({state.tally.status}); nothing to cancel",
            )
        unfinished = [job.id for job in state.jobs if job is not None and not job.finished]
        await self._jobs.cancel_many(unfinished)
        return await self._state(state.batch)

    async def archive(self, batch_id: str, owner: str) -> BatchArchive:
        """A zip of the images finished so far (all of them once the batch has ended)."""
        state = await self.get(batch_id, owner)
        done = [
            (item, job)
            for item, job in zip(state.batch.items, state.jobs, strict=True)
            if job is not None and job.status is JobStatus.COMPLETED
        ]
        if not done:
            raise _no_result(state)
        images = await self._jobs.images_of([job.id for _, job in done])
        entries = [
            ArchiveEntry(item.file, image, job.finished_at or job.created_at)
            for (item, job), image in zip(done, images, strict=True)
            if image is not None
        ]
        if not entries:
            raise ApiError("result_expired", f"the results of batch {batch_id} have expired")
        return BatchArchive(await asyncio.to_thread(build_zip, entries), state, len(entries))

    async def events(
        self, batch_id: str, owner: str, last_event_id: str | None
    ) -> AsyncIterator[BatchEvent]:
        """Checks the owner now; the iterator then yields the jobs' events after the cursor
        (each tagged with its job), a `batch` summary at the start and whenever a job ends,
        and a last `batch` summary with `final: true` once every job has ended."""
        batch = await self._owned(batch_id, owner)
        return self._stream(batch, parse_cursor(last_event_id, len(batch.items)))

    async def _stream(self, batch: Batch, cursor: list[int]) -> AsyncIterator[BatchEvent]:
        index = {job_id: i for i, job_id in enumerate(batch.job_ids)}
        try:
            opening = await self._state(batch)
        except StoreUnavailable as exc:
            yield BatchEvent("error", {"code": exc.code, "message": exc.message}, "")
            return
        if not opening.tally.final:
            yield _summary(opening, cursor, final=False)
        async for followed in self._jobs.follow(dict(zip(batch.job_ids, cursor, strict=True))):
            item = followed.item
            if followed.job_id is None:  # the store is unreachable: following stops here
                assert isinstance(item, StreamError)
                yield BatchEvent("error", {"code": item.code, "message": item.message}, "")
                return
            i = index[followed.job_id]
            tag = {"job_id": followed.job_id, "index": i}
            if isinstance(item, StreamError):
                data = {**tag, "code": item.code, "message": item.message}
                yield BatchEvent("error", data, encode_cursor(cursor))
            else:
                cursor[i] = item.id
                yield BatchEvent(item.event, {**tag, **item.data}, encode_cursor(cursor))
            if followed.closes and followed.still_open:
                # Live, a summary as each job ends; a replay of an ended batch has just the last.
                state = await self._state(batch)
                if not state.tally.final:
                    yield _summary(state, cursor, final=False)
        yield _summary(await self._state(batch), cursor, final=True)

    async def _state(self, batch: Batch) -> BatchState:
        return BatchState(batch, await self._jobs.peek_many(batch.job_ids))

    async def _owned(self, batch_id: str, owner: str) -> Batch:
        """Another key's batch is reported exactly like a missing one."""
        batch = await self._batches.get(batch_id) if len(batch_id) <= 64 else None
        if batch is None or batch.owner != owner:
            raise ApiError("batch_not_found", f"no batch {batch_id[:64]}")
        return batch


def _summary(state: BatchState, cursor: Sequence[int], *, final: bool) -> BatchEvent:
    t = state.tally
    data = {
        "batch_id": state.batch.id,
        "status": t.status,
        "total": t.total,
        "pending": t.pending,
        "processing": t.processing,
        "completed": t.completed,
        "failed": t.failed,
        "cancelled": t.cancelled,
        "final": final,
    }
    return BatchEvent("batch", data, encode_cursor(cursor))


def _no_result(state: BatchState) -> ApiError:
    t, batch_id = state.tally, state.batch.id
    if all(job is None for job in state.jobs):
        return ApiError("result_expired", f"the results of batch {batch_id} have expired")
    if not t.final:
        return ApiError(
            "batch_not_ready",
            f"batch {batch_id} is {t.status}: none of its {t.total} edits has finished yet",
        )
    if t.cancelled:
        return ApiError("batch_cancelled", f"batch {batch_id} was cancelled before any edit ended")
    errors = [
        {"index": i, "code": job.error_code, "message": job.error_message}
        for i, job in enumerate(state.jobs)
        if job is not None
    ]
    return ApiError(
        "batch_failed", f"every edit of batch {batch_id} failed", detail={"errors": errors}
    )
