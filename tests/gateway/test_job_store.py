"""The job store, in memory and in a real Redis: jobs, events, results, cancel, orphans, outages,
and the batch records."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from pydantic import ValidationError
from redis.asyncio import Redis

from dev_stack.redis import RedisServer
from gateway.errors import StoreFull, StoreUnavailable
from gateway.store import StoreOptions, open_backend
from gateway.store.batch_models import Batch, BatchItem
from gateway.store.job_models import (
    EditInputs,
    IdempotencyConflict,
    Job,
    JobEvent,
    JobStatus,
    NewEvent,
    new_job_id,
)
from gateway.store.job_store import BatchStore, JobGone, JobQueue, JobStore, NewJob
from gateway.store.memory_batches import MemoryBatchStore
from gateway.store.memory_queue import MemoryJobQueue
from gateway.store.memory_store import MemoryJobStore
from gateway.store.redis_connection import connect
from gateway.store.redis_queue import RedisJobQueue
from gateway.store.redis_store import RedisBatchStore, RedisJobStore

TTL_S = 3600
# Far above the store's 2 s socket timeout, far below anything a person would call a hang.
NO_HANG_S = 4.0
QUEUED = NewEvent("queued", {"position": 0, "eta_s": None})
# Binary like an image: NUL bytes, every byte value, a PNG signature.
IMAGE_BYTES = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 64 + b"\x00\x00\xff\x00"


class Backend:
    """One kind of store; every store it opens sees the same jobs, as replicas on one Redis do."""

    def __init__(self, kind: str, url: str | None = None) -> None:
        self.kind = kind
        self.redis_url = url
        self.opened: list[JobStore] = []
        self.batches: MemoryBatchStore | None = None
        self.clients: list[Redis] = []

    def open(self) -> JobStore:
        """A store for one more gateway replica (in memory: the one process's store)."""
        if self.kind == "memory":
            if not self.opened:
                self.opened.append(MemoryJobStore(ttl_s=TTL_S))
            return self.opened[0]
        assert self.redis_url is not None
        store = RedisJobStore(connect(self.redis_url), ttl_s=TTL_S)
        self.opened.append(store)
        return store

    def open_batches(self) -> BatchStore:
        """The batch records one more replica sees (in memory: the one process's)."""
        if self.kind == "memory":
            if self.batches is None:
                self.batches = MemoryBatchStore()
            return self.batches
        assert self.redis_url is not None
        redis = connect(self.redis_url)
        self.clients.append(redis)
        return RedisBatchStore(redis)

    def queue_of(self, store: JobStore) -> JobQueue:
        """The queue a store's created jobs go to."""
        if isinstance(store, MemoryJobStore):
            return store.queue
        assert isinstance(store, RedisJobStore)
        return RedisJobQueue(store.redis, "replica-a", lease_s=5)

    async def close(self) -> None:
        for store in self.opened:
            await store.close()
        for client in self.clients:
            await client.aclose()


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "redis":
        return Backend("redis", request.getfixturevalue("redis_url"))
    return Backend("memory")


def async_test(test: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Run an async test in a fresh event loop; the stores it opened are closed in that loop."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        async def body() -> None:
            try:
                await test(*args, **kwargs)
            finally:
                for value in kwargs.values():
                    if isinstance(value, Backend):
                        await value.close()

        asyncio.run(body())

    return run


def edit_request(model: str = "classic_edit") -> EditInputs:
    return EditInputs(model, [IMAGE_BYTES, b"second"], "invert", None, '{"seed":1}', "req-1")


async def create(store: JobStore, job: Job, event: NewEvent = QUEUED) -> tuple[Job, bool]:
    return await store.create(job, event, edit_request(job.model))


async def count_jobs(backend: Backend) -> int:
    """Jobs kept: the memory store's own count, or the job hashes in Redis."""
    store = backend.open()
    if isinstance(store, MemoryJobStore):
        return len(store)
    assert isinstance(store, RedisJobStore)
    keys = [key async for key in store.redis.scan_iter("qie:job:*")]
    return sum(1 for key in keys if key.count(b":") == 2)


def make_job(owner: str = "owner-a", replica: str = "replica-a", **fields: Any) -> Job:
    return Job(
        id=new_job_id(),
        owner=owner,
        model="classic_edit",
        request_id=f"req-{new_job_id()[:8]}",
        replica=replica,
        created_at=time.time(),
        **fields,
    )


def make_batch(batch_id: str | None = None, files: tuple[str, ...] = ("cat", "dog")) -> Batch:
    return Batch(
        id=batch_id or new_job_id(),
        owner="owner-a",
        model="qwen_image_edit",
        kind="images",
        created_at=1700000000.5,
        items=[
            BatchItem(job_id=new_job_id(), name=f"{stem}.png", file=f"{stem}-edited.png", seed=7)
            for stem in files
        ],
        request_hash="hash-1",
    )


def test_job_ids_are_128_random_bits_in_hex() -> None:
    ids = [new_job_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-f]{32}", job_id) for job_id in ids)
    # Every digit position takes every value: no counter, timestamp or fixed prefix inside.
    assert all(len({job_id[pos] for job_id in ids}) == 16 for pos in range(32))


def test_open_backend_uses_redis_only_when_a_url_is_set() -> None:
    for url in (None, ""):
        store, queue, batches = open_backend(url, StoreOptions(ttl_s=60, replica="r", lease_s=5))
        assert isinstance(store, MemoryJobStore) and isinstance(queue, MemoryJobQueue)
        assert isinstance(batches, MemoryBatchStore)
        assert store.queue is queue  # a created job is queued in the same write
    store, queue, batches = open_backend(
        "redis://127.0.0.1:1/0", StoreOptions(ttl_s=60, replica="r", lease_s=5)
    )
    assert isinstance(store, RedisJobStore) and isinstance(queue, RedisJobQueue)
    assert isinstance(batches, RedisBatchStore) and batches.redis is store.redis
    assert store.ttl_s == 60 and queue.consumer == "r"
    asyncio.run(store.close())  # lazy: nothing connected


def test_store_unavailable_is_a_503_with_retry_after() -> None:
    error = StoreUnavailable("ConnectionError")
    assert (error.status, error.code) == (503, "store_unavailable")
    assert error.headers == {"Retry-After": "2"}
    assert "ConnectionError" in error.message


# --- Jobs -------------------------------------------------------------------------------------


@async_test
async def test_created_job_reads_back_field_for_field_on_another_replica(backend: Backend) -> None:
    store, peer = backend.open(), backend.open()
    job = make_job(
        idempotency_key="idem-1",
        request_hash="hash-1",
        callback_url="https://serverpod.example/hooks/edit",
        image_id="img-42",
        result_meta={"seed": 7, "size": [640, 480], "format": "png", "note": "ünïcode"},
        started_at=time.time(),
        deadline_at=time.time() + 300,
    )

    stored, created = await create(store, job)

    assert created is True
    assert stored == job
    assert await peer.get(job.id) == job  # floats, nested dicts and None survive exactly
    assert await peer.get(new_job_id()) is None
    assert await peer.get_request(job.id) == edit_request()  # the images byte for byte
    assert [(e.id, e.event, e.data) for e in await peer.events_after(job.id, 0)] == [
        (1, "queued", {"position": 0, "eta_s": None})
    ]


@async_test
async def test_creating_the_same_job_again_returns_it_and_resets_nothing(backend: Backend) -> None:
    store = backend.open()
    job, _ = await create(store, make_job())
    progressed = await store.apply(job.id, {"status": "processing", "progress_step": 3})

    again, created = await create(store, job)  # a retried create after a lost reply

    assert created is False
    assert again == progressed
    assert len(await store.events_after(job.id, 0)) == 1


@async_test
async def test_apply_changes_only_the_given_fields(backend: Backend) -> None:
    store, peer = backend.open(), backend.open()
    job, _ = await create(store, make_job(image_id="img-7"))

    updated = await store.apply(
        job.id, {"status": "processing", "started_at": 1700000000.25, "progress_total": 8}
    )

    assert updated == job.model_copy(
        update={"status": JobStatus.PROCESSING, "started_at": 1700000000.25, "progress_total": 8}
    )
    assert updated is not None and updated.status is JobStatus.PROCESSING
    assert await peer.get(job.id) == updated


@async_test
async def test_jobs_in_and_out_of_the_store_are_copies(backend: Backend) -> None:
    store = backend.open()
    job = make_job(result_meta={"seed": 1})
    original = job.model_copy(deep=True)
    await create(store, job)
    read = await store.get(job.id)
    assert read is not None

    job.progress_step = 5
    read.status = JobStatus.COMPLETED
    assert read.result_meta is not None
    read.result_meta["seed"] = 2

    assert await store.get(job.id) == original


@async_test
async def test_apply_to_a_missing_job_writes_nothing(backend: Backend) -> None:
    store = backend.open()
    missing = new_job_id()
    assert await store.apply(missing, {"progress_step": 1}, NewEvent("progress", {})) is None
    assert await store.get(missing) is None  # the write did not create a half job
    assert await store.events_after(missing, 0) == []


@async_test
async def test_apply_refuses_bad_fields_and_writes_nothing(backend: Backend) -> None:
    store = backend.open()
    job, _ = await create(store, make_job())

    with pytest.raises(ValueError, match="unknown job field"):
        await store.apply(job.id, {"progress_step": 2, "colour": "red"})
    with pytest.raises(ValidationError):
        await store.apply(job.id, {"progress_step": 2, "status": "exploded"})
    with pytest.raises(ValueError, match="id never changes"):
        await store.apply(job.id, {"id": new_job_id()})

    assert await store.get(job.id) == job


@async_test
async def test_apply_writes_nothing_when_an_expected_field_differs(backend: Backend) -> None:
    """Two replicas racing to change a job: exactly one of them wins."""
    store, peer = backend.open(), backend.open()
    job, _ = await create(store, make_job())
    pending = {"status": [JobStatus.PENDING]}

    outcomes = await asyncio.gather(
        store.apply(job.id, {"status": "cancelled"}, NewEvent("cancelled"), expect=pending),
        peer.apply(job.id, {"status": "processing"}, NewEvent("started"), expect=pending),
    )

    assert [o is not None for o in outcomes].count(True) == 1
    winner = next(o for o in outcomes if o is not None)
    assert await store.get(job.id) == winner
    events = [e.event for e in await store.events_after(job.id, 0)]
    assert events == ["queued", "cancelled" if winner.status is JobStatus.CANCELLED else "started"]


@async_test
async def test_finishing_is_one_write_of_state_event_and_result(backend: Backend) -> None:
    store, peer = backend.open(), backend.open()
    job, _ = await create(store, make_job())
    await store.apply(job.id, {"status": "processing"}, NewEvent("started"))

    done = await store.apply(
        job.id,
        {"status": "completed", "finished_at": 1700000001.5, "result_meta": {"seed": 3}},
        NewEvent("completed", {"status": "completed"}),
        result=IMAGE_BYTES,
        expect={"status": [JobStatus.PENDING, JobStatus.PROCESSING]},
    )

    assert done is not None and done.status is JobStatus.COMPLETED
    assert await peer.get_result(job.id) == IMAGE_BYTES
    assert (await peer.events_after(job.id, 2))[0].event == "completed"
    assert await peer.get_request(job.id) is None  # a finished job drops its edit
    again = await peer.apply(
        job.id,
        {"status": "failed"},
        NewEvent("failed"),
        expect={"status": [JobStatus.PENDING, JobStatus.PROCESSING]},
    )
    assert again is None  # finished once, and only once
    assert [e.event for e in await peer.events_after(job.id, 0)][-1] == "completed"


# --- Idempotency ------------------------------------------------------------------------------


@async_test
async def test_replayed_idempotency_key_returns_the_first_job(backend: Backend) -> None:
    store, peer = backend.open(), backend.open()
    first, created = await create(store, make_job(idempotency_key="k1", request_hash="h1"))
    assert created is True

    replay, created = await create(peer, make_job(idempotency_key="k1", request_hash="h1"))

    assert created is False
    assert replay == first
    assert await count_jobs(backend) == 1


@async_test
async def test_idempotency_key_with_another_request_conflicts(backend: Backend) -> None:
    store = backend.open()
    first, _ = await create(store, make_job(idempotency_key="k1", request_hash="h1"))
    other = make_job(idempotency_key="k1", request_hash="h2")

    with pytest.raises(IdempotencyConflict):
        await create(store, other)

    assert await store.get(other.id) is None
    assert await store.get(first.id) == first


@async_test
async def test_idempotency_keys_belong_to_their_owner(backend: Backend) -> None:
    store = backend.open()
    mine, _ = await create(store, make_job(owner="owner-a", idempotency_key="k1", request_hash="h"))

    theirs, created = await create(
        store, make_job(owner="owner-b", idempotency_key="k1", request_hash="h")
    )

    assert created is True
    assert theirs.id != mine.id
    assert theirs.owner == "owner-b"


@async_test
async def test_concurrent_replays_on_two_replicas_create_exactly_one_job(backend: Backend) -> None:
    replicas = [backend.open(), backend.open()]
    attempts = [make_job(idempotency_key="burst", request_hash="h") for _ in range(12)]

    results = await asyncio.gather(
        *(create(replicas[i % 2], job) for i, job in enumerate(attempts))
    )

    winners = [job for job, created in results if created]
    assert len(winners) == 1
    assert {job.id for job, _ in results} == {winners[0].id}
    assert await count_jobs(backend) == 1


# --- Events -----------------------------------------------------------------------------------


@async_test
async def test_events_are_numbered_from_one_and_read_after_an_id(backend: Backend) -> None:
    store, peer = backend.open(), backend.open()
    job, _ = await create(store, make_job())
    other, _ = await create(store, make_job())

    for replica, event in [
        (peer, NewEvent("started")),
        (store, NewEvent("progress", {"step": 1, "total": 4})),
        (peer, NewEvent("progress", {"step": 2, "total": 4})),
    ]:
        await replica.apply(job.id, {}, event)

    appended = await peer.events_after(job.id, 0)
    assert [e.id for e in appended] == [1, 2, 3, 4]
    assert [e.event for e in appended] == ["queued", "started", "progress", "progress"]
    assert await store.events_after(job.id, 2) == appended[2:]
    assert await store.events_after(job.id, 4) == []
    assert appended[0].data == {"position": 0, "eta_s": None}
    assert [e.id for e in await store.events_after(other.id, 0)] == [1]  # numbered per job


@async_test
async def test_wait_events_wakes_when_another_replica_appends(backend: Backend) -> None:
    store, peer = backend.open(), backend.open()
    job, _ = await create(store, make_job())

    waiter = asyncio.create_task(store.wait_events(job.id, 1, timeout=60))
    await asyncio.sleep(0.3)
    assert not waiter.done()  # nothing after event 1 yet: it waits

    await peer.apply(job.id, {}, NewEvent("progress", {"step": 1, "total": 4}))
    events = await asyncio.wait_for(waiter, NO_HANG_S)  # woken, not at its 60 s timeout

    assert [(e.id, e.event, e.data) for e in events] == [(2, "progress", {"step": 1, "total": 4})]


@async_test
async def test_wait_events_returns_what_is_there_at_once(backend: Backend) -> None:
    store = backend.open()
    job, _ = await create(store, make_job())
    await store.apply(job.id, {}, NewEvent("started"))

    events = await asyncio.wait_for(store.wait_events(job.id, 0, timeout=60), NO_HANG_S)
    assert [e.event for e in events] == ["queued", "started"]
    with pytest.raises(JobGone):  # an unknown job has nothing to wait for
        await asyncio.wait_for(store.wait_events(new_job_id(), 0, timeout=60), NO_HANG_S)


@async_test
async def test_wait_events_returns_nothing_when_the_timeout_passes(backend: Backend) -> None:
    store = backend.open()
    job, _ = await create(store, make_job())

    assert await store.wait_events(job.id, 1, timeout=0.3) == []
    assert await store.wait_events(job.id, 1, timeout=0) == []


async def ticks_while(work: Awaitable[Any], period: float = 0.01) -> tuple[int, float]:
    """How often a ticker task ran beside `work`, and how long `work` took."""
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(period)
            ticks += 1

    task = asyncio.create_task(ticker())
    began = time.monotonic()
    try:
        with contextlib.suppress(JobGone):
            await work
    finally:
        task.cancel()
    return ticks, time.monotonic() - began


@async_test
async def test_waiting_on_a_job_that_expires_ends_with_job_gone_and_never_spins(
    backend: Backend,
) -> None:
    store = backend.open()
    store.ttl_s = 1
    job, _ = await create(store, make_job())

    waiter = asyncio.create_task(store.wait_events(job.id, 1, timeout=30))
    ticks, elapsed = await ticks_while(asyncio.shield(waiter))

    with pytest.raises(JobGone):
        waiter.result()
    assert elapsed < 10  # ended at the expiry, long before the 30 s timeout
    # The event loop stayed free: a 10 ms ticker ran about as often as the time allows.
    assert ticks >= elapsed / 0.01 * 0.5, (ticks, elapsed)


# --- Several jobs at once (a batch) ----------------------------------------------------------


def as_tuples(found: dict[str, list[JobEvent]]) -> dict[str, list[tuple[int, str, Any]]]:
    return {job_id: [(e.id, e.event, e.data) for e in events] for job_id, events in found.items()}


@async_test
async def test_wait_many_returns_the_events_after_each_cursor_of_the_jobs_that_have_some(
    backend: Backend,
) -> None:
    store, peer = backend.open(), backend.open()
    running, quiet, fresh = [(await create(store, make_job()))[0] for _ in range(3)]
    await store.apply(running.id, {}, NewEvent("started", {"attempt": 1}))
    await store.apply(running.id, {}, NewEvent("progress", {"step": 1, "total": 4}))

    found = await asyncio.wait_for(
        peer.wait_many({running.id: 1, quiet.id: 1, fresh.id: 0}, timeout=60), NO_HANG_S
    )

    assert as_tuples(found) == {  # `quiet` has nothing after its cursor: it is left out
        running.id: [(2, "started", {"attempt": 1}), (3, "progress", {"step": 1, "total": 4})],
        fresh.id: [(1, "queued", {"position": 0, "eta_s": None})],
    }


@async_test
async def test_wait_many_wakes_when_another_replica_appends_to_any_of_the_jobs(
    backend: Backend,
) -> None:
    store, peer = backend.open(), backend.open()
    jobs = [(await create(store, make_job()))[0] for _ in range(3)]
    cursors = {job.id: 1 for job in jobs}

    for step, job in enumerate([jobs[1], jobs[2]], start=1):
        waiter = asyncio.create_task(store.wait_many(cursors, timeout=60))
        await asyncio.sleep(0.3)
        assert not waiter.done()  # nothing after any cursor yet: one wait for all three

        progress = NewEvent("progress", {"step": step, "total": 4})
        appender = asyncio.create_task(peer.apply(job.id, {}, progress))
        found = await asyncio.wait_for(waiter, NO_HANG_S)  # woken, not at its 60 s timeout
        await appender

        assert as_tuples(found) == {job.id: [(2, "progress", {"step": step, "total": 4})]}
        cursors[job.id] = 2


@async_test
async def test_wait_many_returns_nothing_when_the_timeout_passes(backend: Backend) -> None:
    store = backend.open()
    first, _ = await create(store, make_job())
    second, _ = await create(store, make_job())

    assert await store.wait_many({first.id: 1, second.id: 1}, timeout=0.3) == {}
    assert await store.wait_many({first.id: 1}, timeout=0) == {}
    assert await store.wait_many({}, timeout=0.3) == {}


@async_test
async def test_wait_many_raises_job_gone_naming_the_missing_job(backend: Backend) -> None:
    store = backend.open()
    waiting, _ = await create(store, make_job())
    with_events, _ = await create(store, make_job())
    missing = new_job_id()

    cursors = {waiting.id: 1, missing: 0, with_events.id: 0}
    with pytest.raises(JobGone) as gone:
        await asyncio.wait_for(store.wait_many(cursors, timeout=60), NO_HANG_S)

    assert gone.value.job_id == missing


@async_test
async def test_wait_many_raises_job_gone_when_a_job_expires_while_it_waits(
    backend: Backend,
) -> None:
    store = backend.open()
    store.ttl_s = 1
    expiring, _ = await create(store, make_job())

    with pytest.raises(JobGone) as gone:
        # Far above the 1 s TTL, far below the 60 s timeout: only the expiry ends it in time.
        await asyncio.wait_for(store.wait_many({expiring.id: 1}, timeout=60), 15)

    assert gone.value.job_id == expiring.id


@async_test
async def test_a_job_created_without_an_edit_keeps_its_final_event_and_is_never_queued(
    backend: Backend,
) -> None:
    store, peer = backend.open(), backend.open()
    queue = backend.queue_of(store)
    error = {"code": "unsupported_format", "message": "the file is not an image"}
    refused = make_job(
        status="failed",
        finished_at=1700000000.5,
        error_code=error["code"],
        error_message=error["message"],
    )

    stored, created = await store.create(
        refused, NewEvent("failed", {"status": "failed", "error": error}), None
    )

    assert (stored, created) == (refused, True)
    assert await peer.get(refused.id) == refused
    assert await peer.get_request(refused.id) is None
    events = await peer.events_after(refused.id, 0)
    assert [(e.id, e.event, e.data, e.final) for e in events] == [
        (1, "failed", {"status": "failed", "error": error}, True)
    ]
    assert (await queue.stats("classic_edit")).waiting == 0
    queued, _ = await create(store, make_job())
    assert (await queue.stats("classic_edit")).waiting == 1  # a queued job is counted
    ticket = await queue.take("classic_edit", 5, 0)
    assert ticket is not None and ticket.job_id == queued.id
    assert await queue.take("classic_edit", 5, 0) is None  # the refused job is not there
    await queue.release(ticket)


# --- Batch records ----------------------------------------------------------------------------


@async_test
async def test_a_batch_is_written_once_and_a_second_create_returns_the_kept_one(
    backend: Backend,
) -> None:
    batches, peer = backend.open_batches(), backend.open_batches()
    first = make_batch()
    rival = make_batch(first.id, files=("other",))

    assert await batches.create(first, TTL_S) == (first, True)
    kept, created = await peer.create(rival, TTL_S)

    assert (kept, created) == (first, False)
    assert await peer.get(first.id) == first
    assert await batches.get(new_job_id()) is None


@async_test
async def test_batches_in_and_out_of_the_batch_store_are_copies(backend: Backend) -> None:
    batches = backend.open_batches()
    batch = make_batch()
    original = batch.model_copy(deep=True)
    stored, _ = await batches.create(batch, TTL_S)
    read = await batches.get(batch.id)
    assert read is not None

    batch.items[0].file = "changed.png"
    stored.items.pop()
    read.items[1].seed = 99

    assert await batches.get(batch.id) == original


@async_test
async def test_concurrent_creates_of_one_batch_on_two_replicas_keep_exactly_one(
    backend: Backend,
) -> None:
    replicas = [backend.open_batches(), backend.open_batches()]
    batch_id = new_job_id()
    attempts = [make_batch(batch_id) for _ in range(8)]  # each names other jobs

    results = await asyncio.gather(
        *(replicas[i % 2].create(batch, TTL_S) for i, batch in enumerate(attempts))
    )

    winners = [batch for batch, created in results if created]
    assert len(winners) == 1
    assert [batch for batch, _ in results] == [winners[0]] * len(attempts)
    assert await replicas[1].get(batch_id) == winners[0]


# --- Results and cancel -----------------------------------------------------------------------


@async_test
async def test_results_come_back_byte_for_byte_on_another_replica(backend: Backend) -> None:
    store, peer = backend.open(), backend.open()
    job, _ = await create(store, make_job())
    other, _ = await create(store, make_job())

    await store.apply(job.id, {"status": "completed"}, NewEvent("completed"), result=IMAGE_BYTES)

    assert await peer.get_result(job.id) == IMAGE_BYTES
    assert await peer.get_result(other.id) is None


@async_test
async def test_a_cancel_request_wakes_the_runner_on_another_replica(backend: Backend) -> None:
    store, peer = backend.open(), backend.open()
    job, _ = await create(store, make_job())
    other, _ = await create(store, make_job())
    assert await peer.cancel_requested(job.id) is False

    runner = asyncio.create_task(peer.wait_cancel(job.id))
    await asyncio.sleep(0.3)
    assert not runner.done()  # a blocking read: nothing to read yet
    await store.request_cancel(job.id)
    await store.request_cancel(job.id)  # a second cancel changes nothing

    await asyncio.wait_for(runner, NO_HANG_S)
    assert await peer.cancel_requested(job.id) is True
    assert await peer.cancel_requested(other.id) is False


# --- Memory: bounded and forgetful ------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@async_test
async def test_memory_store_forgets_a_job_ttl_after_its_last_write() -> None:
    clock = Clock()
    store = MemoryJobStore(ttl_s=60, clock=clock)
    job, _ = await create(store, make_job(idempotency_key="k", request_hash="h"))
    await store.apply(job.id, {}, NewEvent("started"), result=IMAGE_BYTES)

    clock.now += 59
    await store.apply(job.id, {}, NewEvent("progress", {"step": 1}))  # the TTL starts again
    clock.now += 59
    assert await store.get(job.id) is not None

    clock.now += 2
    assert await store.get(job.id) is None
    assert await store.get_result(job.id) is None
    assert await store.events_after(job.id, 0) == []
    assert len(store) == 0
    assert await store.queue.take("classic_edit", 1, 0) is None  # and it left the queue
    # Its Idempotency-Key is forgotten with it: the same key starts a new job.
    _, created = await create(store, make_job(idempotency_key="k", request_hash="other"))
    assert created is True


@async_test
async def test_memory_store_keeps_a_result_for_its_own_ttl_and_the_job_for_longer() -> None:
    clock = Clock()
    store = MemoryJobStore(ttl_s=600, result_ttl_s=60, clock=clock)
    job, _ = await create(store, make_job())
    await store.apply(job.id, {"status": "completed"}, NewEvent("completed"), result=IMAGE_BYTES)

    clock.now += 59
    assert await store.get_result(job.id) == IMAGE_BYTES
    clock.now += 2
    assert await store.get_result(job.id) is None  # 410 result_expired from here on
    assert (await store.get(job.id)) is not None  # its status is still there
    assert store.result_bytes == 0


@async_test
async def test_memory_store_makes_room_from_jobs_without_a_result_then_the_writers_own() -> None:
    store = MemoryJobStore(max_jobs=3)
    kept, _ = await create(store, make_job(owner="a", status="completed"))
    await store.apply(kept.id, {}, result=IMAGE_BYTES)
    failed, _ = await create(store, make_job(owner="b", status="failed"))  # no result
    own, _ = await create(store, make_job(owner="c", status="completed"))
    await store.apply(own.id, {}, result=IMAGE_BYTES)

    await create(store, make_job(owner="c"))  # the job with no result goes first, any owner's
    assert await store.get(failed.id) is None
    await create(store, make_job(owner="c"))  # then the writer's own finished job
    assert await store.get(own.id) is None
    assert await store.get_result(kept.id) == IMAGE_BYTES


@async_test
async def test_memory_store_refuses_new_work_rather_than_evict_another_owners_result() -> None:
    store = MemoryJobStore(max_jobs=2)
    kept, _ = await create(store, make_job(owner="a", status="completed"))
    await store.apply(kept.id, {}, result=IMAGE_BYTES)
    running, _ = await create(store, make_job(owner="b", status="processing"))

    with pytest.raises(StoreFull) as full:
        await create(store, make_job(owner="b"))

    assert (full.value.status, full.value.code) == (503, "store_full")
    assert full.value.headers["Retry-After"] == "30"
    assert await store.get_result(kept.id) == IMAGE_BYTES
    assert len(store) == 2  # nothing of the refused job was kept
    # A running job's result is stored even over the bound: it was accepted.
    await store.apply(running.id, {"status": "completed"}, result=IMAGE_BYTES)
    assert await store.get_result(running.id) == IMAGE_BYTES


@async_test
async def test_memory_store_bounds_result_bytes_by_the_writers_own_finished_jobs() -> None:
    store = MemoryJobStore(max_result_bytes=len(IMAGE_BYTES) + 10)
    finished, _ = await create(store, make_job(owner="a", status="completed"))
    await store.apply(finished.id, {}, result=IMAGE_BYTES)
    running, _ = await create(store, make_job(owner="a", status="processing"))

    await store.apply(running.id, {"status": "completed"}, result=IMAGE_BYTES)

    assert await store.get(finished.id) is None
    assert await store.get_result(running.id) == IMAGE_BYTES


@async_test
async def test_memory_batch_store_forgets_each_batch_at_its_own_expiry() -> None:
    clock = Clock()
    batches = MemoryBatchStore(clock=clock)
    short, long = make_batch(), make_batch()
    await batches.create(short, 60)
    await batches.create(long, 120)

    clock.now += 59
    assert await batches.get(short.id) == short
    clock.now += 1
    assert await batches.get(short.id) is None
    assert await batches.get(long.id) == long
    assert len(batches) == 1

    again = make_batch(short.id, files=("new",))
    assert await batches.create(again, 60) == (again, True)  # its id is free again
    clock.now += 60
    assert len(batches) == 0


@async_test
async def test_memory_batch_store_evicts_the_oldest_batch_first() -> None:
    batches = MemoryBatchStore(max_batches=2)
    oldest, middle, newest = make_batch(), make_batch(), make_batch()
    await batches.create(oldest, TTL_S)
    await batches.create(middle, TTL_S)
    assert await batches.create(make_batch(oldest.id), TTL_S) == (oldest, False)  # not renewed

    assert await batches.create(newest, TTL_S) == (newest, True)

    assert await batches.get(oldest.id) is None
    assert await batches.get(middle.id) == middle
    assert await batches.get(newest.id) == newest
    assert len(batches) == 2


# --- Redis: TTLs, outages, restarts -----------------------------------------------------------


@async_test
async def test_every_redis_key_of_a_job_carries_the_ttl_and_writes_refresh_it(
    redis_url: str,
) -> None:
    """All but the result, which keeps its own, shorter TTL from when it was written."""
    store = RedisJobStore(connect(redis_url), ttl_s=TTL_S, result_ttl_s=TTL_S // 2)
    client = Redis.from_url(redis_url)
    try:
        job, _ = await create(store, make_job(idempotency_key="k1", request_hash="h"))
        await store.apply(job.id, {"status": "processing"}, NewEvent("started"), result=IMAGE_BYTES)
        await store.request_cancel(job.id)

        keys = sorted([key.decode() async for key in client.scan_iter("*")])
        idem = hashlib.sha256(b"k1").hexdigest()
        blobs = [hashlib.sha256(data).hexdigest() for data in (IMAGE_BYTES, b"second")]
        blob_keys = [f"qie:blob:{d}{end}" for d in blobs for end in ("", ":refs")]
        job_keys = [
            f"qie:job:{job.id}",
            f"qie:job:{job.id}:events",
            f"qie:job:{job.id}:request",
            f"qie:job:{job.id}:result",
            f"qie:job:{job.id}:control",
            f"qie:idem:owner-a:{idem}",
        ]
        assert keys == sorted([*job_keys, *blob_keys, "qie:queue:classic_edit"])  # no index
        blob_ttls = [await client.ttl(key) for key in blob_keys]
        assert all(TTL_S - 60 < ttl <= TTL_S for ttl in blob_ttls), blob_ttls
        result = job_keys.pop(3)
        ttls = {key: await client.ttl(key) for key in job_keys}
        assert all(TTL_S - 60 < ttl <= TTL_S for ttl in ttls.values()), ttls
        assert TTL_S // 2 - 60 < await client.ttl(result) <= TTL_S // 2

        for key in [*job_keys, result]:
            await client.expire(key, 5)
        await store.apply(job.id, {"progress_step": 1}, NewEvent("progress", {"step": 1}))

        refreshed = {key: await client.ttl(key) for key in job_keys}
        assert all(ttl > TTL_S - 60 for ttl in refreshed.values()), refreshed
        assert await client.ttl(result) <= 5  # a result is never kept longer by later writes
    finally:
        await client.aclose()
        await store.close()


@async_test
async def test_redis_stores_an_upload_once_for_every_job_that_edits_it(redis_url: str) -> None:
    """A batch's variations are one upload edited N times: one copy of its bytes, counted, and
    gone when the last of those jobs ends."""
    store = RedisJobStore(connect(redis_url), ttl_s=TTL_S)
    client = Redis.from_url(redis_url)
    request = EditInputs("classic_edit", [IMAGE_BYTES], "invert", None, "{}", "r")
    try:
        created = await store.create_many([NewJob(make_job(), QUEUED, request) for _ in range(3)])
        blobs = [key async for key in client.scan_iter("qie:blob:*")]
        digest = hashlib.sha256(IMAGE_BYTES).hexdigest()
        assert sorted(blobs) == [f"qie:blob:{digest}".encode(), f"qie:blob:{digest}:refs".encode()]
        assert int(await client.get(f"qie:blob:{digest}:refs")) == 3
        for job, _ in created:
            assert (await store.get_request(job.id)) == request
        for job, _ in created:
            await store.apply(job.id, {"status": "cancelled"}, NewEvent("cancelled"))
        assert [key async for key in client.scan_iter("qie:blob:*")] == []
    finally:
        await client.aclose()
        await store.close()


@async_test
async def test_redis_followers_at_one_cursor_share_one_read_and_each_gets_the_events(
    redis_url: str,
) -> None:
    """A hundred viewers of one job wake together at each event: one read serves them all, and
    one that gives up does not take it from the others."""
    store = RedisJobStore(connect(redis_url), ttl_s=TTL_S)
    job, _ = await store.create(make_job(), QUEUED, None)
    pipelines = []
    real_pipeline = store.redis.pipeline

    def counted(*args: Any, **kwargs: Any) -> Any:
        pipelines.append(args)
        return real_pipeline(*args, **kwargs)

    store.redis.pipeline = counted  # type: ignore[method-assign]
    try:
        readers = [asyncio.create_task(store.wait_events(job.id, 0, 5)) for _ in range(100)]
        readers[0].cancel()
        done = await asyncio.gather(*readers[1:])
        assert all([e.id for e in events] == [1] for events in done)
        assert len(pipelines) == 1
    finally:
        await store.close()


@async_test
async def test_redis_forgets_an_idle_job(redis_url: str) -> None:
    short_lived = RedisJobStore(connect(redis_url), ttl_s=1)
    long_lived = RedisJobStore(connect(redis_url), ttl_s=TTL_S)
    try:
        idle, _ = await create(short_lived, make_job())
        busy, _ = await create(long_lived, make_job())

        await asyncio.sleep(1.5)

        assert await long_lived.get(idle.id) is None
        assert await long_lived.events_after(idle.id, 0) == []
        assert await long_lived.get_request(idle.id) is None
        assert await long_lived.get(busy.id) is not None
    finally:
        await short_lived.close()
        await long_lived.close()


@async_test
async def test_a_redis_batch_is_one_key_set_once_with_its_ttl(redis_url: str) -> None:
    batches = RedisBatchStore(connect(redis_url))
    client = Redis.from_url(redis_url)
    try:
        batch = make_batch()
        await batches.create(batch, 600)

        key = f"qie:batch:{batch.id}"
        assert [k.decode() async for k in client.scan_iter("*")] == [key]
        assert 540 < await client.ttl(key) <= 600
        assert Batch.model_validate_json(await client.get(key) or b"") == batch

        await client.expire(key, 100)
        _, created = await batches.create(make_batch(batch.id), 600)
        assert created is False
        assert 0 < await client.ttl(key) <= 100  # SET NX: neither rewritten nor renewed
        assert Batch.model_validate_json(await client.get(key) or b"") == batch
    finally:
        await client.aclose()
        await batches.redis.aclose()


@async_test
async def test_redis_forgets_a_batch_at_its_ttl_and_frees_its_id(redis_url: str) -> None:
    batches = RedisBatchStore(connect(redis_url))
    try:
        batch = make_batch()
        await batches.create(batch, 1)

        await asyncio.sleep(1.5)

        assert await batches.get(batch.id) is None
        again = make_batch(batch.id, files=("new",))
        assert await batches.create(again, TTL_S) == (again, True)
        assert await batches.get(batch.id) == again
    finally:
        await batches.redis.aclose()


def every_operation(store: JobStore, job_id: str) -> dict[str, Callable[[], Awaitable[Any]]]:
    return {
        "create": lambda: create(store, make_job()),
        "get": lambda: store.get(job_id),
        "get_request": lambda: store.get_request(job_id),
        "apply": lambda: store.apply(job_id, {"progress_step": 2}, NewEvent("progress")),
        "events_after": lambda: store.events_after(job_id, 0),
        "wait_events": lambda: store.wait_events(job_id, 99, timeout=30),
        "get_result": lambda: store.get_result(job_id),
        "request_cancel": lambda: store.request_cancel(job_id),
        "cancel_requested": lambda: store.cancel_requested(job_id),
        "wait_cancel": lambda: store.wait_cancel(job_id),
        "ping": store.ping,
    }


async def outcomes_of(operations: dict[str, Callable[[], Awaitable[Any]]]) -> dict[str, str]:
    """What each operation did, all at once: 'StoreUnavailable', 'answered', 'hung' or an error."""

    async def outcome(call: Callable[[], Awaitable[Any]]) -> str:
        try:
            await asyncio.wait_for(call(), NO_HANG_S)
        except StoreUnavailable as exc:
            # The API shows this message, so it names no host.
            return (
                "StoreUnavailable naming the host"
                if "127.0.0.1" in str(exc)
                else "StoreUnavailable"
            )
        except asyncio.TimeoutError:
            return "hung"
        except Exception as exc:
            return type(exc).__name__
        return "answered"

    results = await asyncio.gather(*(outcome(call) for call in operations.values()))
    return dict(zip(operations, results, strict=True))


@async_test
async def test_crashed_redis_answers_store_unavailable_and_loses_nothing_on_restart(
    redis_server: RedisServer,
    redis_url: str,
) -> None:
    store = RedisJobStore(connect(redis_url), ttl_s=TTL_S)
    try:
        job, _ = await create(store, make_job())
        job = await store.apply(
            job.id, {"status": "processing", "progress_step": 1}, result=IMAGE_BYTES
        )
        assert job is not None
        events = await store.events_after(job.id, 0)

        with redis_server.stopped(hard=True):  # SIGKILL: only the fsynced append-only file lives
            operations = every_operation(store, job.id)
            assert await outcomes_of(operations) == dict.fromkeys(operations, "StoreUnavailable")

        # The same store instance, no reconnect by hand: the job and all it had are back.
        await store.ping()
        assert await store.get(job.id) == job
        assert await store.events_after(job.id, 0) == events
        assert await store.get_result(job.id) == IMAGE_BYTES
        assert await store.get_request(job.id) == edit_request()
        finished = await store.apply(job.id, {"status": "completed"}, NewEvent("completed"))
        assert finished is not None and finished.status is JobStatus.COMPLETED
        assert (await store.events_after(job.id, 1))[0].id == 2
    finally:
        await store.close()


@async_test
async def test_hung_redis_answers_store_unavailable_instead_of_hanging(
    redis_server: RedisServer,
    redis_url: str,
) -> None:
    store = RedisJobStore(connect(redis_url), ttl_s=TTL_S)
    try:
        job, _ = await create(store, make_job())

        with redis_server.hung():  # SIGSTOP: connections open, nothing ever answers
            operations = every_operation(store, job.id)
            assert await outcomes_of(operations) == dict.fromkeys(operations, "StoreUnavailable")

        await store.ping()
        stored = await store.get(job.id)
        assert stored is not None
        assert stored.id == job.id
    finally:
        await store.close()
