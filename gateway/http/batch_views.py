"""How batches look over HTTP: the accepted answer and the status view."""

from __future__ import annotations

from gateway.batches.service import BatchState
from gateway.http.job_views import job_error
from gateway.http.schemas import BatchAccepted, BatchJob, BatchView, ErrorBody, JobProgress
from gateway.store.batch_models import BatchItem
from gateway.store.job_models import Job

NO_PROGRESS = JobProgress(step=0, total=0)
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
    common = {"index": index, **item.model_dump()}
    if job is None:  # expired: it counts as failed
        return BatchJob(**common, status="failed", progress=NO_PROGRESS, error=EXPIRED)
    return BatchJob(
        **common,
        status=job.status.value,
        progress=JobProgress(step=job.progress_step, total=job.progress_total),
        error=job_error(job),
        result=job.result_meta,
    )


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
