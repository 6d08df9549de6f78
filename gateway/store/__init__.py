"""Jobs, their queues and batches of them: what they hold (job_models, batch_models), what a
backend offers (job_store), and the two backends, in memory (one process) or in Redis (every
replica)."""

from __future__ import annotations

from typing import NamedTuple

from gateway.store.job_store import BatchStore, JobQueue, JobStore
from gateway.store.memory_store import MemoryBatchStore, MemoryJobQueue, MemoryJobStore
from gateway.store.redis_connection import connect
from gateway.store.redis_queue import RedisJobQueue
from gateway.store.redis_store import RedisBatchStore, RedisJobStore


class Backend(NamedTuple):
    store: JobStore
    queue: JobQueue
    batches: BatchStore


def open_backend(redis_url: str | None, *, ttl_s: int, replica: str, lease_s: float) -> Backend:
    """Redis when a URL is set (any number of replicas), else the embedded in-memory trio."""
    if redis_url:
        redis = connect(redis_url)
        store = RedisJobStore(redis, ttl_s=ttl_s, replica=replica)
        return Backend(
            store, RedisJobQueue(redis, replica, lease_s=lease_s), RedisBatchStore(redis)
        )
    queue = MemoryJobQueue()
    return Backend(MemoryJobStore(queue, ttl_s=ttl_s), queue, MemoryBatchStore())
