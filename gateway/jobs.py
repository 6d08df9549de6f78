"""The job store: jobs, their events, results and cancel flags, in memory or in Redis.

Every replica of the gateway sees the same jobs through Redis; the in-memory store is the embedded
default for a single process. Both keep a job `ttl_s` seconds after its last write.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol, cast

from pydantic import BaseModel, TypeAdapter
from pydantic_core import to_jsonable_python
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.errors import ServiceUnavailable

DEFAULT_TTL_S = 86400
# A down Redis must answer within a couple of seconds, never hang a request.
REDIS_TIMEOUT_S = 2.0
# Blocking reads stay well under the socket timeout, so a long wait is a loop of short ones.
REDIS_BLOCK_S = 1.0


class JobStatus(str, Enum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})


class Job(BaseModel):
    id: str
    owner: str
    model: str
    status: JobStatus = JobStatus.PENDING
    request_id: str
    replica: str
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    progress_step: int = 0
    progress_total: int = 0
    error_code: str | None = None
    error_message: str | None = None
    result_meta: dict[str, Any] | None = None
    result_mime: str | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None
    callback_url: str | None = None
    image_id: str | None = None


class JobEvent(BaseModel):
    """One server-sent event of a job; ids start at 1 per job and only grow."""

    id: int
    event: str
    data: dict[str, Any]


class IdempotencyConflict(Exception):
    """The owner used this Idempotency-Key before, for a different request."""


class StoreUnavailable(ServiceUnavailable):
    """The backing store (Redis) cannot be reached; retry later."""

    code = "store_unavailable"

    def __init__(self, message: str = "the job store is unreachable; retry shortly") -> None:
        super().__init__(message, headers={"Retry-After": "5"})


class JobStore(Protocol):
    async def create(self, job: Job) -> tuple[Job, bool]:
        """Store a new job, or return the job an idempotent replay (or a retry) names."""
        ...

    async def get(self, job_id: str) -> Job | None: ...

    async def update(self, job_id: str, **fields: Any) -> Job:
        """Change only the given fields; KeyError if the job is missing."""
        ...

    async def append_event(self, job_id: str, event: str, data: dict[str, Any]) -> JobEvent: ...

    async def events_after(self, job_id: str, last_id: int) -> list[JobEvent]: ...

    async def wait_events(self, job_id: str, last_id: int, timeout: float) -> list[JobEvent]:
        """Events after `last_id`, waiting up to `timeout` seconds for the first one."""
        ...

    async def set_result(self, job_id: str, data: bytes) -> None: ...

    async def get_result(self, job_id: str) -> bytes | None: ...

    async def request_cancel(self, job_id: str) -> None: ...

    async def cancel_requested(self, job_id: str) -> bool: ...

    async def mark_active(self, replica: str, job_id: str) -> None: ...

    async def mark_inactive(self, replica: str, job_id: str) -> None: ...

    async def fail_orphans(self, replica: str, code: str, message: str) -> list[str]:
        """Fail the unfinished jobs a previous life of `replica` left behind; their ids."""
        ...

    async def count_by_status(self) -> dict[JobStatus, int]: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


def new_job_id() -> str:
    """128 random bits as hex: unguessable, so a job id is no capability leak."""
    return secrets.token_hex(16)


def create_job_store(redis_url: str | None, ttl_s: int) -> JobStore:
    """Redis when a URL is set (any number of replicas), else the embedded in-memory store."""
    if redis_url:
        return RedisJobStore(redis_url, ttl_s=ttl_s)
    return MemoryJobStore(ttl_s=ttl_s)


_FIELD_TYPES = {
    name: TypeAdapter(info.annotation)
    for name, info in Job.model_fields.items()
    if info.annotation is not None
}


def _checked_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """Validate a partial update before anything is written."""
    unknown = sorted(set(fields) - set(_FIELD_TYPES))
    if unknown:
        raise ValueError(f"unknown job field(s): {', '.join(unknown)}")
    if "id" in fields:
        raise ValueError("a job's id never changes")
    return {name: _FIELD_TYPES[name].validate_python(value) for name, value in fields.items()}


def _encode(value: Any) -> str:
    return json.dumps(to_jsonable_python(value), separators=(",", ":"))


def _event_data(data: dict[str, Any]) -> dict[str, Any]:
    """A JSON copy: what a reader gets back, and never shared with the caller."""
    copied: dict[str, Any] = json.loads(_encode(data))
    return copied


def _orphan_failure(code: str, message: str) -> tuple[dict[str, Any], dict[str, Any]]:
    fields = {
        "status": JobStatus.FAILED,
        "finished_at": time.time(),
        "error_code": code,
        "error_message": message,
    }
    data = {"status": JobStatus.FAILED.value, "error": {"code": code, "message": message}}
    return fields, data


# ---------------------------------------------------------------------------------------------
# In memory


@dataclass
class _Entry:
    job: Job
    touched: float
    events: list[JobEvent] = field(default_factory=list)
    result: bytes | None = None
    cancel: bool = False


class MemoryJobStore:
    """One process's jobs. Forgets a job `ttl_s` after its last write; bounded by count and bytes.

    When a bound is passed, the least recently written finished job goes first. Unfinished jobs are
    never evicted (the admission queue bounds them), so the bounds are soft while all jobs run.
    """

    def __init__(
        self,
        ttl_s: int = DEFAULT_TTL_S,
        max_jobs: int = 10_000,
        max_result_bytes: int = 512 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_jobs = max_jobs
        self.max_result_bytes = max_result_bytes
        self._clock = clock
        # Least recently written first, so expiry and eviction read from the front.
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._idempotency: dict[tuple[str, str], str] = {}
        self._active: dict[str, set[str]] = {}
        self._result_bytes = 0
        self._wakeups: dict[str, asyncio.Event] = {}

    async def create(self, job: Job) -> tuple[Job, bool]:
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
        self._entries[job.id] = _Entry(job=job.model_copy(deep=True), touched=self._clock())
        self._evict_over_bounds()
        return job.model_copy(deep=True), True

    async def get(self, job_id: str) -> Job | None:
        entry = self._entry(job_id)
        return entry.job.model_copy(deep=True) if entry else None

    async def update(self, job_id: str, **fields: Any) -> Job:
        checked = _checked_fields(fields)
        entry = self._written(job_id)
        entry.job = entry.job.model_copy(update=checked, deep=True)
        return entry.job.model_copy(deep=True)

    async def append_event(self, job_id: str, event: str, data: dict[str, Any]) -> JobEvent:
        copied = _event_data(data)
        entry = self._written(job_id)
        appended = JobEvent(id=len(entry.events) + 1, event=event, data=copied)
        entry.events.append(appended)
        self._wake(job_id)
        return appended.model_copy(deep=True)

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
            events = await self.events_after(job_id, last_id)
            remaining = deadline - loop.time()
            if events or remaining <= 0 or job_id not in self._entries:
                return events
            wakeup = self._wakeups.setdefault(job_id, asyncio.Event())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(wakeup.wait(), remaining)

    async def set_result(self, job_id: str, data: bytes) -> None:
        entry = self._written(job_id)
        self._result_bytes += len(data) - len(entry.result or b"")
        entry.result = bytes(data)
        self._evict_over_bounds()

    async def get_result(self, job_id: str) -> bytes | None:
        entry = self._entry(job_id)
        return entry.result if entry else None

    async def request_cancel(self, job_id: str) -> None:
        entry = self._entry(job_id)
        if entry is not None:
            entry.cancel = True

    async def cancel_requested(self, job_id: str) -> bool:
        entry = self._entry(job_id)
        return entry is not None and entry.cancel

    async def mark_active(self, replica: str, job_id: str) -> None:
        self._active.setdefault(replica, set()).add(job_id)

    async def mark_inactive(self, replica: str, job_id: str) -> None:
        self._active.get(replica, set()).discard(job_id)

    async def fail_orphans(self, replica: str, code: str, message: str) -> list[str]:
        self._sweep()
        failed = []
        for job_id in sorted(self._active.pop(replica, set())):
            entry = self._entries.get(job_id)
            if entry is None or entry.job.status in TERMINAL_STATUSES:
                continue
            fields, data = _orphan_failure(code, message)
            await self.update(job_id, **fields)
            await self.append_event(job_id, JobStatus.FAILED.value, data)
            failed.append(job_id)
        return failed

    async def count_by_status(self) -> dict[JobStatus, int]:
        self._sweep()
        counts = dict.fromkeys(JobStatus, 0)
        for entry in self._entries.values():
            counts[entry.job.status] += 1
        return counts

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def _entry(self, job_id: str) -> _Entry | None:
        self._sweep()
        return self._entries.get(job_id)

    def _written(self, job_id: str) -> _Entry:
        """The entry about to change: its TTL restarts now, as a Redis key's does."""
        entry = self._entry(job_id)
        if entry is None:
            raise KeyError(job_id)
        entry.touched = self._clock()
        self._entries.move_to_end(job_id)
        return entry

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
        for jobs in self._active.values():
            jobs.discard(job_id)
        self._wake(job_id)

    def _wake(self, job_id: str) -> None:
        wakeup = self._wakeups.pop(job_id, None)
        if wakeup is not None:
            wakeup.set()


# ---------------------------------------------------------------------------------------------
# Redis
#
# Keys (prefix "qie:"), every one with the TTL, refreshed on each write to the job:
#   qie:job:<id>               hash: one JSON-encoded value per Job field
#   qie:job:<id>:events        stream; entry ids are "<n>-0", n = 1, 2, ... (the SSE event id)
#   qie:job:<id>:result        string: the edited image bytes
#   qie:job:<id>:cancel        string "1" once any replica asked to cancel
#   qie:idem:<owner>:<sha256>  string: the job id an Idempotency-Key named (key hashed: bounded)
#   qie:active:<replica>       set: ids of jobs pending or processing on that replica
#   qie:status:<status>        sorted set: job id -> when its keys expire (counts without a scan)

_NEXT_EVENT_ID = """
local function next_event_id(stream)
  local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
  if #last == 0 then return 1 end
  return tonumber(string.match(last[1][1], '^(%d+)')) + 1
end
"""

# KEYS: job, status index of the job's status, [idempotency record]
# ARGV: ttl, job id, field, value, ...
_CREATE = """
local ttl = tonumber(ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists', ARGV[2]} end
if KEYS[3] then
  local named = redis.call('GET', KEYS[3])
  if named then return {'replayed', named} end
  redis.call('SET', KEYS[3], ARGV[2], 'EX', ttl)
end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('EXPIRE', KEYS[1], ttl)
local now = redis.call('TIME')
redis.call('ZADD', KEYS[2], tonumber(now[1]) + ttl, ARGV[2])
redis.call('EXPIRE', KEYS[2], ttl)
return {'created', ARGV[2]}
"""

# Update fields and/or append an event, atomically.
# KEYS: job, events, result, cancel, then the status index of each JobStatus in order
# ARGV[1]: JSON {ttl, id, statuses (encoded, in KEYS order), terminal (encoded),
#                unless_terminal, event?, data?}
# ARGV[2..]: field, value, ...
_APPLY = (
    _NEXT_EVENT_ID
    + """
local opts = cjson.decode(ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
if opts.unless_terminal then
  local status = redis.call('HGET', KEYS[1], 'status')
  for _, terminal in ipairs(opts.terminal) do
    if status == terminal then return {'terminal'} end
  end
end
if #ARGV > 1 then redis.call('HSET', KEYS[1], unpack(ARGV, 2)) end
local event_id = 0
if opts.event then
  event_id = next_event_id(KEYS[2])
  redis.call('XADD', KEYS[2], event_id .. '-0', 'event', opts.event, 'data', opts.data)
end
local status = redis.call('HGET', KEYS[1], 'status')
local expires = tonumber(redis.call('TIME')[1]) + opts.ttl
for i, encoded in ipairs(opts.statuses) do
  if encoded == status then
    redis.call('ZADD', KEYS[4 + i], expires, opts.id)
    redis.call('EXPIRE', KEYS[4 + i], opts.ttl)
  else
    redis.call('ZREM', KEYS[4 + i], opts.id)
  end
end
for i = 1, 4 do redis.call('EXPIRE', KEYS[i], opts.ttl) end
return {'ok', event_id, redis.call('HGETALL', KEYS[1])}
"""
)

# KEYS: the status index of each JobStatus in order. Drops the entries of expired jobs first.
_COUNT = """
local now = tonumber(redis.call('TIME')[1])
local counts = {}
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. now)
  counts[i] = redis.call('ZCARD', key)
end
return counts
"""

# KEYS: an idempotency record; ARGV: the job id it must still name.
_DELETE_IF_NAMES = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_ENCODED_STATUSES = [_encode(s) for s in JobStatus]
_ENCODED_TERMINAL = [_encode(s) for s in JobStatus if s in TERMINAL_STATUSES]


@contextlib.contextmanager
def _reachable() -> Iterator[None]:
    """Redis connection trouble becomes StoreUnavailable (503); the message names no host."""
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError) as exc:
        raise StoreUnavailable(
            f"the job store (Redis) is unreachable ({type(exc).__name__}); retry shortly"
        ) from exc


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _decode_job(flat: Sequence[bytes | str]) -> Job:
    """A job from HGETALL's field, value, field, value ... (values are JSON)."""
    values = {_text(flat[i]): json.loads(flat[i + 1]) for i in range(0, len(flat), 2)}
    return Job.model_validate(values)


def _decode_events(entries: Sequence[Any]) -> list[JobEvent]:
    """Events from stream entries: (b"<n>-0", {b"event": ..., b"data": <JSON>})."""
    return [
        JobEvent(
            id=int(_text(entry_id).split("-")[0]),
            event=_text(fields[b"event"]),
            data=json.loads(fields[b"data"]),
        )
        for entry_id, fields in entries
    ]


class RedisJobStore:
    """Jobs shared by every gateway replica through one Redis."""

    def __init__(self, url: str, ttl_s: int = DEFAULT_TTL_S, prefix: str = "qie:") -> None:
        self.ttl_s = ttl_s
        self.prefix = prefix
        # No client-side retries: callers (the job service) decide how long to keep trying, and a
        # down Redis answers at once. The pool still reconnects stale connections after a restart.
        self._redis = Redis.from_url(
            url,
            socket_connect_timeout=REDIS_TIMEOUT_S,
            socket_timeout=REDIS_TIMEOUT_S,
            retry=Retry(NoBackoff(), 0),
            protocol=2,
            decode_responses=False,
        )
        self._create = self._redis.register_script(_CREATE)
        self._apply = self._redis.register_script(_APPLY)
        self._count = self._redis.register_script(_COUNT)
        self._delete_if_names = self._redis.register_script(_DELETE_IF_NAMES)

    async def create(self, job: Job) -> tuple[Job, bool]:
        keys = [self._job_key(job.id), self._status_key(job.status)]
        if job.idempotency_key is not None:
            keys.append(self._idempotency_key(job.owner, job.idempotency_key))
        values = [item for name in _FIELD_TYPES for item in (name, _encode(getattr(job, name)))]
        while True:
            with _reachable():
                outcome, found = await self._create(keys=keys, args=[self.ttl_s, job.id, *values])
            if outcome == b"created":
                return job.model_copy(deep=True), True
            existing = await self.get(_text(found))
            if existing is not None:
                if outcome == b"replayed" and existing.request_hash != job.request_hash:
                    raise IdempotencyConflict(job.idempotency_key)
                return existing, False
            if outcome == b"replayed":
                # The record outlived its job by a moment: drop it (unless replaced) and retry.
                with _reachable():
                    await self._delete_if_names(keys=keys[2:], args=[found])

    async def get(self, job_id: str) -> Job | None:
        with _reachable():
            values = await self._redis.hgetall(self._job_key(job_id))
        if not values:
            return None
        return _decode_job([item for pair in values.items() for item in pair])

    async def update(self, job_id: str, **fields: Any) -> Job:
        _, job, _ = await self._apply_change(job_id, _checked_fields(fields))
        if job is None:
            raise KeyError(job_id)
        return job

    async def append_event(self, job_id: str, event: str, data: dict[str, Any]) -> JobEvent:
        copied = _event_data(data)
        _, job, event_id = await self._apply_change(job_id, {}, event=(event, copied))
        if job is None:
            raise KeyError(job_id)
        return JobEvent(id=event_id, event=event, data=copied)

    async def events_after(self, job_id: str, last_id: int) -> list[JobEvent]:
        with _reachable():
            entries = await self._redis.xrange(self._events_key(job_id), min=max(last_id, 0) + 1)
        return _decode_events(entries or [])

    async def wait_events(self, job_id: str, last_id: int, timeout: float) -> list[JobEvent]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        stream = self._events_key(job_id)
        after = f"{max(last_id, 0)}-0"
        with _reachable():
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.exists(self._job_key(job_id))
                pipe.xrange(stream, min=max(last_id, 0) + 1)
                exists, entries = await pipe.execute()
            if entries or not exists:
                return _decode_events(entries)
            while (remaining := deadline - loop.time()) > 0:
                block_ms = max(1, int(min(remaining, REDIS_BLOCK_S) * 1000))
                reply = cast(list[Any], await self._redis.xread({stream: after}, block=block_ms))
                if reply:  # [[stream, entries]]
                    return _decode_events(reply[0][1])
        return []

    async def set_result(self, job_id: str, data: bytes) -> None:
        with _reachable():
            await self._redis.set(self._job_key(job_id) + ":result", data, ex=self.ttl_s)

    async def get_result(self, job_id: str) -> bytes | None:
        with _reachable():
            data = await self._redis.get(self._job_key(job_id) + ":result")
        return cast("bytes | None", data)

    async def request_cancel(self, job_id: str) -> None:
        with _reachable():
            await self._redis.set(self._job_key(job_id) + ":cancel", b"1", ex=self.ttl_s)

    async def cancel_requested(self, job_id: str) -> bool:
        with _reachable():
            return bool(await self._redis.exists(self._job_key(job_id) + ":cancel"))

    async def mark_active(self, replica: str, job_id: str) -> None:
        key = self._active_key(replica)
        with _reachable():
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.sadd(key, job_id)
                pipe.expire(key, self.ttl_s)
                await pipe.execute()

    async def mark_inactive(self, replica: str, job_id: str) -> None:
        with _reachable():
            await self._redis.srem(self._active_key(replica), job_id)

    async def fail_orphans(self, replica: str, code: str, message: str) -> list[str]:
        key = self._active_key(replica)
        with _reachable():
            members = await self._redis.smembers(key)
        failed = []
        for job_id in sorted(_text(m) for m in members):
            fields, data = _orphan_failure(code, message)
            outcome, _, _ = await self._apply_change(
                job_id,
                _checked_fields(fields),
                event=(JobStatus.FAILED.value, data),
                unless_terminal=True,
            )
            if outcome == b"ok":
                failed.append(job_id)
            # Only after the job is failed, so a crash here leaves it to the next start.
            with _reachable():
                await self._redis.srem(key, job_id)
        return failed

    async def count_by_status(self) -> dict[JobStatus, int]:
        with _reachable():
            counts = await self._count(keys=[self._status_key(s) for s in JobStatus])
        return {status: int(n) for status, n in zip(JobStatus, counts, strict=True)}

    async def ping(self) -> None:
        with _reachable():
            await self._redis.ping()

    async def close(self) -> None:
        await self._redis.aclose()

    async def _apply_change(
        self,
        job_id: str,
        fields: dict[str, Any],
        *,
        event: tuple[str, dict[str, Any]] | None = None,
        unless_terminal: bool = False,
    ) -> tuple[bytes, Job | None, int]:
        """Run the _APPLY script: (outcome, the job after the change, the new event's id or 0)."""
        options: dict[str, Any] = {
            "ttl": self.ttl_s,
            "id": job_id,
            "statuses": _ENCODED_STATUSES,
            "terminal": _ENCODED_TERMINAL,
            "unless_terminal": unless_terminal,
        }
        if event is not None:
            options["event"], options["data"] = event[0], _encode(event[1])
        values = [item for name, value in fields.items() for item in (name, _encode(value))]
        keys = [
            self._job_key(job_id),
            self._events_key(job_id),
            self._job_key(job_id) + ":result",
            self._job_key(job_id) + ":cancel",
            *(self._status_key(s) for s in JobStatus),
        ]
        with _reachable():
            reply = await self._apply(keys=keys, args=[json.dumps(options), *values])
        if reply[0] != b"ok":
            return reply[0], None, 0
        job = _decode_job(reply[2])
        if job.idempotency_key is not None:
            with _reachable():
                await self._redis.expire(
                    self._idempotency_key(job.owner, job.idempotency_key), self.ttl_s
                )
        return reply[0], job, int(reply[1])

    def _job_key(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def _events_key(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}:events"

    def _idempotency_key(self, owner: str, key: str) -> str:
        return f"{self.prefix}idem:{owner}:{hashlib.sha256(key.encode()).hexdigest()}"

    def _active_key(self, replica: str) -> str:
        return f"{self.prefix}active:{replica}"

    def _status_key(self, status: JobStatus) -> str:
        return f"{self.prefix}status:{status.value}"
