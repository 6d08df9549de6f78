"""The Redis side shared by the store and the queue: one client, key names, scripts, errors.

Keys (prefix "qie:"); a job's keys carry its TTL, refreshed on each write to the job:
  qie:job:<id>               hash: one JSON value per Job field, plus _entry and _idem (raw)
  qie:job:<id>:events        stream; entry ids are "<n>-0", n = 1, 2, ... (the SSE event id)
  qie:job:<id>:request       hash: the edit (prompt, options, image:0 ... as blob:<sha256>
                             references), until it finishes
  qie:blob:<sha256>          string: one upload's bytes, stored once however many jobs edit it
                             (a batch's variations), deleted when the last of them finishes
  qie:blob:<sha256>:refs     string: how many unfinished jobs refer to it
  qie:job:<id>:result        string: the edited image bytes
  qie:job:<id>:control       stream: a cancel request, read by the runner with a blocking read
  qie:idem:<owner>:<sha256>  string: the job id an Idempotency-Key named (key hashed: bounded)
  qie:batch:<id>             string: a batch (JSON: its items and their job ids), written once;
                             it expires JOB_TTL_S plus its jobs' deadline after it was accepted
  qie:queue:<model>          stream of {job, replica}, read by the consumer group "runners"
  qie:queue:<model>:slots    sorted set: job id -> lease expiry (ms); its size is the running count
  qie:queue:<model>:wake     list: a token per freed slot or new job, for waiters' BLPOP
  qie:queue:<model>:avg      string: moving average of one run, seconds (ETAs)
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from importlib import resources

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ReadOnlyError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.errors import StoreFull, StoreUnavailable

# A down Redis must answer within a couple of seconds, never hang a request.
REDIS_TIMEOUT_S = 2.0
# Blocking reads stay under the socket timeout, so a long wait is a series of short ones, each
# of which returns the moment its key changes.
REDIS_BLOCK_S = 1.0
GROUP = "runners"


def connect(
    url: str,
    *,
    max_connections: int = 64,
    wait_s: float = REDIS_TIMEOUT_S,
    blocking_s: float | None = None,
) -> Redis:
    """A client whose pool holds at most `max_connections`; a caller that finds them all busy
    waits up to `wait_s` for one, then gets StoreUnavailable (503), never an unbounded pool.

    No client-side retries: callers decide how long to keep trying, and a down Redis answers at
    once. The pool still reconnects stale connections after a restart. `blocking_s` is the socket
    timeout of a client whose commands block in Redis longer than REDIS_TIMEOUT_S.
    """
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=wait_s,
        socket_connect_timeout=REDIS_TIMEOUT_S,
        socket_timeout=blocking_s or REDIS_TIMEOUT_S,
        retry=Retry(NoBackoff(), 0),
        protocol=2,
        decode_responses=False,
    )
    return Redis(connection_pool=pool)


def sibling(redis: Redis, *, max_connections: int) -> Redis:
    """Another client to the same Redis, with the same settings and a pool of its own."""
    pool = redis.connection_pool
    return Redis(
        connection_pool=BlockingConnectionPool(
            connection_class=pool.connection_class,
            max_connections=max_connections,
            **pool.connection_kwargs,
        )
    )


def script(redis: Redis, name: str, *, prelude: str | None = None) -> AsyncScript:
    """A Lua script of this package (lua/<name>.lua), after an optional prelude of helpers."""
    folder = resources.files("gateway.store").joinpath("lua")
    parts = [folder.joinpath(f"{n}.lua").read_text() for n in (prelude, name) if n]
    return redis.register_script("\n".join(parts))


@contextlib.contextmanager
def reachable() -> Iterator[None]:
    """Redis trouble becomes a 503 whose message names no host: StoreFull when Redis is out of
    memory (maxmemory with nothing left to evict), StoreUnavailable when it cannot be reached,
    every connection is busy, or it is (or has just become) a read-only replica."""
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError) as exc:
        raise StoreUnavailable(type(exc).__name__) from exc
    except OutOfMemoryError as exc:  # redis-py's name for an OOM reply, from a script too
        raise StoreFull("Redis is at its maxmemory") from exc
    except ReadOnlyError as exc:
        raise StoreUnavailable("Redis is read-only") from exc
    except ResponseError as exc:
        if str(exc).startswith("UNBLOCKED"):  # a blocked read, as its master became a replica
            raise StoreUnavailable("Redis became a read-only replica") from exc
        raise


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisKeys:
    def __init__(self, prefix: str = "qie:") -> None:
        self.prefix = prefix

    def job(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def events(self, job_id: str) -> str:
        return f"{self.job(job_id)}:events"

    def request(self, job_id: str) -> str:
        return f"{self.job(job_id)}:request"

    def result(self, job_id: str) -> str:
        return f"{self.job(job_id)}:result"

    def control(self, job_id: str) -> str:
        return f"{self.job(job_id)}:control"

    def blob(self, digest: str) -> str:
        return f"{self.prefix}blob:{digest}"

    def blob_refs(self, digest: str) -> str:
        return f"{self.blob(digest)}:refs"

    def idempotency(self, owner: str, key: str) -> str:
        return f"{self.prefix}idem:{owner}:{hashlib.sha256(key.encode()).hexdigest()}"

    def batch(self, batch_id: str) -> str:
        return f"{self.prefix}batch:{batch_id}"

    def queue(self, model: str) -> str:
        return f"{self.prefix}queue:{model}"

    def slots(self, model: str) -> str:
        return f"{self.queue(model)}:slots"

    def wake(self, model: str) -> str:
        return f"{self.queue(model)}:wake"

    def avg(self, model: str) -> str:
        return f"{self.queue(model)}:avg"
