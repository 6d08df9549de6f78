"""One process's jobs and queues, in memory: the embedded default of `make run`.

A job is forgotten `ttl_s` after its last write; the store is bounded by count and result bytes.
When a bound is passed, the least recently written finished job goes first. Unfinished jobs are
never evicted (the queue depth bounds them), so the bounds are soft while all jobs run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter
from pydantic_core import to_jsonable_python

from gateway.store.batch_models import Batch
from gateway.store.job_models import (
    TERMINAL_STATUSES,
    EditInputs,
    IdempotencyConflict,
    Job,
    JobEvent,
    NewEvent,
)
from gateway.store.job_store import JobGone, QueueStats, Ticket

DEFAULT_TTL_S = 86400
DEFAULT_AVG_RUN_S = 10.0

FIELD_TYPES = {
    name: TypeAdapter(info.annotation)
    for name, info in Job.model_fields.items()
    if info.annotation is not None
}


def checked_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a partial update before anything is written."""
    unknown = sorted(set(fields) - set(FIELD_TYPES))
    if unknown:
        raise ValueError(f"unknown job field(s): {', '.join(unknown)}")
    if "id" in fields:
        raise ValueError("a job's id never changes")
    return {name: FIELD_TYPES[name].validate_python(value) for name, value in fields.items()}


def encode(value: Any) -> str:
    return json.dumps(to_jsonable_python(value), separators=(",", ":"))


def event_copy(event: NewEvent, event_id: int) -> JobEvent:
    """A JSON copy: what a reader gets back, never shared with the caller."""
    return JobEvent(id=event_id, event=event.event, data=json.loads(encode(event.data)))


def moving_average(previous: float, seconds: float) -> float:
    return 0.8 * previous + 0.2 * seconds


class MemoryJobQueue:
    """One FIFO line per model; at most `limit` of a model's jobs hold a slot at once."""

    shared = False

    def __init__(self) -> None:
        self._lines: defaultdict[str, OrderedDict[str, None]] = defaultdict(OrderedDict)
        self._running: defaultdict[str, set[str]] = defaultdict(set)
        self._avg: dict[str, float] = {}
        self._changed: asyncio.Event | None = None

    def push(self, job: Job) -> None:
        self._lines[job.model][job.id] = None
        self._notify()

    def discard(self, model: str, job_id: str) -> None:
        self._lines[model].pop(job_id, None)

    async def take(self, model: str, limit: int, timeout: float) -> Ticket | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            line = self._lines[model]
            if line and len(self._running[model]) < limit:
                job_id, _ = line.popitem(last=False)
                self._running[model].add(job_id)
                return Ticket(model=model, job_id=job_id)
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            if self._changed is None:
                self._changed = asyncio.Event()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def renew(self, ticket: Ticket) -> bool:
        return ticket.job_id in self._running[ticket.model]

    async def release(self, ticket: Ticket, run_s: float | None = None) -> None:
        self._running[ticket.model].discard(ticket.job_id)
        if run_s is not None:
            previous = self._avg.get(ticket.model, DEFAULT_AVG_RUN_S)
            self._avg[ticket.model] = moving_average(previous, run_s)
        self._notify()

    async def remove(self, model: str, job_id: str) -> None:
        self.discard(model, job_id)

    async def position(self, model: str, job_id: str) -> int | None:
        for place, waiting_id in enumerate(self._lines[model], start=1):
            if waiting_id == job_id:
                return place
        return None

    async def stats(self, model: str) -> QueueStats:
        waiting = len(self._lines[model])
        return QueueStats(
            waiting=waiting,
            waiting_here=waiting,
            running=len(self._running[model]),
            avg_run_s=self._avg.get(model, DEFAULT_AVG_RUN_S),
        )

    async def close(self) -> None:
        return None

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None


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
        max_jobs: int = 10_000,
        max_result_bytes: int = 512 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.queue = queue or MemoryJobQueue()
        self.ttl_s = ttl_s
        self.max_jobs = max_jobs
        self.max_result_bytes = max_result_bytes
        self._clock = clock
        # Least recently written first, so expiry and eviction read from the front.
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._idempotency: dict[tuple[str, str], str] = {}
        self._result_bytes = 0
        self._wakeups: dict[str, asyncio.Event] = {}

    def __len__(self) -> int:
        """Jobs kept now (the count bound is checked against it)."""
        self._sweep()
        return len(self._entries)

    async def create(
        self, job: Job, event: NewEvent, request: EditInputs | None
    ) -> tuple[Job, bool]:
        self._sweep()
        existing = self._entries.get(job.id)
        if existing is not None:
            return existing.job.model_copy(deep=True), False
        if job.idempotency_key is not None:
            key = (job.owner, job.idempotency_key)
            replayed = self._entries.get(self._idempotency.get(key, ""))
            if replayed is not None:
                if replayed.job.request_hash != job.request_hash:
                    raise IdempotencyConflict(job.idempotency_key)
                return replayed.job.model_copy(deep=True), False
            self._idempotency[key] = job.id
        entry = _Entry(job=job.model_copy(deep=True), request=request, touched=self._clock())
        entry.events.append(event_copy(event, 1))
        self._entries[job.id] = entry
        if request is not None:
            self.queue.push(job)
        self._evict_over_bounds()
        return job.model_copy(deep=True), True

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
        if entry is None or not _holds(entry.job, expect):
            return None
        self._touch(job_id, entry)
        entry.job = entry.job.model_copy(update=checked, deep=True)
        if event is not None:
            entry.events.append(event_copy(event, len(entry.events) + 1))
        if result is not None:
            self._result_bytes += len(result) - len(entry.result or b"")
            entry.result = bytes(result)
        if entry.job.status in TERMINAL_STATUSES:
            entry.request = None
        self._wake(job_id)
        job = entry.job.model_copy(deep=True)
        self._evict_over_bounds()
        return job

    async def events_after(self, job_id: str, last_id: int) -> list[JobEvent]:
        entry = self._entry(job_id)
        if entry is None:
            return []
        # Ids are 1..n in list order, so the events after `last_id` start at index `last_id`.
        return [e.model_copy(deep=True) for e in entry.events[max(last_id, 0) :]]

    async def wait_events(self, job_id: str, last_id: int, timeout: float) -> list[JobEvent]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            entry = self._entry(job_id)
            if entry is None:
                raise JobGone(job_id)
            events = await self.events_after(job_id, last_id)
            remaining = deadline - loop.time()
            if events or remaining <= 0:
                return events
            # Wake when an event comes, when the job expires, or at the timeout: never spin.
            expires_in = entry.touched + self.ttl_s - self._clock()
            wait = max(0.001, min(remaining, expires_in + 0.001))
            wakeup = self._wakeups.setdefault(job_id, asyncio.Event())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(wakeup.wait(), wait)

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

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None

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
        expired_before = self._clock() - self.ttl_s
        while self._entries:
            job_id, oldest = next(iter(self._entries.items()))
            if oldest.touched > expired_before:
                return
            self._forget(job_id)

    def _evict_over_bounds(self) -> None:
        while len(self._entries) > self.max_jobs or self._result_bytes > self.max_result_bytes:
            finished = next(
                (i for i, e in self._entries.items() if e.job.status in TERMINAL_STATUSES), None
            )
            if finished is None:
                return
            self._forget(finished)

    def _forget(self, job_id: str) -> None:
        entry = self._entries.pop(job_id)
        self._result_bytes -= len(entry.result or b"")
        job = entry.job
        if job.idempotency_key is not None:
            key = (job.owner, job.idempotency_key)
            if self._idempotency.get(key) == job_id:
                del self._idempotency[key]
        self.queue.discard(job.model, job_id)
        if entry.cancel is not None:
            entry.cancel.set()  # a runner waiting on it stops: there is nothing left to run
        self._wake(job_id)

    def _wake(self, job_id: str) -> None:
        wakeup = self._wakeups.pop(job_id, None)
        if wakeup is not None:
            wakeup.set()


class MemoryBatchStore:
    """Batch records of one process; each is forgotten at its own expiry, the oldest first when
    more than `max_batches` are kept."""

    def __init__(
        self, *, max_batches: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_batches = max_batches
        self._clock = clock
        self._batches: OrderedDict[str, tuple[Batch, float]] = OrderedDict()

    def __len__(self) -> int:
        self._sweep()
        return len(self._batches)

    async def create(self, batch: Batch, ttl_s: int) -> tuple[Batch, bool]:
        self._sweep()
        kept = self._batches.get(batch.id)
        if kept is not None:
            return kept[0].model_copy(deep=True), False
        self._batches[batch.id] = (batch.model_copy(deep=True), self._clock() + ttl_s)
        while len(self._batches) > self.max_batches:
            self._batches.popitem(last=False)
        return batch.model_copy(deep=True), True

    async def get(self, batch_id: str) -> Batch | None:
        self._sweep()
        kept = self._batches.get(batch_id)
        return kept[0].model_copy(deep=True) if kept else None

    def _sweep(self) -> None:
        now = self._clock()
        for batch_id in [b for b, (_, expires) in self._batches.items() if expires <= now]:
            del self._batches[batch_id]


def _holds(job: Job, expect: Mapping[str, Collection[Any]] | None) -> bool:
    """Whether every expected field holds one of its allowed values."""
    for name, allowed in (expect or {}).items():
        current = getattr(job, name)
        if not any(current == checked_fields({name: value})[name] for value in allowed):
            return False
    return True
