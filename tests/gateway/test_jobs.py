"""The job store, in memory and in a real Redis: jobs, events, results, cancel, orphans, outages."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from pydantic import ValidationError
from redis.asyncio import Redis

from gateway.jobs import (
    IdempotencyConflict,
    Job,
    JobStatus,
    JobStore,
    MemoryJobStore,
    RedisJobStore,
    StoreUnavailable,
    create_job_store,
    new_job_id,
)
from scripts.stack import RedisServer

TTL_S = 3600
# Far above the store's 2 s socket timeout, far below anything a person would call a hang.
NO_HANG_S = 4.0
RESTARTED = ("gateway_restarted", "the gateway restarted while this job ran; submit it again")
# Binary like an image: NUL bytes, every byte value, a PNG signature.
IMAGE_BYTES = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 64 + b"\x00\x00\xff\x00"


class Backend:
    """One kind of store; every store it opens sees the same jobs, as replicas on one Redis do."""

    def __init__(self, kind: str, url: str | None = None) -> None:
        self.kind = kind
        self.redis_url = url
        self.opened: list[JobStore] = []

    def open(self) -> JobStore:
        """A store for one more gateway replica (in memory: the one process's store)."""
        if self.kind == "memory":
            if not self.opened:
                self.opened.append(MemoryJobStore(ttl_s=TTL_S))
            return self.opened[0]
        assert self.redis_url is not None
        store = RedisJobStore(self.redis_url, ttl_s=TTL_S)
        self.opened.append(store)
        return store

    async def close(self) -> None:
        for store in self.opened:
            await store.close()


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


def test_job_ids_are_128_random_bits_in_hex() -> None:
    ids = [new_job_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-f]{32}", job_id) for job_id in ids)
    # Every digit position takes every value: no counter, timestamp or fixed prefix inside.
    assert all(len({job_id[pos] for job_id in ids}) == 16 for pos in range(32))


def test_create_job_store_uses_redis_only_when_a_url_is_set() -> None:
    assert isinstance(create_job_store(None, 60), MemoryJobStore)
    assert isinstance(create_job_store("", 60), MemoryJobStore)
    store = create_job_store("redis://127.0.0.1:1/0", 60)  # lazy: nothing connects yet
    assert isinstance(store, RedisJobStore)
    assert store.ttl_s == 60
    asyncio.run(store.close())


def test_store_unavailable_is_a_503_with_retry_after() -> None:
    error = StoreUnavailable()
    assert (error.status, error.code) == (503, "store_unavailable")
    assert error.headers == {"Retry-After": "5"}


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
    )

    stored, created = await store.create(job)

    assert created is True
    assert stored == job
    assert await peer.get(job.id) == job  # floats, nested dicts and None survive exactly
    assert await peer.get(new_job_id()) is None


@async_test
async def test_creating_the_same_job_again_returns_it_and_resets_nothing(backend: Backend) -> None:
    store = backend.open()
    job, _ = await store.create(make_job())
    progressed = await store.update(job.id, status=JobStatus.PROCESSING, progress_step=3)

    again, created = await store.create(job)  # a retried create after a lost reply

    assert created is False
    assert again == progressed


@async_test
async def test_update_changes_only_the_given_fields(backend: Backend) -> None:
    store, peer = backend.open(), backend.open()
    job, _ = await store.create(make_job(image_id="img-7"))

    updated = await store.update(
        job.id, status="processing", started_at=1700000000.25, progress_total=8
    )

    assert updated == job.model_copy(
        update={"status": JobStatus.PROCESSING, "started_at": 1700000000.25, "progress_total": 8}
    )
    assert updated.status is JobStatus.PROCESSING
    assert await peer.get(job.id) == updated


@async_test
async def test_jobs_in_and_out_of_the_store_are_copies(backend: Backend) -> None:
    store = backend.open()
    job = make_job(result_meta={"seed": 1})
    original = job.model_copy(deep=True)
    await store.create(job)
    read = await store.get(job.id)
    assert read is not None

    job.progress_step = 5
    read.status = JobStatus.COMPLETED
    assert read.result_meta is not None
    read.result_meta["seed"] = 2

    assert await store.get(job.id) == original


@async_test
async def test_update_of_a_missing_job_raises_key_error(backend: Backend) -> None:
    store = backend.open()
    missing = new_job_id()
    with pytest.raises(KeyError, match=missing):
        await store.update(missing, progress_step=1)
    assert await store.get(missing) is None  # the update did not create a half job


@async_test
async def test_update_refuses_bad_fields_and_writes_nothing(backend: Backend) -> None:
    store = backend.open()
    job, _ = await store.create(make_job())

    with pytest.raises(ValueError, match="unknown job field"):
        await store.update(job.id, progress_step=2, colour="red")
    with pytest.raises(ValidationError):
        await store.update(job.id, progress_step=2, status="exploded")
    with pytest.raises(ValueError, match="id never changes"):
        await store.update(job.id, id=new_job_id())

    assert await store.get(job.id) == job


# --- Idempotency ------------------------------------------------------------------------------


@async_test
async def test_replayed_idempotency_key_returns_the_first_job(backend: Backend) -> None:
    store, peer = backend.open(), backend.open()
    first, created = await store.create(make_job(idempotency_key="k1", request_hash="h1"))
    assert created is True

    replay, created = await peer.create(make_job(idempotency_key="k1", request_hash="h1"))

    assert created is False
    assert replay == first
    assert (await peer.count_by_status())[JobStatus.PENDING] == 1


@async_test
async def test_idempotency_key_with_another_request_conflicts(backend: Backend) -> None:
    store = backend.open()
    first, _ = await store.create(make_job(idempotency_key="k1", request_hash="h1"))
    other = make_job(idempotency_key="k1", request_hash="h2")

    with pytest.raises(IdempotencyConflict):
        await store.create(other)

    assert await store.get(other.id) is None
    assert await store.get(first.id) == first


@async_test
async def test_idempotency_keys_belong_to_their_owner(backend: Backend) -> None:
    store = backend.open()
    mine, _ = await store.create(make_job(owner="owner-a", idempotency_key="k1", request_hash="h"))

    theirs, created = await store.create(
        make_job(owner="owner-b", idempotency_key="k1", request_hash="h")
    )

    assert created is True
    assert theirs.id != mine.id
    assert theirs.owner == "owner-b"


@async_test
async def test_concurrent_replays_on_two_replicas_create_exactly_one_job(backend: Backend) -> None:
    replicas = [backend.open(), backend.open()]
    attempts = [make_job(idempotency_key="burst", request_hash="h") for _ in range(12)]

    results = await asyncio.gather(*(replicas[i % 2].create(job) for i, job in enumerate(attempts)))

    winners = [job for job, created in results if created]
    assert len(winners) == 1
    assert {job.id for job, _ in results} == {winners[0].id}
    assert (await replicas[0].count_by_status())[JobStatus.PENDING] == 1


# --- Events -----------------------------------------------------------------------------------


@async_test
async def test_events_are_numbered_from_one_and_read_after_an_id(backend: Backend) -> None:
    store, peer = backend.open(), backend.open()
    job, _ = await store.create(make_job())
    other, _ = await store.create(make_job())
    await store.append_event(other.id, "queued", {"position": 3})

    appended = [
        await store.append_event(job.id, "queued", {"position": 0, "eta_s": None}),
        await peer.append_event(job.id, "started", {}),
        await store.append_event(job.id, "progress", {"step": 1, "total": 4}),
        await peer.append_event(job.id, "progress", {"step": 2, "total": 4}),
    ]

    assert [e.id for e in appended] == [1, 2, 3, 4]
    assert await peer.events_after(job.id, 0) == appended
    assert await store.events_after(job.id, 2) == appended[2:]
    assert await store.events_after(job.id, 4) == []
    assert appended[0].data == {"position": 0, "eta_s": None}
    assert [e.id for e in await store.events_after(other.id, 0)] == [1]  # numbered per job


@async_test
async def test_an_event_for_a_missing_job_raises_key_error(backend: Backend) -> None:
    store = backend.open()
    missing = new_job_id()
    with pytest.raises(KeyError):
        await store.append_event(missing, "progress", {"step": 1})
    assert await store.events_after(missing, 0) == []


@async_test
async def test_wait_events_wakes_when_another_replica_appends(backend: Backend) -> None:
    store, peer = backend.open(), backend.open()
    job, _ = await store.create(make_job())
    await store.append_event(job.id, "queued", {"position": 0})

    waiter = asyncio.create_task(store.wait_events(job.id, 1, timeout=60))
    await asyncio.sleep(0.3)
    assert not waiter.done()  # nothing after event 1 yet: it waits

    await peer.append_event(job.id, "progress", {"step": 1, "total": 4})
    events = await asyncio.wait_for(waiter, NO_HANG_S)  # woken, not at its 60 s timeout

    assert [(e.id, e.event, e.data) for e in events] == [(2, "progress", {"step": 1, "total": 4})]


@async_test
async def test_wait_events_returns_what_is_there_at_once(backend: Backend) -> None:
    store = backend.open()
    job, _ = await store.create(make_job())
    await store.append_event(job.id, "queued", {"position": 0})
    await store.append_event(job.id, "started", {})

    events = await asyncio.wait_for(store.wait_events(job.id, 0, timeout=60), NO_HANG_S)
    missing = await asyncio.wait_for(store.wait_events(new_job_id(), 0, timeout=60), NO_HANG_S)

    assert [e.event for e in events] == ["queued", "started"]
    assert missing == []  # an unknown job has nothing to wait for


@async_test
async def test_wait_events_returns_nothing_when_the_timeout_passes(backend: Backend) -> None:
    store = backend.open()
    job, _ = await store.create(make_job())
    await store.append_event(job.id, "queued", {"position": 0})

    assert await store.wait_events(job.id, 1, timeout=0.3) == []
    assert await store.wait_events(job.id, 1, timeout=0) == []


# --- Results and cancel -----------------------------------------------------------------------


@async_test
async def test_results_come_back_byte_for_byte_on_another_replica(backend: Backend) -> None:
    store, peer = backend.open(), backend.open()
    job, _ = await store.create(make_job())
    other, _ = await store.create(make_job())

    await store.set_result(job.id, IMAGE_BYTES)

    assert await peer.get_result(job.id) == IMAGE_BYTES
    assert await peer.get_result(other.id) is None


@async_test
async def test_cancel_flag_is_seen_by_another_replica(backend: Backend) -> None:
    store, peer = backend.open(), backend.open()
    job, _ = await store.create(make_job())
    other, _ = await store.create(make_job())
    assert await peer.cancel_requested(job.id) is False

    await store.request_cancel(job.id)
    await store.request_cancel(job.id)  # a second cancel changes nothing

    assert await peer.cancel_requested(job.id) is True
    assert await peer.cancel_requested(other.id) is False


# --- Orphans after a gateway restart ----------------------------------------------------------


@async_test
async def test_restarted_replica_fails_only_its_own_unfinished_jobs(backend: Backend) -> None:
    previous_life = backend.open()

    async def running_on(replica: str, status: JobStatus) -> Job:
        job, _ = await previous_life.create(make_job(replica=replica))
        job = await previous_life.update(job.id, status=status)
        await previous_life.mark_active(replica, job.id)
        return job

    pending = await running_on("replica-a", JobStatus.PENDING)
    processing = await running_on("replica-a", JobStatus.PROCESSING)
    # Finished, but the process died before it marked the job inactive.
    completed = await running_on("replica-a", JobStatus.COMPLETED)
    elsewhere = await running_on("replica-b", JobStatus.PROCESSING)

    new_life = backend.open()
    failed = await new_life.fail_orphans("replica-a", *RESTARTED)

    assert sorted(failed) == sorted([pending.id, processing.id])
    for job_id in failed:
        job = await new_life.get(job_id)
        assert job is not None
        assert job.status is JobStatus.FAILED
        assert (job.error_code, job.error_message) == RESTARTED
        assert job.finished_at is not None
        events = await new_life.events_after(job_id, 0)
        assert [(e.event, e.data) for e in events] == [
            (
                "failed",
                {"status": "failed", "error": {"code": RESTARTED[0], "message": RESTARTED[1]}},
            )
        ]
    assert await new_life.get(completed.id) == completed
    assert await new_life.events_after(completed.id, 0) == []
    assert await new_life.get(elsewhere.id) == elsewhere
    assert await new_life.events_after(elsewhere.id, 0) == []
    # The active set of replica-a is now empty: a second start fails nothing.
    assert await new_life.fail_orphans("replica-a", *RESTARTED) == []


@async_test
async def test_jobs_marked_inactive_are_no_orphans(backend: Backend) -> None:
    store = backend.open()
    job, _ = await store.create(make_job())
    await store.mark_active("replica-a", job.id)
    job = await store.update(job.id, status=JobStatus.PROCESSING)

    await store.mark_inactive("replica-a", job.id)

    assert await store.fail_orphans("replica-a", *RESTARTED) == []
    assert await store.get(job.id) == job


@async_test
async def test_orphans_whose_job_expired_are_skipped(backend: Backend) -> None:
    store = backend.open()
    await store.mark_active("replica-a", new_job_id())  # its job is long gone
    assert await store.fail_orphans("replica-a", *RESTARTED) == []


# --- Counts -----------------------------------------------------------------------------------


@async_test
async def test_count_by_status_counts_every_job_on_every_replica(backend: Backend) -> None:
    store, peer = backend.open(), backend.open()
    for status in ["pending", "pending", "processing", "completed", "failed"]:
        await store.create(make_job(status=status))
    last_pending, _ = await peer.create(make_job(replica="replica-b"))

    assert await peer.count_by_status() == {
        JobStatus.PENDING: 3,
        JobStatus.PROCESSING: 1,
        JobStatus.COMPLETED: 1,
        JobStatus.FAILED: 1,
        JobStatus.CANCELLED: 0,
    }

    await peer.update(last_pending.id, status=JobStatus.CANCELLED)
    counts = await store.count_by_status()
    assert (counts[JobStatus.PENDING], counts[JobStatus.CANCELLED]) == (2, 1)


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
    job, _ = await store.create(make_job(idempotency_key="k", request_hash="h"))
    await store.set_result(job.id, IMAGE_BYTES)

    clock.now += 59
    await store.append_event(job.id, "progress", {"step": 1})  # a write: the TTL starts again
    clock.now += 59
    assert await store.get(job.id) is not None

    clock.now += 2
    assert await store.get(job.id) is None
    assert await store.get_result(job.id) is None
    assert await store.events_after(job.id, 0) == []
    assert sum((await store.count_by_status()).values()) == 0
    # Its Idempotency-Key is forgotten with it: the same key starts a new job.
    _, created = await store.create(make_job(idempotency_key="k", request_hash="other"))
    assert created is True


@async_test
async def test_memory_store_evicts_the_oldest_finished_job_first() -> None:
    store = MemoryJobStore(max_jobs=3)
    finished_old, _ = await store.create(make_job(status="completed"))
    running, _ = await store.create(make_job(status="processing"))
    finished_new, _ = await store.create(make_job(status="failed"))

    newcomer, _ = await store.create(make_job())

    assert await store.get(finished_old.id) is None
    assert [await store.get(j.id) is not None for j in (running, finished_new, newcomer)] == [
        True,
        True,
        True,
    ]

    await store.create(make_job())  # evicts finished_new; never the running job
    crowd, _ = await store.create(make_job())  # nothing finished left: the bound is soft
    assert await store.get(finished_new.id) is None
    assert await store.get(running.id) is not None
    assert await store.get(crowd.id) is not None
    assert sum((await store.count_by_status()).values()) == 4


@async_test
async def test_memory_store_bounds_result_bytes_by_evicting_finished_jobs() -> None:
    store = MemoryJobStore(max_result_bytes=len(IMAGE_BYTES) + 10)
    finished, _ = await store.create(make_job(status="completed"))
    await store.set_result(finished.id, IMAGE_BYTES)
    running, _ = await store.create(make_job(status="processing"))

    await store.set_result(running.id, IMAGE_BYTES)

    assert await store.get(finished.id) is None
    assert await store.get_result(running.id) == IMAGE_BYTES


# --- Redis: TTLs, outages, restarts -----------------------------------------------------------


@async_test
async def test_every_redis_key_of_a_job_carries_the_ttl_and_updates_refresh_it(
    redis_url: str,
) -> None:
    store = RedisJobStore(redis_url, ttl_s=TTL_S)
    client = Redis.from_url(redis_url)
    try:
        job, _ = await store.create(make_job(idempotency_key="k1", request_hash="h"))
        await store.mark_active("replica-a", job.id)
        await store.append_event(job.id, "queued", {"position": 0})
        await store.set_result(job.id, IMAGE_BYTES)
        await store.request_cancel(job.id)

        keys = sorted([key.decode() async for key in client.scan_iter("*")])
        idem = hashlib.sha256(b"k1").hexdigest()
        assert keys == sorted(
            [
                f"qie:job:{job.id}",
                f"qie:job:{job.id}:events",
                f"qie:job:{job.id}:result",
                f"qie:job:{job.id}:cancel",
                f"qie:idem:owner-a:{idem}",
                "qie:active:replica-a",
                "qie:status:pending",
            ]
        )
        ttls = {key: await client.ttl(key) for key in keys}
        assert all(TTL_S - 60 < ttl <= TTL_S for ttl in ttls.values()), ttls

        job_keys = [key for key in keys if key != "qie:active:replica-a"]
        for key in job_keys:
            await client.expire(key, 5)
        await store.update(job.id, progress_step=1)

        refreshed = {key: await client.ttl(key) for key in job_keys}
        assert all(ttl > TTL_S - 60 for ttl in refreshed.values()), refreshed
    finally:
        await client.aclose()
        await store.close()


@async_test
async def test_redis_forgets_an_idle_job_and_stops_counting_it(redis_url: str) -> None:
    short_lived = RedisJobStore(redis_url, ttl_s=1)
    long_lived = RedisJobStore(redis_url, ttl_s=TTL_S)
    try:
        idle, _ = await short_lived.create(make_job())
        await short_lived.append_event(idle.id, "queued", {"position": 0})
        # A job written later keeps the shared count index itself alive.
        busy, _ = await long_lived.create(make_job())
        assert (await long_lived.count_by_status())[JobStatus.PENDING] == 2

        await asyncio.sleep(2.2)  # the short TTL, plus the one-second grain of the count index

        assert await long_lived.get(idle.id) is None
        assert await long_lived.events_after(idle.id, 0) == []
        assert await long_lived.get(busy.id) is not None
        assert (await long_lived.count_by_status())[JobStatus.PENDING] == 1
    finally:
        await short_lived.close()
        await long_lived.close()


def every_operation(store: JobStore, job_id: str) -> dict[str, Callable[[], Awaitable[Any]]]:
    return {
        "create": lambda: store.create(make_job()),
        "get": lambda: store.get(job_id),
        "update": lambda: store.update(job_id, progress_step=2),
        "append_event": lambda: store.append_event(job_id, "progress", {"step": 2}),
        "events_after": lambda: store.events_after(job_id, 0),
        "wait_events": lambda: store.wait_events(job_id, 99, timeout=30),
        "set_result": lambda: store.set_result(job_id, b"x"),
        "get_result": lambda: store.get_result(job_id),
        "request_cancel": lambda: store.request_cancel(job_id),
        "cancel_requested": lambda: store.cancel_requested(job_id),
        "mark_active": lambda: store.mark_active("replica-a", job_id),
        "mark_inactive": lambda: store.mark_inactive("replica-a", job_id),
        "fail_orphans": lambda: store.fail_orphans("replica-a", *RESTARTED),
        "count_by_status": store.count_by_status,
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
    store = RedisJobStore(redis_url, ttl_s=TTL_S)
    try:
        job, _ = await store.create(make_job())
        job = await store.update(job.id, status=JobStatus.PROCESSING, progress_step=1)
        await store.mark_active("replica-a", job.id)
        event = await store.append_event(job.id, "progress", {"step": 1, "total": 4})
        await store.set_result(job.id, IMAGE_BYTES)

        with redis_server.stopped(hard=True):  # SIGKILL: only the fsynced append-only file lives
            operations = every_operation(store, job.id)
            assert await outcomes_of(operations) == dict.fromkeys(operations, "StoreUnavailable")

        # The same store instance, no reconnect by hand: the job and all it had are back.
        await store.ping()
        assert await store.get(job.id) == job
        assert await store.events_after(job.id, 0) == [event]
        assert await store.get_result(job.id) == IMAGE_BYTES
        finished = await store.update(job.id, status=JobStatus.COMPLETED)
        assert finished.status is JobStatus.COMPLETED
        assert (await store.append_event(job.id, "completed", {})).id == 2
    finally:
        await store.close()


@async_test
async def test_hung_redis_answers_store_unavailable_instead_of_hanging(
    redis_server: RedisServer,
    redis_url: str,
) -> None:
    store = RedisJobStore(redis_url, ttl_s=TTL_S)
    try:
        job, _ = await store.create(make_job())

        with redis_server.hung():  # SIGSTOP: connections open, nothing ever answers
            operations = every_operation(store, job.id)
            assert await outcomes_of(operations) == dict.fromkeys(operations, "StoreUnavailable")

        await store.ping()
        stored = await store.get(job.id)
        assert stored is not None
        assert stored.id == job.id
    finally:
        await store.close()
