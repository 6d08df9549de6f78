"""Following jobs as they run: one job's event stream (with resume), or several jobs' events at
once for a batch. Nothing here writes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass

from gateway.errors import ErrorCode, StoreUnavailable
from gateway.store.job_models import Job, JobEvent
from gateway.store.job_store import JobGone, JobStore

EXPIRED = "the job expired or was evicted; its events are gone"
EVENT_WAIT_S = 15.0


@dataclass(frozen=True)
class StreamError:
    """The last thing an event stream says when the job it follows is gone."""

    code: ErrorCode
    message: str


GONE = StreamError(ErrorCode.JOB_EXPIRED, EXPIRED)


def unreachable(exc: StoreUnavailable) -> StreamError:
    return StreamError(exc.code, exc.message)


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


class JobFollower:
    def __init__(self, store: JobStore) -> None:
        self._store = store

    async def events(self, job: Job, last: int) -> AsyncIterator[JobEvent | StreamError]:
        """The job's events after `last` until the final one. A resume at or after the final
        event gets that event again, and ends."""
        if job.finished:
            history = await self._store.events_after(job.id, 0)
            if history and last >= history[-1].id:
                yield history[-1]
                return
        while True:
            try:
                batch = await self._store.wait_events(job.id, last, EVENT_WAIT_S)
            except JobGone:
                yield GONE
                return
            except StoreUnavailable as exc:
                yield unreachable(exc)
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
                yield Followed(gone.job_id, GONE, len(open_jobs))
                continue
            except StoreUnavailable as exc:
                yield Followed(None, unreachable(exc), 0)
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
                yield Followed(None, unreachable(exc), 0)
                return
            if job is None:
                del open_jobs[job_id]
                yield Followed(job_id, GONE, len(open_jobs))
            elif job.finished:
                del open_jobs[job_id]
                for event in rest:
                    yield Followed(job_id, event, len(open_jobs))


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
