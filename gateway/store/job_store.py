"""What the job service needs from a backend: a store of jobs and a queue per model.

Two backends implement both: memory (one process, `make run`) and Redis (any number of
replicas). Every state change is one atomic write that carries its event.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.store.batch_models import Batch
from gateway.store.job_models import EditInputs, Job, JobEvent, NewEvent

# A running job's claim on its queue entry and slot lasts this long unless renewed.
DEFAULT_LEASE_S = 15.0
# How long a job that a dead replica was running gets, in attempts, before it fails.
MAX_ATTEMPTS = 2


class JobGone(Exception):
    """The job expired or was evicted while someone waited on it."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id


@dataclass(frozen=True)
class NewJob:
    """A job to create: its first event, and its edit (None: it ended before it could queue, as a
    batch item refused at the door does, so it is stored with its final event and never queued).
    """

    job: Job
    event: NewEvent
    request: EditInputs | None


@dataclass(frozen=True)
class Room:
    """Admission: once `limit` of the model's jobs run, at most `max_depth` may wait."""

    max_depth: int
    limit: int

    def left(self, waiting: int, running: int) -> int:
        """How many more jobs may queue now (those that would start at once, and the rest)."""
        return max(0, self.max_depth - waiting + max(0, self.limit - running))


class QueueFull(Exception):
    """The model's queue has no room for the jobs asked for; nothing was created."""

    def __init__(self, left: int, waiting: int, running: int) -> None:
        super().__init__(f"room for {left}")
        self.left, self.waiting, self.running = left, waiting, running


class JobStore(Protocol):
    ttl_s: int

    async def create(
        self, job: Job, event: NewEvent, request: EditInputs | None, room: Room | None = None
    ) -> tuple[Job, bool]:
        """create_many of one job."""
        ...

    async def create_many(
        self, entries: Sequence[NewJob], room: Room | None = None
    ) -> list[tuple[Job, bool]]:
        """Store new jobs, each with its first event and its edit, and queue those with an edit,
        all in one write; or return the job an idempotent replay (or a retried create) names
        (with False). When `room` is given and the queue cannot take every new queued job, none
        is created: QueueFull. The check and the writes are one atomic step, across replicas.
        """
        ...

    async def fullness(self) -> float | None:
        """How full the store is, 0 to 1, where it has a memory bound (Redis's maxmemory)."""
        ...

    async def release_idempotency(self, job: Job) -> None:
        """Forget the job's Idempotency-Key, so that a retry with it makes a new job."""
        ...

    async def get(self, job_id: str) -> Job | None: ...

    async def get_request(self, job_id: str) -> EditInputs | None:
        """The edit a job asked for, until it finishes."""
        ...

    async def apply(
        self,
        job_id: str,
        fields: Mapping[str, Any],
        event: NewEvent | None = None,
        *,
        result: bytes | None = None,
        expect: Mapping[str, Collection[Any]] | None = None,
    ) -> Job | None:
        """Change fields, append the event and store the result, in one atomic write.

        A finished job also drops its edit. None when the job is missing, or when one of the
        `expect` fields holds none of the values given for it (nothing is written then).
        """
        ...

    async def events_after(self, job_id: str, last_id: int) -> list[JobEvent]: ...

    async def wait_events(self, job_id: str, last_id: int, timeout: float) -> list[JobEvent]:
        """Events after `last_id`, waiting up to `timeout` seconds for the first one.

        Raises JobGone when the job does not exist (or stops existing while it waits).
        """
        ...

    async def wait_many(
        self, cursors: Mapping[str, int], timeout: float
    ) -> dict[str, list[JobEvent]]:
        """wait_events for several jobs at once: the events after each job's cursor, for the
        jobs that have some, waiting up to `timeout` seconds for the first one (one blocking
        read for all of them). Raises JobGone naming a job that does not exist."""
        ...

    async def get_result(self, job_id: str) -> bytes | None: ...

    async def request_cancel(self, job_id: str) -> None:
        """Tell whichever replica runs the job to stop it."""
        ...

    async def cancel_requested(self, job_id: str) -> bool: ...

    async def wait_cancel(self, job_id: str) -> None:
        """Return once a cancel of the job was requested, from any replica (a blocking read)."""
        ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


class BatchStore(Protocol):
    """Batch records: each written once, with its own expiry, and never changed."""

    async def create(self, batch: Batch, ttl_s: int) -> tuple[Batch, bool]:
        """Store the batch unless one with its id exists: (the stored batch, whether it is new)."""
        ...

    async def get(self, batch_id: str) -> Batch | None: ...


@dataclass(frozen=True)
class Ticket:
    """A job taken from its model's queue, holding one of the model's global slots."""

    model: str
    job_id: str
    entry_id: str = ""


@dataclass(frozen=True)
class QueueStats:
    waiting: int  # jobs not yet taken, from every replica
    waiting_here: int  # of those, the ones this replica accepted
    running: int  # slots held, on every replica
    avg_run_s: float


class JobQueue(Protocol):
    shared: bool  # seen by every replica (Redis), or by this process only (memory)

    async def take(self, model: str, limit: int, timeout: float) -> Ticket | None:
        """The oldest waiting job once fewer than `limit` run on all replicas; None after
        `timeout` seconds. A job whose runner died (lease expired) is taken again."""
        ...

    async def renew(self, ticket: Ticket) -> bool:
        """Extend the ticket's lease; False when it was lost to another replica."""
        ...

    async def release(self, ticket: Ticket, run_s: float | None = None) -> None:
        """Done with the job: free its slot, forget its entry, and learn its run time."""
        ...

    async def remove(self, model: str, job_id: str) -> None:
        """Take a waiting job out of the queue (it was cancelled)."""
        ...

    async def position(self, model: str, job_id: str) -> int | None:
        """1-based place among the jobs not yet taken, or None."""
        ...

    async def stats(self, model: str) -> QueueStats: ...

    async def close(self) -> None: ...
