"""One process's jobs, in memory: the embedded default of `make run`.

A job is forgotten `ttl_s` after its last write, and its result `result_ttl_s` after it was
stored. The store is bounded by count and result bytes. Over a bound, it first forgets finished
jobs that keep no result (any owner's, the least recently written first), then finished jobs of
the owner whose write passed the bound. Another owner's result is kept until its result TTL: a
new job that finds no room is refused (StoreFull, 503 store_full), while a running job's result
is always stored (the bound is soft for jobs that already run).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import StoreFull
from gateway.store.job_fields import checked_fields, event_copy, holds
from gateway.store.job_models import (
    TERMINAL_STATUSES,
    EditInputs,
    IdempotencyConflict,
    Job,
    JobEvent,
    NewEvent,
)
from gateway.store.job_store import JobGone, NewJob, QueueFull, Room
from gateway.store.memory_queue import MemoryJobQueue

DEFAULT_TTL_S = 86400
DEFAULT_RESULT_TTL_S = 3600


@dataclass
class _Entry:
    job: Job
    request: EditInputs | None
    touched: float
    events: list[JobEvent] = field(default_factory=list)
    result: bytes | None = None
    cancel: asyncio.Event | None = None


class MemoryJobStore:
    def __init__(
        self,
        queue: MemoryJobQueue | None = None,
        *,
        ttl_s: int = DEFAULT_TTL_S,
        result_ttl_s: int = DEFAULT_RESULT_TTL_S,
        max_jobs: int = 10_000,
        max_result_bytes: int = 512 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.queue = queue or MemoryJobQueue()
        self.ttl_s = ttl_s
        self.result_ttl_s = result_ttl_s
        self.max_jobs = max_jobs
        self.max_result_bytes = max_result_bytes
        self._clock = clock
        # Least recently written first, so expiry and eviction read from the front.
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._idempotency: dict[tuple[str, str], str] = {}
        self._result_bytes = 0
        self._results: deque[tuple[float, str]] = deque()  # (expiry, job id), oldest first
        self._wakeups: dict[str, asyncio.Event] = {}

    def __len__(self) -> int:
        """Jobs kept now (the count bound is checked against it)."""
        self._sweep()
        return len(self._entries)

    @property
    def result_bytes(self) -> int:
        self._sweep()
        return self._result_bytes

    async def create(
        self, job: Job, event: NewEvent, request: EditInputs | None, room: Room | None = None
    ) -> tuple[Job, bool]:
        return (await self.create_many([NewJob(job, event, request)], room))[0]

    async def create_many(
        self, entries: Sequence[NewJob], room: Room | None = None
    ) -> list[tuple[Job, bool]]:
        self._sweep()
        answers: list[tuple[Job, bool] | None] = [self._replayed(e.job) for e in entries]
        new = [e for e, answer in zip(entries, answers, strict=True) if answer is None]
        queued = sum(1 for e in new if e.request is not None)
        if room is not None and queued:
            stats = await self.queue.stats(new[0].job.model)
            left = room.left(stats.waiting, stats.running)
            if queued > left:
                raise QueueFull(left, stats.waiting, stats.running)
        if new and not self._room_for(len(new), new[0].job.owner):
            raise StoreFull(f"{self.max_jobs} jobs or {self.max_result_bytes} result bytes")
        for entry in new:
            self._add(entry)
        return [
            answer or (e.job.model_copy(deep=True), True)
            for e, answer in zip(entries, answers, strict=True)
        ]

    def _replayed(self, job: Job) -> tuple[Job, bool] | None:
        existing = self._entries.get(job.id)
        if existing is None and job.idempotency_key is not None:
            existing = self._entries.get(self._idempotency.get(self._key(job), ""))
            if existing is not None and existing.job.request_hash != job.request_hash:
                raise IdempotencyConflict(job.idempotency_key)
        return None if existing is None else (existing.job.model_copy(deep=True), False)

    def _add(self, new: NewJob) -> None:
        job = new.job
        if job.idempotency_key is not None:
            self._idempotency[self._key(job)] = job.id
        entry = _Entry(job=job.model_copy(deep=True), request=new.request, touched=self._clock())
        entry.events.append(event_copy(new.event, 1))
        self._entries[job.id] = entry
        if new.request is not None:
            self.queue.push(job)

    async def release_idempotency(self, job: Job) -> None:
        if job.idempotency_key is not None and self._idempotency.get(self._key(job)) == job.id:
            del self._idempotency[self._key(job)]

    async def get(self, job_id: str) -> Job | None:
        entry = self._entry(job_id)
        return entry.job.model_copy(deep=True) if entry else None

    async def get_request(self, job_id: str) -> EditInputs | None:
        entry = self._entry(job_id)
        return entry.request if entry else None

    async def apply(
        self,
        job_id: str,
        fields: Mapping[str, Any],
        event: NewEvent | None = None,
        *,
        result: bytes | None = None,
        expect: Mapping[str, Collection[Any]] | None = None,
    ) -> Job | None:
        checked = checked_fields(fields)
        entry = self._entry(job_id)
        if entry is None or not holds(entry.job, expect):
            return None
        self._touch(job_id, entry)
        entry.job = entry.job.model_copy(update=checked, deep=True)
        if event is not None:
            entry.events.append(event_copy(event, len(entry.events) + 1))
        if result is not None:
            self._result_bytes += len(result) - len(entry.result or b"")
            entry.result = bytes(result)
            self._results.append((self._clock() + self.result_ttl_s, job_id))
        if entry.job.status in TERMINAL_STATUSES:
            entry.request = None
        self._wake(job_id)
        job = entry.job.model_copy(deep=True)
        self._room_for(0, job.owner)  # a finished edit's result is kept: the bound is soft here
        return job

    async def events_after(self, job_id: str, last_id: int) -> list[JobEvent]:
        entry = self._entry(job_id)
        if entry is None:
            return []
        # Ids are 1..n in list order, so the events after `last_id` start at index `last_id`.
        return [e.model_copy(deep=True) for e in entry.events[max(last_id, 0) :]]

    async def wait_events(self, job_id: str, last_id: int, timeout: float) -> list[JobEvent]:
        found = await self.wait_many({job_id: last_id}, timeout)
        return found.get(job_id, [])

    async def wait_many(
        self, cursors: Mapping[str, int], timeout: float
    ) -> dict[str, list[JobEvent]]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            found: dict[str, list[JobEvent]] = {}
            expires_in = float(self.ttl_s)
            for job_id, last_id in cursors.items():
                entry = self._entry(job_id)
                if entry is None:
                    raise JobGone(job_id)
                expires_in = min(expires_in, entry.touched + self.ttl_s - self._clock())
                events = await self.events_after(job_id, last_id)
                if events:
                    found[job_id] = events
            remaining = deadline - loop.time()
            if found or remaining <= 0 or not cursors:
                return found
            # One wake-up for any of the jobs (an event, an expiry) or the timeout: never spin.
            wakeups = [self._wakeups.setdefault(j, asyncio.Event()) for j in cursors]
            waiters = [asyncio.ensure_future(w.wait()) for w in wakeups]
            try:
                await asyncio.wait(
                    waiters,
                    timeout=max(0.001, min(remaining, expires_in + 0.001)),
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                for waiter in waiters:
                    waiter.cancel()

    async def get_result(self, job_id: str) -> bytes | None:
        entry = self._entry(job_id)
        return entry.result if entry else None

    async def request_cancel(self, job_id: str) -> None:
        entry = self._entry(job_id)
        if entry is not None:
            self._cancel_event(entry).set()

    async def cancel_requested(self, job_id: str) -> bool:
        entry = self._entry(job_id)
        return entry is not None and entry.cancel is not None and entry.cancel.is_set()

    async def wait_cancel(self, job_id: str) -> None:
        entry = self._entry(job_id)
        if entry is not None:
            await self._cancel_event(entry).wait()

    async def fullness(self) -> float | None:
        return None  # its own bounds make room, or refuse new work (StoreFull), as it writes

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None

    @staticmethod
    def _key(job: Job) -> tuple[str, str]:
        return (job.owner, job.idempotency_key or "")

    def _cancel_event(self, entry: _Entry) -> asyncio.Event:
        if entry.cancel is None:
            entry.cancel = asyncio.Event()
        return entry.cancel

    def _entry(self, job_id: str) -> _Entry | None:
        self._sweep()
        return self._entries.get(job_id)

    def _touch(self, job_id: str, entry: _Entry) -> None:
        """The entry is about to change: its TTL restarts now, as a Redis key's does."""
        entry.touched = self._clock()
        self._entries.move_to_end(job_id)

    def _sweep(self) -> None:
        now = self._clock()
        while self._results and self._results[0][0] <= now:
            _, job_id = self._results.popleft()
            entry = self._entries.get(job_id)
            if entry is not None and entry.result is not None:
                self._result_bytes -= len(entry.result)
                entry.result = None
        while self._entries:
            job_id, oldest = next(iter(self._entries.items()))
            if oldest.touched > now - self.ttl_s:
                return
            self._forget(job_id)

    def _room_for(self, jobs: int, owner: str) -> bool:
        """Make room for `jobs` more of `owner`'s jobs, within the bounds; whether there is."""

        def over() -> bool:
            count = len(self._entries) + jobs > self.max_jobs
            return count or self._result_bytes > self.max_result_bytes

        while over():
            job_id = _first_evictable(self._entries, owner)
            if job_id is None:
                return False
            self._forget(job_id)
        return True

    def _forget(self, job_id: str) -> None:
        entry = self._entries.pop(job_id)
        self._result_bytes -= len(entry.result or b"")
        job = entry.job
        if job.idempotency_key is not None and self._idempotency.get(self._key(job)) == job_id:
            del self._idempotency[self._key(job)]
        self.queue.discard(job.model, job_id)
        if entry.cancel is not None:
            entry.cancel.set()  # a runner waiting on it stops: there is nothing left to run
        self._wake(job_id)

    def _wake(self, job_id: str) -> None:
        wakeup = self._wakeups.pop(job_id, None)
        if wakeup is not None:
            wakeup.set()


def _first_evictable(entries: Mapping[str, _Entry], owner: str) -> str | None:
    """The job to forget first: a finished one that keeps no result (any owner's), else a
    finished one of `owner`'s; the least recently written first. None: nothing may go."""
    finished = [(i, e) for i, e in entries.items() if e.job.status in TERMINAL_STATUSES]
    without_result = (i for i, e in finished if e.result is None)
    owned = (i for i, e in finished if e.job.owner == owner)
    return next(without_result, None) or next(owned, None)
