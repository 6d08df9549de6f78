"""One event hub per replica: a single Redis subscription brings every job's new events and
cancel requests, and hands each to the local waiters of that job (SSE followers, synchronous
callers, runners waiting for a cancel). A thousand followers cost one connection, not a thousand.

Every write that appends a job event also publishes it on one channel, in the same Lua script,
so nothing is published that was not written. A waiter registers before it reads the stream,
so an event written between its read and its wait still wakes it. Pub/sub delivers nothing that
was sent while the subscription was down: after a reconnect every waiter is woken to read the
stream again, and every waiter reads it again at least every RECHECK_S anyway (that also notices
a job that expired while followed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.store.job_models import JobEvent

log = logging.getLogger(__name__)

CHANNEL = "qie:events"
RECHECK_S = 5.0
OUTAGE_PAUSE_S = 1.0
POLL_S = 1.0


@dataclass(eq=False)
class Listener:
    """One waiter's view of the jobs it waits on: the events delivered to it, and its wake-up."""

    job_ids: frozenset[str]
    woken: asyncio.Event = field(default_factory=asyncio.Event)
    events: dict[str, list[JobEvent]] = field(default_factory=lambda: defaultdict(list))
    cancelled: set[str] = field(default_factory=set)

    async def wait(self, timeout: float) -> None:
        """Until something for these jobs arrives (or the hub reconnected), or `timeout`."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.woken.wait(), timeout)
        self.woken.clear()

    def take(self, job_id: str, after: int) -> list[JobEvent]:
        """The events delivered for the job that follow `after` without a gap, else none (the
        caller then reads the stream)."""
        delivered = sorted(self.events.pop(job_id, []), key=lambda e: e.id)
        fresh = [e for e in delivered if e.id > after]
        gapless = [e.id for e in fresh] == list(range(after + 1, after + 1 + len(fresh)))
        return fresh if gapless else []


class RedisEventHub:
    def __init__(self, redis: Redis, channel: str = CHANNEL) -> None:
        self._redis = redis  # its own client: the subscription holds a connection for good
        self.channel = channel
        self._listeners: defaultdict[str, set[Listener]] = defaultdict(set)
        self._reader: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def listening(self, job_ids: Sequence[str]) -> Iterator[Listener]:
        """Register before reading a job's stream; unregistered when the block ends."""
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read(), name="event-hub")
        listener = Listener(frozenset(job_ids))
        for job_id in listener.job_ids:
            self._listeners[job_id].add(listener)
        try:
            yield listener
        finally:
            for job_id in listener.job_ids:
                waiting = self._listeners.get(job_id)
                if waiting is not None:
                    waiting.discard(listener)
                    if not waiting:
                        del self._listeners[job_id]

    @property
    def listeners(self) -> int:
        return sum(len(waiting) for waiting in self._listeners.values())

    async def close(self) -> None:
        # A cancel that lands while redis-py connects can be swallowed there: ask until it ends.
        while self._reader is not None and not self._reader.done():
            self._reader.cancel()
            await asyncio.wait([self._reader], timeout=0.1)
        await self._redis.aclose()

    async def _read(self) -> None:
        while True:
            try:
                async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self.channel)
                    self._wake_all()  # whatever was published while nobody listened
                    while True:
                        message = await pubsub.get_message(timeout=POLL_S)
                        if message is not None:
                            self._deliver(message["data"])
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                log.warning("event hub: Redis unreachable (%s); resubscribing", type(exc).__name__)
                self._wake_all()
                await asyncio.sleep(OUTAGE_PAUSE_S)

    def _deliver(self, raw: bytes | str) -> None:
        try:
            message: dict[str, Any] = json.loads(raw)
            job_id = str(message["job"])
        except (ValueError, KeyError, TypeError):
            log.warning("event hub: a message it cannot read was ignored")
            return
        for listener in self._listeners.get(job_id, ()):
            if message.get("cancel"):
                listener.cancelled.add(job_id)
            else:
                event = JobEvent(
                    id=int(message["id"]), event=message["event"], data=json.loads(message["data"])
                )
                listener.events[job_id].append(event)
            listener.woken.set()

    def _wake_all(self) -> None:
        for waiting in self._listeners.values():
            for listener in waiting:
                listener.woken.set()
