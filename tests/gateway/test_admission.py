"""Admission that holds across replicas (QUALITY.md 42): the room check and the writes are one
atomic step, so concurrent batches on two replicas never push a queue past its depth, and a
batch is queued whole or not at all."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from gateway.app import build
from gateway.errors import ApiError
from gateway.http.deps import Services
from gateway.jobs.submission import Submission
from gateway.settings import Settings
from gateway.store import StoreOptions, open_backend
from gateway.store.job_models import EditInputs
from tests.gateway.test_job_store import IMAGE_BYTES, async_test

MODEL = "qwen_image_edit"
DEPTH = 32


@contextlib.asynccontextmanager
async def replica(name: str, redis_url: str | None) -> AsyncIterator[Services]:
    """A replica's services; no Triton answers, so its queue only fills (nothing runs)."""
    settings = Settings(
        auth_disabled=True,
        triton_urls=["127.0.0.1:1"],
        replica_id=name,
        max_queue_depth=DEPTH,
        max_concurrent_requests=1,
    )
    backend = open_backend(redis_url, StoreOptions(replica=name))
    services, background = build(settings, backend)
    try:
        yield services
    finally:
        await background.webhooks.close()
        await background.pool.close()
        await backend.store.close()
        await backend.queue.close()


def edit(index: int) -> Submission:
    request = EditInputs(MODEL, [IMAGE_BYTES], f"edit {index}", None, "{}", f"req-{index}")
    return Submission("owner-a", request, deadline_s=300)


@pytest.fixture(params=["memory", "redis"])
def redis_url(request: pytest.FixtureRequest) -> str | None:
    return request.getfixturevalue("redis_url") if request.param == "redis" else None


@async_test
async def test_concurrent_batches_on_two_replicas_never_pass_the_depth(
    redis_url: str | None,
) -> None:
    async with replica("a", redis_url) as a, replica("b", redis_url) as b:
        replicas = (a, b) if redis_url else (a, a)  # in memory, one process is the replica

        async def batch(i: int) -> int | ApiError:
            entries = [edit(i * 100 + n) for n in range(12)]
            try:
                return len(await replicas[i % 2].admission.submit_many(entries))
            except ApiError as refused:
                return refused

        answers = await asyncio.gather(*(batch(i) for i in range(8)))

        refusals = [a for a in answers if isinstance(a, ApiError)]
        assert refusals and all(r.code == "queue_full" for r in refusals)
        accepted = [a for a in answers if isinstance(a, int)]
        # Nothing runs (one slot, no Triton taking): DEPTH may wait, and one more holds the slot.
        assert sum(accepted) <= DEPTH + 1
        assert all(n in (0, 12) for n in accepted)  # whole batches, or nothing of them
        waiting = (await a.queues._queue.stats(MODEL)).waiting
        assert waiting == sum(accepted)


@async_test
async def test_single_jobs_on_two_replicas_stop_at_the_depth(redis_url: str | None) -> None:
    async with replica("a", redis_url) as a, replica("b", redis_url) as b:
        replicas = (a, b) if redis_url else (a, a)

        async def one(i: int) -> ApiError | None:
            try:
                await replicas[i % 2].admission.submit(edit(i))
            except ApiError as refused:
                return refused
            return None

        answers = await asyncio.gather(*(one(i) for i in range(60)))

        assert answers.count(None) == DEPTH + 1
        refusals = [a for a in answers if a is not None]
        assert all((r.status, r.code) == (503, "queue_full") for r in refusals)
        assert all("Retry-After" in r.headers for r in refusals)
