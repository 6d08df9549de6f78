"""The runner's decisions that need no Triton: a job whose runner died twice fails clearly, and
a job cancelled or expired while it waited is dropped without reaching Triton."""

from __future__ import annotations

import asyncio
import time

from dev_stack.processes import free_port
from gateway.app import build
from gateway.settings import Settings
from gateway.store import Backend
from gateway.store.job_models import EditInputs, Job, JobStatus, NewEvent, new_job_id
from gateway.store.memory_batches import MemoryBatchStore
from gateway.store.memory_queue import MemoryJobQueue
from gateway.store.memory_store import MemoryJobStore
from tests.gateway.test_job_store import async_test

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
