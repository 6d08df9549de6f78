"""The queue per model, in memory and on a real Redis: order, the global slot limit, positions,
leases that outlive a dead runner, and a restarted replica taking back its own entries."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from gateway.store.job_models import EditInputs, Job, NewEvent, new_job_id
from gateway.store.job_store import JobQueue, JobStore, Ticket
from gateway.store.memory_queue import MemoryJobQueue
from gateway.store.memory_store import MemoryJobStore
from gateway.store.redis_connection import connect
from gateway.store.redis_queue import RedisJobQueue
from gateway.store.redis_store import RedisJobStore
from tests.gateway.test_job_store import async_test

MODEL = "classic_edit"
NO_HANG_S = 4.0
LEASE_S = 1.0


class Replicas:
    """Store and queue pairs that see the same jobs, as gateway replicas on one Redis do."""

    def __init__(self, redis_url: str | None) -> None:
        self.redis_url = redis_url
        self.opened: list[tuple[JobStore, JobQueue]] = []

    def open(self, name: str = "") -> tuple[JobStore, JobQueue]:
        if self.redis_url is None:
            if not self.opened:
                queue = MemoryJobQueue()
                self.opened.append((MemoryJobStore(queue), queue))
            return self.opened[0]
        name = name or f"replica-{len(self.opened)}"
        redis = connect(self.redis_url)
        pair = (
            RedisJobStore(redis, replica=name),
            RedisJobQueue(redis, name, lease_s=LEASE_S),
        )
        self.opened.append(pair)
        return pair

    async def close(self) -> None:
        for store, _ in self.opened:
            await store.close()


@pytest.fixture(params=["memory", "redis"])
def replicas(request: pytest.FixtureRequest) -> Replicas:
    if request.param == "redis":
        return Replicas(request.getfixturevalue("redis_url"))
    return Replicas(None)


def queue_test(test: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """An async test whose replicas are closed in its own event loop."""

    @functools.wraps(test)
    async def body(*args: Any, **kwargs: Any) -> None:
        try:
            await test(*args, **kwargs)
        finally:
            for value in kwargs.values():
                if isinstance(value, Replicas):
                    await value.close()

    return async_test(body)


async def submit(store: JobStore, model: str = MODEL) -> str:
    job = Job(
        id=new_job_id(),
        owner="owner",
        model=model,
        request_id="r",
        replica="x",
        created_at=time.time(),
    )
    request = EditInputs(model, [b"img"], "invert", None, "{}", "r")
    await store.create(job, NewEvent("queued"), request)
    return job.id


@queue_test
async def test_jobs_are_taken_in_arrival_order_from_any_replica(replicas: Replicas) -> None:
    (store_a, queue_a), (store_b, queue_b) = replicas.open(), replicas.open()
    ids = [await submit(store) for store in (store_a, store_b, store_a)]

    taken = [await queue_b.take(MODEL, 10, 1), await queue_a.take(MODEL, 10, 1)]
    taken.append(await queue_b.take(MODEL, 10, 1))

    assert [t.job_id for t in taken if t] == ids
    assert await queue_a.take(MODEL, 10, 0.2) is None  # nothing left
    assert await queue_a.take("qwen_image_edit", 10, 0) is None  # one queue per model


@queue_test
async def test_the_slot_limit_is_global_and_a_release_wakes_a_waiter(replicas: Replicas) -> None:
    (store_a, queue_a), (_, queue_b) = replicas.open(), replicas.open()
    first, second = await submit(store_a), await submit(store_a)

    running = await queue_a.take(MODEL, 1, 1)
    assert running is not None and running.job_id == first
    assert await queue_b.take(MODEL, 1, 0.3) is None  # the one slot is held, on any replica
    assert (await queue_b.stats(MODEL)).running == 1

    waiter = asyncio.create_task(queue_b.take(MODEL, 1, 30))
    await asyncio.sleep(0.2)
    assert not waiter.done()
    await queue_a.release(running, run_s=2.0)
    ticket = await asyncio.wait_for(waiter, NO_HANG_S)  # woken by the release, not its timeout

    assert ticket is not None and ticket.job_id == second


@queue_test
async def test_positions_and_stats_count_only_jobs_not_yet_taken(replicas: Replicas) -> None:
    (store_a, queue_a), (store_b, queue_b) = replicas.open(), replicas.open()
    ids = [await submit(store_a), await submit(store_b), await submit(store_a)]

    assert [await queue_b.position(MODEL, i) for i in ids] == [1, 2, 3]
    taken = await queue_a.take(MODEL, 5, 1)
    assert taken is not None
    await queue_b.remove(MODEL, ids[1])  # cancelled while it waited

    assert [await queue_a.position(MODEL, i) for i in ids] == [None, None, 1]
    stats = await queue_a.stats(MODEL)
    assert (stats.waiting, stats.running) == (1, 1)
    assert stats.waiting_here == 1  # the one left was accepted by replica a
    next_up = await queue_b.take(MODEL, 5, 1)
    assert next_up is not None and next_up.job_id == ids[2]  # the removed one is skipped


@queue_test
async def test_run_times_feed_the_moving_average(replicas: Replicas) -> None:
    store, queue = replicas.open()
    for run_s in (20.0, 20.0):
        await submit(store)
        ticket = await queue.take(MODEL, 1, 1)
        assert ticket is not None
        await queue.release(ticket, run_s=run_s)
    stats = await queue.stats(MODEL)
    assert stats.avg_run_s == pytest.approx(0.8 * (0.8 * 10 + 0.2 * 20) + 0.2 * 20)


@async_test
async def test_a_dead_runners_job_is_taken_by_another_replica_after_its_lease(
    redis_url: str,
) -> None:
    replicas = Replicas(redis_url)
    try:
        (store, dead), (_, survivor) = replicas.open("dead"), replicas.open("survivor")
        job_id = await submit(store)
        orphan = await dead.take(MODEL, 1, 1)
        assert orphan is not None  # ... and then its replica is SIGKILLed: no renew, no release

        assert await survivor.take(MODEL, 1, 0.2) is None  # the lease still holds the slot
        retaken = await asyncio.wait_for(survivor.take(MODEL, 1, 10), LEASE_S + NO_HANG_S)

        assert retaken is not None and retaken.job_id == job_id
        assert await dead.renew(orphan) is False  # the dead runner's claim is gone for good
        await dead.release(orphan)  # a late release changes nothing
        assert (await survivor.stats(MODEL)).running == 1
    finally:
        await replicas.close()


@async_test
async def test_a_renewed_lease_keeps_the_job_with_its_runner(redis_url: str) -> None:
    replicas = Replicas(redis_url)
    try:
        (store, runner), (_, other) = replicas.open("runner"), replicas.open("other")
        await submit(store)
        ticket = await runner.take(MODEL, 1, 1)
        assert ticket is not None
        for _ in range(4):  # twice the lease, renewed every quarter of it
            await asyncio.sleep(LEASE_S / 2)
            assert await runner.renew(ticket) is True
        assert await other.take(MODEL, 2, 0.2) is None  # nothing to steal, nothing new
    finally:
        await replicas.close()


@async_test
async def test_a_restarted_replica_takes_back_its_own_entries_at_once(redis_url: str) -> None:
    replicas = Replicas(redis_url)
    try:
        store, previous_life = replicas.open("replica-x")
        job_id = await submit(store)
        assert await previous_life.take(MODEL, 1, 1) is not None  # then the process dies

        _, next_life = replicas.open("replica-x")  # same replica id, a new process
        began = time.monotonic()
        ticket = await next_life.take(MODEL, 1, 10)

        assert isinstance(ticket, Ticket) and ticket.job_id == job_id
        assert time.monotonic() - began < LEASE_S  # no wait for the lease to run out
    finally:
        await replicas.close()


@async_test
async def test_replicas_gone_for_good_leave_the_consumer_group(redis_url: str) -> None:
    redis = connect(redis_url)
    try:
        store = RedisJobStore(redis)
        gone = RedisJobQueue(redis, "pod-1234")
        watcher = RedisJobQueue(redis, "pod-5678", forget_consumers_after_s=0.2)
        await submit(store)
        ticket = await gone.take(MODEL, 1, 1)
        assert ticket is not None
        await gone.release(ticket)  # it holds nothing now; then its pod is replaced
        await asyncio.sleep(0.4)

        await watcher.stats(MODEL)

        consumers = await redis.xinfo_consumers("qie:queue:classic_edit", "runners")
        assert [c["name"] for c in consumers] == []
    finally:
        await redis.aclose()
