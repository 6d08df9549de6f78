"""The runner's decisions that need no Triton: a job whose runner died twice fails clearly, and
a job cancelled or expired while it waited is dropped without reaching Triton."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from dev_stack.processes import free_port
from gateway.app import build
from gateway.jobs.execution import JobExecution
from gateway.jobs.lifecycle import JobLifecycle
from gateway.jobs.runner import JobRunner
from gateway.metrics import Metrics
from gateway.settings import Settings
from gateway.store import Backend
from gateway.store.job_models import EditInputs, Job, JobStatus, NewEvent, new_job_id
from gateway.store.job_store import JobStore, Ticket
from gateway.store.memory_batches import MemoryBatchStore
from gateway.store.memory_queue import MemoryJobQueue
from gateway.store.memory_store import MemoryJobStore
from gateway.store.redis_connection import connect
from gateway.store.redis_queue import RedisJobQueue
from gateway.store.redis_store import RedisJobStore
from gateway.triton.client import FinalResult
from gateway.webhooks.sender import WebhookSender
from gateway.webhooks.targets import CallbackPolicy
from qie_engine.contract import ResultMeta
from tests.gateway.test_job_store import async_test

T = TypeVar("T")

MODEL = "classic_edit"


def job(**fields: object) -> Job:
    return Job(
        id=new_job_id(),
        owner="o",
        model=MODEL,
        request_id="r",
        replica="gone",
        created_at=time.time(),
        **fields,  # type: ignore[arg-type]
    )


async def run_until_final(store: MemoryJobStore, queue: MemoryJobQueue, job_id: str) -> Job:
    # Nothing listens at this Triton: a job that reached it would fail triton_unavailable.
    settings = Settings(auth_disabled=True, triton_urls=[f"127.0.0.1:{free_port()}"])
    _, background = build(settings, Backend(store, queue, MemoryBatchStore()))
    runner = background.runner
    runner.serve(MODEL)
    try:
        for _ in range(100):
            current = await store.get(job_id)
            if current is not None and current.finished and not runner.running:
                return current
            await asyncio.sleep(0.05)
        raise AssertionError("the job did not end")
    finally:
        await runner.stop_taking()
        await background.webhooks.close()
        await background.pool.close()


@async_test
async def test_a_job_whose_runner_died_twice_fails_with_a_clear_reason() -> None:
    queue = MemoryJobQueue()
    store = MemoryJobStore(queue)
    orphan = job(status=JobStatus.PROCESSING, attempts=2)
    await store.create(orphan, NewEvent("queued"), EditInputs(MODEL, [b"x"], "p", None, "{}", "r"))

    final = await run_until_final(store, queue, orphan.id)

    assert final.status is JobStatus.FAILED
    assert final.error_code == "gateway_restarted"
    assert "submit it again" in (final.error_message or "")
    assert [e.event for e in await store.events_after(orphan.id, 0)] == ["queued", "failed"]


@async_test
async def test_a_job_past_its_deadline_when_taken_never_reaches_triton() -> None:
    queue = MemoryJobQueue()
    store = MemoryJobStore(queue)
    late = job(deadline_at=time.time() - 1)
    await store.create(late, NewEvent("queued"), EditInputs(MODEL, [b"x"], "p", None, "{}", "r"))

    final = await run_until_final(store, queue, late.id)

    assert (final.status, final.error_code) == (JobStatus.FAILED, "deadline_exceeded")
    assert final.progress_total == 0


class StubTriton:
    """Stands where the Triton pool would: each edit ends with `image` once `go` is set."""

    def __init__(self, image: bytes) -> None:
        self.image = image
        self.go = asyncio.Event()

    async def stream_edit(self, _request: EditInputs) -> AsyncIterator[FinalResult]:
        await self.go.wait()
        meta = ResultMeta(
            model=MODEL, seed=1, steps=1, width=8, height=8, format="png", random_weights=False
        )
        yield FinalResult(meta=meta, image=self.image)


def replica_runner(redis_url: str, name: str, triton: StubTriton) -> tuple[JobRunner, JobStore]:
    store = RedisJobStore(connect(redis_url), replica=name)
    queue = RedisJobQueue(store.redis, name, lease_s=1.0)
    lifecycle = JobLifecycle(store, Metrics(), WebhookSender("", CallbackPolicy()))
    execution = JobExecution(store, triton, lifecycle)  # type: ignore[arg-type]
    runner = JobRunner(store, queue, execution, lifecycle, limit=lambda _m: 1, lease_s=1.0)
    return runner, store


@async_test
async def test_a_stalled_runner_cannot_write_over_the_run_that_took_its_job_over(
    redis_url: str,
) -> None:
    """Replica A stalls past its lease (as in a long GC pause: nothing of it runs); replica B
    takes the job over; A wakes up with its result while B still runs. Exactly one final state
    and one result are written: B's, the run that holds the job now."""
    stale, fresh = StubTriton(b"stale"), StubTriton(b"fresh")
    runner_a, store = replica_runner(redis_url, "replica-a", stale)
    runner_b, _ = replica_runner(redis_url, "replica-b", fresh)

    async def stalled(_ticket: Ticket, _lost: asyncio.Event) -> None:
        await asyncio.Event().wait()

    runner_a._heartbeat = stalled  # type: ignore[method-assign]
    request = EditInputs(MODEL, [b"x"], "p", None, "{}", "r")
    job_id = (await store.create(job(), NewEvent("queued"), request))[0].id
    runner_a.serve(MODEL)
    try:
        await wait_until(lambda: store.get(job_id), lambda j: j is not None and j.attempts == 1)
        await runner_a.stop_taking()  # stalled: it takes nothing more either, its edit hangs
        runner_b.serve(MODEL)
        await wait_until(lambda: store.get(job_id), lambda j: j is not None and j.attempts == 2)
        stale.go.set()  # A wakes up while B runs, and tries to write its result
        await wait_until(lambda: asyncio.sleep(0, result=runner_a.running), lambda r: not r)
        fresh.go.set()
        done = await wait_until(lambda: store.get(job_id), lambda j: j is not None and j.finished)
    finally:
        await runner_a.stop_taking()
        await runner_b.stop_taking()
    events = [e.event for e in await store.events_after(job_id, 0)]
    assert events.count("completed") == 1 and events[-1] == "completed"
    assert done is not None and done.attempts == 2
    assert await store.get_result(job_id) == b"fresh"


async def wait_until(read: Callable[[], Awaitable[T]], ok: Callable[[T], bool]) -> T:
    for _ in range(200):
        value = await read()
        if ok(value):
            return value
        await asyncio.sleep(0.05)
    raise AssertionError("not reached in 10 s")
