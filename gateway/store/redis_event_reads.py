"""Reading jobs' events from Redis for the replica's followers and waiters.

A waiter registers with the event hub (redis_events.py), reads the jobs' streams through the
bounded pool, and then waits on the hub. Followers of one job wake together at each of its
events, so the same read is asked for many times at once: it is made once and shared.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from redis.asyncio import Redis

from gateway.store.job_models import JobEvent
from gateway.store.job_store import JobGone
from gateway.store.redis_codec import decode_events
from gateway.store.redis_connection import RedisKeys, reachable
from gateway.store.redis_events import RECHECK_S, RedisEventHub

EventsFound = dict[str, list[JobEvent]]
Cursors = tuple[tuple[str, int], ...]


class RedisEventReads:
    def __init__(self, redis: Redis, hub: RedisEventHub, keys: RedisKeys) -> None:
        self.redis = redis
        self.hub = hub
        self.keys = keys
        self._reads: dict[Cursors, asyncio.Future[EventsFound]] = {}

    async def after(self, job_id: str, last_id: int) -> list[JobEvent]:
        with reachable():
            entries = await self.redis.xrange(self.keys.events(job_id), min=max(last_id, 0) + 1)
        return decode_events(entries or [])

    async def wait_many(self, cursors: Mapping[str, int], timeout: float) -> EventsFound:
        """The events after each cursor of the jobs that have some, as soon as one has some,
        or nothing when the timeout passes; JobGone names a job that is gone."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        with self.hub.listening(list(cursors)) as listener:
            while True:
                found = await self._read_many(cursors)
                remaining = deadline - loop.time()
                if found or remaining <= 0 or not cursors:
                    return found
                await listener.wait(min(remaining, RECHECK_S))
                delivered = {j: listener.take(j, last) for j, last in cursors.items()}
                if any(delivered.values()):
                    return {j: events for j, events in delivered.items() if events}

    async def _read_many(self, cursors: Mapping[str, int]) -> EventsFound:
        """The events after each cursor, in one round trip.

        Callers asking for the same cursors while a read is on its way share it (a hundred
        viewers of one job cost one read per event, not a hundred); a caller that gives up does
        not cancel it for the others. Written by hand: none of our dependencies coalesces calls.
        """
        key = tuple(sorted(cursors.items()))
        shared = self._reads.get(key)
        if shared is None:
            shared = asyncio.ensure_future(self._read_now(dict(cursors)))
            self._reads[key] = shared
            shared.add_done_callback(lambda done: self._forget(key, done))
        return dict(await asyncio.shield(shared))

    def _forget(self, key: Cursors, done: asyncio.Future[Any]) -> None:
        self._reads.pop(key, None)
        if not done.cancelled():
            done.exception()  # retrieved: whoever still waits raises it, and none is logged

    async def _read_now(self, cursors: Mapping[str, int]) -> EventsFound:
        ids = list(cursors)
        with reachable():
            async with self.redis.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    pipe.exists(self.keys.job(job_id))
                    pipe.xrange(self.keys.events(job_id), min=max(cursors[job_id], 0) + 1)
                replies = await pipe.execute()
        found: EventsFound = {}
        for job_id, exists, entries in zip(ids, replies[::2], replies[1::2], strict=True):
            if entries:
                found[job_id] = decode_events(entries)
            elif not exists:
                raise JobGone(job_id)
        return found
