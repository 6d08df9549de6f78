"""Jobs and their queues: what they hold (job_models), what a backend offers (job_store), and
the two backends, in memory (one process) or in Redis (every replica)."""

from __future__ import annotations

from typing import NamedTuple

from gateway.store.job_store import JobQueue, JobStore
from gateway.store.memory_store import MemoryJobQueue, MemoryJobStore
from gateway.store.redis_connection import connect
from gateway.store.redis_queue import RedisJobQueue
from gateway.store.redis_store import RedisJobStore


class Backend(NamedTuple):
    store: JobStore
    queue: JobQueue


def open_backend(redis_url: str | None, *, ttl_s: int, replica: str, lease_s: float) -> Backend:
    """Redis when a URL is set (any number of replicas), else the embedded in-memory pair."""
    if redis_url:
        redis = connect(redis_url)
        store = RedisJobStore(redis, ttl_s=ttl_s, replica=replica)
        return Backend(store, RedisJobQueue(redis, replica, lease_s=lease_s))
    queue = MemoryJobQueue()
    return Backend(MemoryJobStore(queue, ttl_s=ttl_s), queue)
