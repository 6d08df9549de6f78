"""Jobs shared by every gateway replica through one Redis (keys: redis_connection.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Collection, Mapping, Sequence
from typing import Any, cast

from redis.asyncio import Redis

from gateway.store.batch_models import Batch
from gateway.store.job_models import (
    TERMINAL_STATUSES,
    EditInputs,
    IdempotencyConflict,
    Job,
    JobEvent,
    NewEvent,
)
from gateway.store.job_store import JobGone
from gateway.store.memory_store import DEFAULT_TTL_S, FIELD_TYPES, checked_fields, encode
from gateway.store.redis_connection import (
    GROUP,
    REDIS_BLOCK_S,
    RedisKeys,
    reachable,
    script,
    text,
)


def _decode_job(flat: Sequence[bytes | str]) -> Job:
    """A job from HGETALL's field, value, ... (values are JSON; `_` fields are the store's)."""
    values = {
        text(flat[i]): json.loads(flat[i + 1])
        for i in range(0, len(flat), 2)
        if not text(flat[i]).startswith("_")
    }
    return Job.model_validate(values)


def _decode_events(entries: Sequence[Any]) -> list[JobEvent]:
    """Events from stream entries: (b"<n>-0", {b"event": ..., b"data": <JSON>})."""
    return [
        JobEvent(
            id=int(text(entry_id).split("-")[0]),
            event=text(fields[b"event"]),
            data=json.loads(fields[b"data"]),
        )
        for entry_id, fields in entries
    ]


def _request_items(request: EditInputs) -> list[bytes | str]:
    items: list[bytes | str] = [
        "model", request.model,
        "prompt", request.prompt,
        "negative_prompt", request.negative_prompt or "",
        "options_json", request.options_json,
        "request_id", request.request_id,
    ]  # fmt: skip
    for index, image in enumerate(request.images):
        items += [f"image:{index}", image]
    return items


def _decode_request(values: dict[bytes, bytes]) -> EditInputs:
    images = sorted((k for k in values if k.startswith(b"image:")), key=lambda k: int(k[6:]))
    return EditInputs(
        model=text(values[b"model"]),
        images=[values[k] for k in images],
        prompt=text(values[b"prompt"]),
        negative_prompt=text(values[b"negative_prompt"]) or None,
        options_json=text(values[b"options_json"]),
        request_id=text(values[b"request_id"]),
    )


class RedisJobStore:
    def __init__(
        self,
        redis: Redis,
        *,
        ttl_s: int = DEFAULT_TTL_S,
        replica: str = "",
        keys: RedisKeys | None = None,
    ) -> None:
        self.redis = redis
        self.ttl_s = ttl_s
        self.replica = replica
        self.keys = keys or RedisKeys()
        self._create = script(redis, "create")
        self._apply = script(redis, "apply")

    async def create(
        self, job: Job, event: NewEvent, request: EditInputs | None
    ) -> tuple[Job, bool]:
        k = self.keys
        keys = [k.job(job.id), k.events(job.id), k.request(job.id), k.queue(job.model)]
        if job.idempotency_key is not None:
            keys.append(k.idempotency(job.owner, job.idempotency_key))
        values = [item for name in FIELD_TYPES for item in (name, encode(getattr(job, name)))]
        head: list[Any] = [self.ttl_s, job.id, GROUP, self.replica, event.event]
        head += [encode(event.data), "record" if request is None else "queue", len(values)]
        edit = [] if request is None else _request_items(request)
        while True:
            with reachable():
                outcome, found = await self._create(keys=keys, args=[*head, *values, *edit])
            if outcome == b"created":
                return job.model_copy(deep=True), True
            existing = await self.get(text(found))
            if existing is not None:
                if outcome == b"replayed" and existing.request_hash != job.request_hash:
                    raise IdempotencyConflict(job.idempotency_key)
                return existing, False
            if outcome == b"replayed":
                # The record outlived its job by a moment: drop it (unless replaced) and retry.
                with reachable():
                    await self._drop_stale_record(keys[4], found)

    async def _drop_stale_record(self, record: str, job_id: bytes) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            await pipe.watch(record)
            if await pipe.get(record) == job_id:
                pipe.multi()
                pipe.delete(record)
                await pipe.execute()

    async def get(self, job_id: str) -> Job | None:
        with reachable():
            values = await self.redis.hgetall(self.keys.job(job_id))
        if not values:
            return None
        return _decode_job([item for pair in values.items() for item in pair])

    async def get_request(self, job_id: str) -> EditInputs | None:
        with reachable():
            values = await self.redis.hgetall(self.keys.request(job_id))
        return _decode_request(cast(dict[bytes, bytes], values)) if values else None

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
        options: dict[str, Any] = {
            "ttl": self.ttl_s,
            "expect": {
                name: [encode(checked_fields({name: v})[name]) for v in values]
                for name, values in (expect or {}).items()
            },
            "finished": checked.get("status") in TERMINAL_STATUSES,
            "has_result": result is not None,
        }
        if event is not None:
            options["event"], options["data"] = event.event, encode(event.data)
        k = self.keys
        keys = [k.job(job_id), k.events(job_id), k.result(job_id), k.request(job_id)]
        keys.append(k.control(job_id))
        values = [item for name, value in checked.items() for item in (name, encode(value))]
        args: list[Any] = [json.dumps(options), result or b"", *values]
        with reachable():
            reply = await self._apply(keys=keys, args=args)
        if reply[0] != b"ok":
            return None
        return _decode_job(reply[2])

    async def events_after(self, job_id: str, last_id: int) -> list[JobEvent]:
        with reachable():
            entries = await self.redis.xrange(self.keys.events(job_id), min=max(last_id, 0) + 1)
        return _decode_events(entries or [])

    async def wait_events(self, job_id: str, last_id: int, timeout: float) -> list[JobEvent]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        stream = self.keys.events(job_id)
        while True:
            with reachable():
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.exists(self.keys.job(job_id))
                    pipe.xrange(stream, min=max(last_id, 0) + 1)
                    exists, entries = await pipe.execute()
            if entries:
                return _decode_events(entries)
            if not exists:
                raise JobGone(job_id)
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            # Blocks in Redis until an event comes (or the short block ends): no spinning.
            block_ms = max(1, int(min(remaining, REDIS_BLOCK_S) * 1000))
            with reachable():
                reply = await self.redis.xread({stream: f"{max(last_id, 0)}-0"}, block=block_ms)
            if reply:  # [[stream, entries]]
                return _decode_events(cast(list[Any], reply)[0][1])

    async def wait_many(
        self, cursors: Mapping[str, int], timeout: float
    ) -> dict[str, list[JobEvent]]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        ids = list(cursors)
        streams = {self.keys.events(j): j for j in ids}
        while ids:
            with reachable():
                async with self.redis.pipeline(transaction=False) as pipe:
                    for job_id in ids:
                        pipe.exists(self.keys.job(job_id))
                        pipe.xrange(self.keys.events(job_id), min=max(cursors[job_id], 0) + 1)
                    replies = await pipe.execute()
            found: dict[str, list[JobEvent]] = {}
            for job_id, exists, entries in zip(ids, replies[::2], replies[1::2], strict=True):
                if entries:
                    found[job_id] = _decode_events(entries)
                elif not exists:
                    raise JobGone(job_id)
            remaining = deadline - loop.time()
            if found or remaining <= 0:
                return found
            # One blocking read over every job's stream: it returns when any of them grows.
            block_ms = max(1, int(min(remaining, REDIS_BLOCK_S) * 1000))
            after = {self.keys.events(j): f"{max(cursors[j], 0)}-0" for j in ids}
            with reachable():
                reply = await self.redis.xread(after, block=block_ms)  # type: ignore[arg-type]
            if reply:  # [[stream, entries], ...]
                return {
                    streams[text(stream)]: _decode_events(entries)
                    for stream, entries in cast(list[Any], reply)
                }
        return {}

    async def get_result(self, job_id: str) -> bytes | None:
        with reachable():
            data = await self.redis.get(self.keys.result(job_id))
        return cast("bytes | None", data)

    async def request_cancel(self, job_id: str) -> None:
        key = self.keys.control(job_id)
        with reachable():
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.xadd(key, {"cancel": "1"})
                pipe.expire(key, self.ttl_s)
                await pipe.execute()

    async def cancel_requested(self, job_id: str) -> bool:
        with reachable():
            return bool(await self.redis.exists(self.keys.control(job_id)))

    async def wait_cancel(self, job_id: str) -> None:
        control, job = self.keys.control(job_id), self.keys.job(job_id)
        while True:
            with reachable():
                # Blocks in Redis until any replica adds the cancel request.
                reply = await self.redis.xread({control: "0-0"}, block=int(REDIS_BLOCK_S * 1000))
                if reply or not await self.redis.exists(job):
                    return

    async def ping(self) -> None:
        with reachable():
            await self.redis.ping()

    async def close(self) -> None:
        await self.redis.aclose()


class RedisBatchStore:
    """Batch records in Redis: one JSON string each, set once (SET NX) with its expiry."""

    def __init__(self, redis: Redis, *, keys: RedisKeys | None = None) -> None:
        self.redis = redis
        self.keys = keys or RedisKeys()

    async def create(self, batch: Batch, ttl_s: int) -> tuple[Batch, bool]:
        key = self.keys.batch(batch.id)
        while True:
            with reachable():
                if await self.redis.set(key, batch.model_dump_json(), nx=True, ex=ttl_s):
                    return batch.model_copy(deep=True), True
            kept = await self.get(batch.id)
            if kept is not None:  # else it expired in between: try again
                return kept, False

    async def get(self, batch_id: str) -> Batch | None:
        with reachable():
            data = await self.redis.get(self.keys.batch(batch_id))
        return None if data is None else Batch.model_validate_json(data)
