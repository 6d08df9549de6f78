"""How batches look over HTTP: the accepted answer and the status view."""

from __future__ import annotations

from gateway.batch_service import BatchState
from gateway.schemas import BatchAccepted, BatchJob, BatchView, ErrorBody, JobProgress
from gateway.store.batch_models import BatchItem
from gateway.store.job_models import Job

EXPIRED = ErrorBody(code="job_expired", message="this edit's job expired; its result is gone")


def batch_accepted(state: BatchState) -> BatchAccepted:
    path = f"/batches/{state.batch.id}"
    return BatchAccepted(
        batch_id=state.batch.id,
        job_ids=state.batch.job_ids,
        status=state.tally.status,
        total=state.tally.total,
        status_url=path,
        events_url=f"{path}/events",
        result_url=f"{path}/result",
        cancel_url=f"{path}/cancel",
    )


def _item(index: int, item: BatchItem, job: Job | None) -> BatchJob:
    common = {"index": index, "job_id": item.job_id, "name": item.name, "file": item.file}
    if job is None:  # expired: it counts as failed
        return BatchJob(**common, seed=item.seed, status="failed", progress=_NONE, error=EXPIRED)
    error = None
    if job.error_code:
        error = ErrorBody(code=job.error_code, message=job.error_message or "")
    return BatchJob(
        **common,
        seed=item.seed,
        status=job.status.value,
        progress=JobProgress(step=job.progress_step, total=job.progress_total),
        error=error,
        result=job.result_meta,
    )


_NONE = JobProgress(step=0, total=0)


def batch_view(state: BatchState) -> BatchView:
    batch, t = state.batch, state.tally
    return BatchView(
        batch_id=batch.id,
        kind=batch.kind,
        model=batch.model,
        status=t.status,
        total=t.total,
        pending=t.pending,
        processing=t.processing,
        completed=t.completed,
        failed=t.failed,
        cancelled=t.cancelled,
        created_at=batch.created_at,
        jobs=[
            _item(i, item, job)
            for i, (item, job) in enumerate(zip(batch.items, state.jobs, strict=True))
        ],
    )
