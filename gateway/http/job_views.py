"""How jobs look over HTTP: the status view, the seed's JSON answer, the result headers."""

from __future__ import annotations

import base64
import json
import time

from gateway.http.schemas import ErrorBody, JobAccepted, JobProgress, JobView, ProcessResponse
from gateway.jobs.lookup import JobState, Outcome
from gateway.store.job_models import Job


def job_error(job: Job) -> ErrorBody | None:
    """Why the job did not complete, if it did not."""
    if not job.error_code:
        return None
    return ErrorBody(code=job.error_code, message=job.error_message or "")


def job_view(state: JobState) -> JobView:
    job = state.job
    return JobView(
        job_id=job.id,
        status=job.status.value,
        model=job.model,
        image_id=job.image_id,
        progress=JobProgress(step=job.progress_step, total=job.progress_total),
        queue_position=state.queue_position,
        eta_s=state.eta_s,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        error=job_error(job),
        result=job.result_meta,
    )


def accepted(job: Job) -> JobAccepted:
    return JobAccepted(
        job_id=job.id,
        status=job.status.value,
        status_url=f"/jobs/{job.id}",
        events_url=f"/jobs/{job.id}/events",
        result_url=f"/jobs/{job.id}/result",
        cancel_url=f"/jobs/{job.id}/cancel",
    )


def result_headers(job: Job) -> dict[str, str]:
    meta = job.result_meta or {}
    headers = {
        "X-Job-Id": job.id,
        "X-Model": job.model,
        "X-Steps": str(meta.get("steps", "")),
        "X-Width": str(meta.get("width", "")),
        "X-Height": str(meta.get("height", "")),
        "X-Seed": "" if meta.get("seed") is None else str(meta["seed"]),
        "X-Random-Weights": str(bool(meta.get("random_weights"))).lower(),
        "X-Operations": json.dumps(meta.get("operations", [])),  # ASCII: json escapes the rest
    }
    if meta.get("local"):
        headers["X-Local-Edit"] = json.dumps(meta["local"])  # the crop and the working size
    if job.image_id:
        headers["X-Image-Id"] = job.image_id[:200].encode("ascii", "replace").decode()
    if job.started_at and job.finished_at:
        headers["X-Processing-Time"] = f"{job.finished_at - job.created_at:.3f}"
    return headers


def process_response(outcome: Outcome) -> ProcessResponse:
    job, meta = outcome.job, outcome.job.result_meta or {}
    assert outcome.image is not None
    return ProcessResponse(
        success=True,
        processed_image=base64.b64encode(outcome.image).decode(),
        processing_time=round((job.finished_at or time.time()) - job.created_at, 3),
        model_used=job.model,
        message="Image processed successfully",
        job_id=job.id,
        image_id=job.image_id,
        seed=meta.get("seed"),
        steps=meta.get("steps", 0),
        width=meta.get("width", 0),
        height=meta.get("height", 0),
        format=meta.get("format", "png"),
        mime_type=job.result_mime or "image/png",
        random_weights=bool(meta.get("random_weights")),
        operations=meta.get("operations", []),
        local=meta.get("local"),
    )
