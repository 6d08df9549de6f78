"""A batch's state, read off its jobs' states (a batch stores none of its own).

While any job is unfinished (pending or processing):
  pending     no job of the batch has started yet
  processing  at least one has started (it runs, or ran and ended)
Once every job has ended:
  completed   every job completed
  partial     some completed, the others failed or were cancelled
  cancelled   none completed and at least one was cancelled
  failed      none completed and none was cancelled: every one failed

A job that expired or was evicted (None here) counts as failed. The result zip holds the
completed jobs' images, so the status also says what it holds: all, some, or none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from gateway.store.job_models import Job, JobStatus

BatchStatus = Literal["pending", "processing", "completed", "partial", "failed", "cancelled"]
FINAL_BATCH_STATUSES = ("completed", "partial", "failed", "cancelled")


@dataclass(frozen=True)
class BatchTally:
    status: BatchStatus
    total: int
    pending: int
    processing: int
    completed: int
    failed: int
    cancelled: int

    @property
    def unfinished(self) -> int:
        return self.pending + self.processing

    @property
    def final(self) -> bool:
        return self.unfinished == 0


def tally(jobs: Sequence[Job | None]) -> BatchTally:
    count = {status: 0 for status in JobStatus}
    for job in jobs:
        count[JobStatus.FAILED if job is None else job.status] += 1
    unfinished = count[JobStatus.PENDING] + count[JobStatus.PROCESSING]
    completed, cancelled = count[JobStatus.COMPLETED], count[JobStatus.CANCELLED]
    status: BatchStatus
    if unfinished:
        started = any(job is not None and job.started_at is not None for job in jobs)
        status = "processing" if started else "pending"
    elif completed == len(jobs):
        status = "completed"
    elif completed:
        status = "partial"
    else:
        status = "cancelled" if cancelled else "failed"
    return BatchTally(
        status=status,
        total=len(jobs),
        pending=count[JobStatus.PENDING],
        processing=count[JobStatus.PROCESSING],
        completed=completed,
        failed=count[JobStatus.FAILED],
        cancelled=cancelled,
    )
