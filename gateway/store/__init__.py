"""Jobs, their queues and batches of them: what they hold (job_models, batch_models), what a
backend offers (job_store), and the two backends, in memory (one process) or in Redis (every
replica)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from gateway.store.job_store import BatchStore, JobQueue, JobStore
from gateway.store.memory_batches import MemoryBatchStore
from gateway.store.memory_queue import MemoryJobQueue
from gateway.store.memory_store import DEFAULT_RESULT_TTL_S, DEFAULT_TTL_S, MemoryJobStore
from gateway.store.redis_connection import REDIS_BLOCK_S, REDIS_TIMEOUT_S, connect
from gateway.store.redis_queue import RedisJobQueue
from gateway.store.redis_store import RedisBatchStore, RedisJobStore

# The lease client: each model's dispatcher blocks on it for up to a second, and each running
# job renews and releases its lease through it. Never used by a request.
LEASE_CONNECTIONS = 16


class Backend(NamedTuple):
    store: JobStore
    queue: JobQueue
    batches: BatchStore


@dataclass(frozen=True)
class StoreOptions:
    ttl_s: int = DEFAULT_TTL_S
    result_ttl_s: int = DEFAULT_RESULT_TTL_S
    replica: str = ""
    lease_s: float = 15.0
    pool_size: int = 64  # the requests' Redis connections, per replica
    pool_wait_s: float = REDIS_TIMEOUT_S  # how long a request waits for one, then 503


def open_backend(redis_url: str | None, options: StoreOptions) -> Backend:
    """Redis when a URL is set (any number of replicas), else the embedded in-memory trio."""
    if not redis_url:
        line = MemoryJobQueue()
        jobs = MemoryJobStore(line, ttl_s=options.ttl_s, result_ttl_s=options.result_ttl_s)
        return Backend(jobs, line, MemoryBatchStore())
    redis = connect(redis_url, max_connections=options.pool_size, wait_s=options.pool_wait_s)
    leases = connect(
        redis_url, max_connections=LEASE_CONNECTIONS, blocking_s=REDIS_TIMEOUT_S + REDIS_BLOCK_S
    )
    store = RedisJobStore(
        redis, ttl_s=options.ttl_s, result_ttl_s=options.result_ttl_s, replica=options.replica
    )
    queue = RedisJobQueue(redis, options.replica, leases=leases, lease_s=options.lease_s)
    return Backend(store, queue, RedisBatchStore(redis))
