"""One global queue per model in Redis: a stream read by the consumer group "runners".

Each replica is a consumer. A replica takes an entry only while fewer than `limit` of the
model's jobs hold a slot (a lease in a sorted set), so positions, ETAs and the concurrency limit
are global. A runner renews its lease while its job runs; an entry whose runner died is claimed
by another replica once the lease is over (XAUTOCLAIM), and a restarted replica first takes back
the entries its previous life held. Waiters block on a wake list (BLPOP), never poll.

Taking, renewing and releasing a lease go through a client of their own (`leases`), whose
connections no request can take: a flood of followers or status requests never costs a lease.
"""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from gateway.store.job_store import DEFAULT_LEASE_S, QueueStats, Ticket
from gateway.store.memory_queue import DEFAULT_AVG_RUN_S
from gateway.store.redis_connection import (
    GROUP,
    REDIS_BLOCK_S,
    RedisKeys,
    reachable,
    script,
    text,
)

LEASE_SCRIPTS = frozenset({"take", "renew", "release"})


class RedisJobQueue:
    shared = True

    def __init__(
        self,
        redis: Redis,
        consumer: str,
        *,
        leases: Redis | None = None,
        lease_s: float = DEFAULT_LEASE_S,
        keys: RedisKeys | None = None,
        forget_consumers_after_s: float = 3600.0,
    ) -> None:
        self.redis = redis
        self.leases = leases or redis
        self.consumer = consumer
        self.lease_ms = int(lease_s * 1000)
        # A replica that holds nothing and was not seen this long is gone (a pod name, say).
        self.forget_ms = int(forget_consumers_after_s * 1000)
        self.keys = keys or RedisKeys()
        # Per model, how far this process has taken back the entries a previous life held
        # ("0": not yet; None: all of them).
        self._history: dict[str, str | None] = {}
        self._scripts = {
            name: script(
                self.leases if name in LEASE_SCRIPTS else redis, name, prelude="queue_common"
            )
            for name in ("take", "renew", "release", "position", "stats")
        }

    async def take(self, model: str, limit: int, timeout: float) -> Ticket | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        k = self.keys
        while True:
            cursor = self._history.setdefault(model, "0")
            with reachable():
                reply = await self._scripts["take"](
                    keys=[k.queue(model), k.slots(model), k.wake(model)],
                    args=[GROUP, self.consumer, limit, self.lease_ms, cursor or ""],
                )
            if reply[0] == b"taken":
                entry_id = text(reply[1])
                self._history[model] = entry_id if reply[3] == b"mine" else None
                return Ticket(model=model, job_id=text(reply[2]), entry_id=entry_id)
            self._history[model] = None
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            wait = min(remaining, REDIS_BLOCK_S)
            if reply[0] == b"busy":  # the earliest lease may expire before anyone releases it
                wait = min(wait, max(int(reply[1]), 1) / 1000)
            with reachable():
                await self.leases.blpop([k.wake(model)], timeout=max(wait, 0.01))

    async def renew(self, ticket: Ticket) -> bool:
        k = self.keys
        with reachable():
            renewed = await self._scripts["renew"](
                keys=[k.queue(ticket.model), k.slots(ticket.model)],
                args=[GROUP, self.consumer, ticket.entry_id, ticket.job_id, self.lease_ms],
            )
        return bool(renewed)

    async def release(self, ticket: Ticket, run_s: float | None = None) -> None:
        k, model = self.keys, ticket.model
        with reachable():
            await self._scripts["release"](
                keys=[k.queue(model), k.slots(model), k.wake(model), k.avg(model)],
                args=[
                    GROUP,
                    self.consumer,
                    ticket.entry_id,
                    ticket.job_id,
                    "" if run_s is None else f"{run_s:.6f}",
                    DEFAULT_AVG_RUN_S,
                ],
            )

    async def remove(self, model: str, job_id: str) -> None:
        with reachable():
            entry = await self.redis.hget(self.keys.job(job_id), "_entry")
            if entry is not None:
                await self.redis.xdel(self.keys.queue(model), entry)

    async def position(self, model: str, job_id: str) -> int | None:
        k = self.keys
        with reachable():
            place = await self._scripts["position"](
                keys=[k.job(job_id), k.queue(model)], args=[GROUP]
            )
        return int(place) or None

    async def stats(self, model: str) -> QueueStats:
        k = self.keys
        with reachable():
            waiting, here, running, avg = await self._scripts["stats"](
                keys=[k.queue(model), k.slots(model), k.avg(model)],
                args=[GROUP, self.consumer, DEFAULT_AVG_RUN_S, self.forget_ms],
            )
        return QueueStats(
            waiting=int(waiting), waiting_here=int(here), running=int(running), avg_run_s=float(avg)
        )

    async def close(self) -> None:
        if self.leases is not self.redis:
            await self.leases.aclose()
