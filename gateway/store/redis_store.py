"""Jobs shared by every gateway replica through one Redis (keys: redis_connection.py).

Waiting is done by the replica's event hub (redis_events.py), not by a blocking read per waiter;
redis_event_reads.py reads the events for it.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from typing import Any, cast

from redis.asyncio import Redis

from gateway.store.batch_models import Batch
from gateway.store.job_fields import FIELD_TYPES, checked_fields, encode
from gateway.store.job_models import (
    TERMINAL_STATUSES,
    EditInputs,
    IdempotencyConflict,
    Job,
    JobEvent,
    NewEvent,
)
from gateway.store.job_store import NewJob, QueueFull, Room
from gateway.store.memory_store import DEFAULT_RESULT_TTL_S, DEFAULT_TTL_S
from gateway.store.redis_codec import (
    blob_digests,
    decode_job,
    decode_request,
    request_items,
)
from gateway.store.redis_connection import GROUP, RedisKeys, reachable, script, sibling, text
from gateway.store.redis_event_reads import RedisEventReads
from gateway.store.redis_events import RECHECK_S, RedisEventHub

NO_ROOM_CHECK = -1


class RedisJobStore:
    def __init__(
        self,
        redis: Redis,
        *,
        hub: RedisEventHub | None = None,
        ttl_s: int = DEFAULT_TTL_S,
        result_ttl_s: int = DEFAULT_RESULT_TTL_S,
        replica: str = "",
        keys: RedisKeys | None = None,
    ) -> None:
        self.redis = redis
        # The subscription holds a connection for good: the hub has a client of its own.
        self.hub = hub or RedisEventHub(sibling(redis, max_connections=2))
        self.ttl_s = ttl_s
        self.result_ttl_s = result_ttl_s
        self.replica = replica
        self.keys = keys or RedisKeys()
        self._create = script(redis, "create", prelude="queue_common")
        self._apply = script(redis, "apply")
        self._events = RedisEventReads(redis, self.hub, self.keys)

    async def create(
        self, job: Job, event: NewEvent, request: EditInputs | None, room: Room | None = None
    ) -> tuple[Job, bool]:
        return (await self.create_many([NewJob(job, event, request)], room))[0]

    async def create_many(
        self, entries: Sequence[NewJob], room: Room | None = None
    ) -> list[tuple[Job, bool]]:
        keys, args = self._create_call(entries, room)
        while True:
            with reachable():
                reply = await self._create(keys=keys, args=args)
            if reply[0] == b"full":
                raise QueueFull(*(int(n) for n in reply[1:4]))
            answers = [(text(reply[i]), text(reply[i + 1])) for i in range(1, len(reply), 2)]
            done = await self._answered(entries, answers)
            if done is not None:
                return done

    def _create_call(
        self, entries: Sequence[NewJob], room: Room | None
    ) -> tuple[list[str], list[Any]]:
        k, model = self.keys, entries[0].job.model
        requests = [request_items(e.request) if e.request else ([], {}) for e in entries]
        blobs: dict[str, bytes] = {}
        for _, files in requests:
            blobs.update(files)
        index = {digest: i for i, digest in enumerate(blobs, start=1)}
        keys = [k.queue(model), k.slots(model)]
        keys += [key for d in blobs for key in (k.blob(d), k.blob_refs(d))]
        args: list[Any] = [self.ttl_s, GROUP, self.replica, self.hub.channel]
        args += [room.max_depth, room.limit] if room else [NO_ROOM_CHECK, 0]
        args += [len(entries), len(blobs), *blobs.values()]
        for entry, (edit, files) in zip(entries, requests, strict=True):
            job = entry.job
            keys += [k.job(job.id), k.events(job.id), k.request(job.id)]
            if job.idempotency_key is not None:
                keys.append(k.idempotency(job.owner, job.idempotency_key))
            values = [item for name in FIELD_TYPES for item in (name, encode(getattr(job, name)))]
            args += [job.id, "record" if entry.request is None else "queue", entry.event.event]
            args += [encode(entry.event.data), int(job.idempotency_key is not None)]
            args += [len(values), *values, len(edit), *edit]
            args += [len(files), *(index[d] for d in files)]
        return keys, args

    async def _answered(
        self, entries: Sequence[NewJob], answers: list[tuple[str, str]]
    ) -> list[tuple[Job, bool]] | None:
        """Each entry's job; None when a stale Idempotency-Key record was dropped (create again:
        the jobs created already answer as existing)."""
        done: list[tuple[Job, bool]] = []
        for entry, (status, job_id) in zip(entries, answers, strict=True):
            if status == "created":
                done.append((entry.job.model_copy(deep=True), True))
                continue
            existing = await self.get(job_id)
            if existing is None:  # the record outlived its job by a moment
                record = self.keys.idempotency(entry.job.owner, entry.job.idempotency_key or "")
                await self._drop_record(record, job_id)
                return None
            if status == "replayed" and existing.request_hash != entry.job.request_hash:
                raise IdempotencyConflict(entry.job.idempotency_key)
            done.append((existing, False))
        return done

    async def _drop_record(self, record: str, job_id: str) -> None:
        """Delete an Idempotency-Key record if it still names this job."""
        with reachable():
            async with self.redis.pipeline(transaction=True) as pipe:
                await pipe.watch(record)
                if await pipe.get(record) == job_id.encode():
                    pipe.multi()
                    pipe.delete(record)
                    await pipe.execute()

    async def release_idempotency(self, job: Job) -> None:
        if job.idempotency_key is not None:
            await self._drop_record(self.keys.idempotency(job.owner, job.idempotency_key), job.id)

    async def get(self, job_id: str) -> Job | None:
        with reachable():
            values = await self.redis.hgetall(self.keys.job(job_id))
        if not values:
            return None
        return decode_job([item for pair in values.items() for item in pair])

    async def get_request(self, job_id: str) -> EditInputs | None:
        with reachable():
            values = cast(dict[bytes, bytes], await self.redis.hgetall(self.keys.request(job_id)))
            digests = blob_digests(values)
            found = await self.redis.mget([self.keys.blob(d) for d in digests]) if digests else []
        blobs = {d: cast("bytes | None", data) for d, data in zip(digests, found, strict=True)}
        if not values:
            return None
        return decode_request(values, blobs)

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
            "result_ttl": self.result_ttl_s,
            "job": job_id,
            "channel": self.hub.channel,
            "blob_prefix": self.keys.blob(""),
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
        return decode_job(reply[2])

    async def events_after(self, job_id: str, last_id: int) -> list[JobEvent]:
        return await self._events.after(job_id, last_id)

    async def wait_events(self, job_id: str, last_id: int, timeout: float) -> list[JobEvent]:
        found = await self._events.wait_many({job_id: last_id}, timeout)
        return found.get(job_id, [])

    async def wait_many(
        self, cursors: Mapping[str, int], timeout: float
    ) -> dict[str, list[JobEvent]]:
        return await self._events.wait_many(cursors, timeout)

    async def get_result(self, job_id: str) -> bytes | None:
        with reachable():
            data = await self.redis.get(self.keys.result(job_id))
        return cast("bytes | None", data)

    async def request_cancel(self, job_id: str) -> None:
        key = self.keys.control(job_id)
        notice = json.dumps({"job": job_id, "cancel": True})
        with reachable():
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.xadd(key, {"cancel": "1"})
                pipe.expire(key, self.ttl_s)
                pipe.publish(self.hub.channel, notice)
                await pipe.execute()

    async def cancel_requested(self, job_id: str) -> bool:
        with reachable():
            return bool(await self.redis.exists(self.keys.control(job_id)))

    async def wait_cancel(self, job_id: str) -> None:
        with self.hub.listening([job_id]) as listener:
            while True:
                with reachable():
                    async with self.redis.pipeline(transaction=False) as pipe:
                        pipe.exists(self.keys.control(job_id))
                        pipe.exists(self.keys.job(job_id))
                        asked, exists = await pipe.execute()
                if asked or not exists or job_id in listener.cancelled:
                    return
                await listener.wait(RECHECK_S)
                if job_id in listener.cancelled:
                    return

    async def fullness(self) -> float | None:
        with reachable():
            memory = await self.redis.info("memory")
        limit = int(memory.get("maxmemory") or 0)
        return int(memory.get("used_memory") or 0) / limit if limit else None

    async def ping(self) -> None:
        with reachable():
            await self.redis.ping()

    async def close(self) -> None:
        await self.hub.close()
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
