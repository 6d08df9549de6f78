"""Jobs from submit to a final state: queue, Triton stream, progress, cancel, deadline, webhook."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from gateway.admission import Admission, QueueFull
from gateway.errors import ApiError, Conflict, ServiceUnavailable, from_engine_code
from gateway.jobs import (
    TERMINAL_STATUSES,
    IdempotencyConflict,
    Job,
    JobStatus,
    JobStore,
    StoreUnavailable,
    new_job_id,
)
from gateway.metrics import Metrics
from gateway.triton_client import EditCall, FinalResult, TritonCallError, TritonPool
from gateway.webhooks import WebhookSender
from qie_engine.contract import ProgressEvent

log = logging.getLogger(__name__)
T = TypeVar("T")

CANCEL_POLL_S = 0.2
# Failure codes that are the service's fault, not the request's: 502 for a synchronous caller.
SERVER_SIDE_FAILURES = frozenset(
    {
        "internal_error",
        "triton_error",
        "model_error",
        "model_crashed",
        "gateway_restarted",
        "gateway_shutdown",
    }
)
STORE_RETRY_S = 30.0


@dataclass
class Submission:
    """A validated edit request, ready to run."""

    owner: str
    call: EditCall
    deadline_s: float
    idempotency_key: str | None = None
    request_hash: str | None = None
    callback_url: str | None = None
    image_id: str | None = None


@dataclass
class Outcome:
    job: Job
    image: bytes | None


class JobService:
    def __init__(
        self,
        store: JobStore,
        pool: TritonPool,
        admission: Admission,
        metrics: Metrics,
        webhooks: WebhookSender,
        replica: str,
        inflight_limit: Callable[[str], int | None],
    ) -> None:
        self.store = store
        self.pool = pool
        self.admission = admission
        self.metrics = metrics
        self.webhooks = webhooks
        self.replica = replica
        self.inflight_limit = inflight_limit
        self.tasks: dict[str, asyncio.Task[Outcome]] = {}
        self.shutting_down = False

    async def recover(self) -> list[str]:
        """Fail the jobs this replica left unfinished when it last died."""
        failed = await self.store.fail_orphans(
            self.replica,
            "gateway_restarted",
            "the gateway restarted while this job ran; submit it again",
        )
        if failed:
            log.warning("marked %d orphaned job(s) failed after a restart", len(failed))
        return failed

    async def shutdown(self, grace_s: float) -> None:
        """Let running jobs finish for a while, then stop the rest as failed (not cancelled)."""
        self.shutting_down = True
        tasks = list(self.tasks.values())
        if tasks:
            log.info("waiting up to %.0fs for %d job(s) to finish", grace_s, len(tasks))
            _, pending = await asyncio.wait(tasks, timeout=grace_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=10)

    def _queue(self, model: str) -> Any:
        return self.admission.queue(model, self.inflight_limit(model))

    async def submit(self, sub: Submission) -> Job:
        """Create the job (or return the idempotent replay) and start running it."""
        queue = self._queue(sub.call.model)
        try:
            queue.check_capacity()
        except QueueFull:
            self.metrics.rejects.labels(reason="queue_full").inc()
            raise ServiceUnavailable(
                f"the queue for {sub.call.model} is full ({queue.max_depth} waiting); retry later",
                code="queue_full",
                headers={"Retry-After": str(max(1, round(queue.avg_run_s)))},
            ) from None
        job = Job(
            id=new_job_id(),
            owner=sub.owner,
            model=sub.call.model,
            request_id=sub.call.request_id,
            replica=self.replica,
            created_at=time.time(),
            idempotency_key=sub.idempotency_key,
            request_hash=sub.request_hash,
            callback_url=sub.callback_url,
            image_id=sub.image_id,
        )
        try:
            job, created = await self.store.create(job)
        except IdempotencyConflict:
            self.metrics.rejects.labels(reason="idempotency_conflict").inc()
            raise ApiError(
                "this Idempotency-Key was used with a different request; use a new key",
                code="idempotency_conflict",
                status=422,
            ) from None
        if not created:
            return job
        await self.store.mark_active(self.replica, job.id)
        position = len(queue.waiting) + 1 if queue.inflight >= queue.max_inflight else 0
        await self.store.append_event(
            job.id, "queued", {"position": position, "eta_s": queue.eta_s(position)}
        )
        self.metrics.jobs_active.labels(status="pending").inc()
        sub.call.request_id = sub.call.request_id or job.id
        self.tasks[job.id] = asyncio.create_task(self._run(job, sub), name=f"job-{job.id}")
        return job

    def runs(self, job_id: str) -> bool:
        return job_id in self.tasks

    async def stored_outcome(self, job: Job) -> Outcome:
        """The job as the store has it, with its image once completed."""
        current = await self.store.get(job.id) or job
        done = current.status is JobStatus.COMPLETED
        return Outcome(job=current, image=await self.store.get_result(job.id) if done else None)

    async def wait(self, job_id: str) -> Outcome:
        """Wait for a job this replica runs (the synchronous /process path)."""
        return await asyncio.shield(self.tasks[job_id])

    def position(self, job: Job) -> int | None:
        if job.status is not JobStatus.PENDING:
            return None
        return self.admission.queue(job.model).position(job.id)

    def eta_s(self, job: Job) -> float | None:
        if job.status in TERMINAL_STATUSES:
            return None
        queue = self.admission.queue(job.model)
        if job.status is JobStatus.PROCESSING and job.progress_total:
            per_step = queue.avg_run_s / max(job.progress_total, 1)
            return round(per_step * (job.progress_total - job.progress_step), 1)
        return queue.eta_s(self.position(job))

    async def cancel(self, job: Job) -> Job:
        """Idempotent: pending → cancelled now; processing → stops at the next step."""
        if job.status is JobStatus.CANCELLED:
            return job
        if job.status in TERMINAL_STATUSES:
            raise Conflict(f"job {job.id} already {job.status.value}", code="job_finished")
        await self.store.request_cancel(job.id)
        task = self.tasks.get(job.id)
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=5)
        elif job.status is JobStatus.PENDING:
            # Another replica owns it: it sees the flag before it starts the job.
            job = await self._finish(job, JobStatus.CANCELLED, None, None)
        else:
            await self._wait_for_status(job.id, TERMINAL_STATUSES, timeout=5)
        return await self.store.get(job.id) or job

    async def _wait_for_status(
        self, job_id: str, statuses: frozenset[JobStatus], timeout: float
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            current = await self.store.get(job_id)
            if current is None or current.status in statuses:
                return
            await asyncio.sleep(CANCEL_POLL_S)

    async def _persist(
        self, operation: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any
    ) -> T:
        """Retry a store call while the store is briefly down, so no job is lost or stuck."""
        deadline = time.monotonic() + STORE_RETRY_S
        delay = 0.1
        while True:
            try:
                return await operation(*args, **kwargs)
            except StoreUnavailable:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _run(self, job: Job, sub: Submission) -> Outcome:
        model = job.model
        queue = self._queue(model)
        self.metrics.queue_depth.labels(model=model).set(queue.depth + 1)
        try:
            image, job = await asyncio.wait_for(self._acquire_and_process(job, sub), sub.deadline_s)
            return Outcome(job=job, image=image)
        except asyncio.CancelledError:
            status, code, message = JobStatus.CANCELLED, None, None
            if self.shutting_down:
                status, code = JobStatus.FAILED, "gateway_shutdown"
                message = "the gateway shut down before this job finished; submit it again"
        except asyncio.TimeoutError:
            status, code = JobStatus.FAILED, "deadline_exceeded"
            message = f"the edit did not finish within {sub.deadline_s:g}s; it was stopped"
        except TritonCallError as exc:
            status = JobStatus.CANCELLED if exc.kind == "cancelled" else JobStatus.FAILED
            code, message = exc.code, exc.message
        except Exception as exc:
            log.exception("job %s crashed", job.id)
            status, code, message = JobStatus.FAILED, "internal_error", type(exc).__name__
        finally:
            self.metrics.queue_depth.labels(model=model).set(queue.depth)
            self.tasks.pop(job.id, None)
        current = await self._persist(self.store.get, job.id) or job
        return Outcome(job=await self._finish(current, status, code, message), image=None)

    async def _acquire_and_process(self, job: Job, sub: Submission) -> tuple[bytes, Job]:
        queue = self._queue(job.model)
        queued_at = time.monotonic()
        await queue.acquire(job.id)
        try:
            self.metrics.queue_wait.labels(model=job.model).observe(time.monotonic() - queued_at)
            self.metrics.queue_depth.labels(model=job.model).set(queue.depth)
            if await self._persist(self.store.cancel_requested, job.id):
                raise asyncio.CancelledError
            return await self._process(job, sub)
        finally:
            queue.release()

    async def _process(self, job: Job, sub: Submission) -> tuple[bytes, Job]:
        model = job.model
        started = time.time()
        job = await self._persist(
            self.store.update, job.id, status=JobStatus.PROCESSING, started_at=started
        )
        self.metrics.jobs_active.labels(status="pending").dec()
        self.metrics.jobs_active.labels(status="processing").inc()
        self.metrics.inflight.labels(model=model).inc()
        await self._persist(self.store.append_event, job.id, "started", {})
        watcher = asyncio.create_task(self._watch_cancel(job.id, asyncio.current_task()))
        try:
            async for item in self.pool.stream_edit(sub.call):
                if isinstance(item, FinalResult):
                    elapsed = time.time() - started
                    self._queue(model).record_run(elapsed)
                    self.metrics.edit_duration.labels(model=model).observe(elapsed)
                    meta = item.meta.model_dump(mode="json")
                    await self._persist(self.store.set_result, job.id, item.image)
                    job = await self._finish(
                        job, JobStatus.COMPLETED, None, None, result_meta=meta, image=item.image
                    )
                    return item.image, job
                await self._persist(self._record_progress, job.id, item)
            raise TritonCallError("internal", "triton_error", "Triton ended without a result")
        finally:
            watcher.cancel()
            self.metrics.inflight.labels(model=model).dec()

    async def _record_progress(self, job_id: str, event: ProgressEvent) -> None:
        await self.store.update(job_id, progress_step=event.step, progress_total=event.total)
        await self.store.append_event(job_id, "progress", event.model_dump(exclude={"type"}))

    async def _watch_cancel(self, job_id: str, runner: asyncio.Task[Any] | None) -> None:
        """Cancel the runner when any replica flags the job; the gRPC stream closes with it."""
        while runner is not None and not runner.done():
            await asyncio.sleep(CANCEL_POLL_S)
            try:
                if await self.store.cancel_requested(job_id):
                    runner.cancel()
                    return
            except StoreUnavailable:
                continue

    async def _finish(
        self,
        job: Job,
        status: JobStatus,
        error_code: str | None,
        error_message: str | None,
        *,
        result_meta: dict[str, Any] | None = None,
        image: bytes | None = None,
    ) -> Job:
        previous = job.status
        fields: dict[str, Any] = {
            "status": status,
            "finished_at": time.time(),
            "error_code": error_code,
            "error_message": error_message,
        }
        if result_meta is not None:
            fields["result_meta"] = result_meta
            fields["result_mime"] = _mime(result_meta.get("format", "png"))
        job = await self._persist(self.store.update, job.id, **fields)
        data: dict[str, Any] = {"status": status.value}
        if error_code:
            data["error"] = {"code": error_code, "message": error_message}
        if result_meta is not None:
            data["result"] = result_meta
        await self._persist(self.store.append_event, job.id, status.value, data)
        await self._persist(self.store.mark_inactive, self.replica, job.id)
        if previous in (JobStatus.PENDING, JobStatus.PROCESSING) and job.replica == self.replica:
            self.metrics.jobs_active.labels(status=previous.value).dec()
        self.metrics.jobs.labels(model=job.model, status=status.value).inc()
        if status is JobStatus.COMPLETED:
            self.metrics.last_success.labels(model=job.model).set(time.time())
        if job.callback_url:
            self.webhooks.schedule(job)
        log.info(
            "job %s %s",
            job.id,
            status.value,
            extra={"request_id": job.request_id, "model": job.model, "error_code": error_code},
        )
        return job


def _mime(fmt: str) -> str:
    return {"png": "image/png", "webp": "image/webp", "jpeg": "image/jpeg"}.get(fmt, "image/png")


def outcome_error(job: Job) -> ApiError:
    """The HTTP error for a job that did not complete (synchronous /process)."""
    code = job.error_code or "failed"
    message = job.error_message or "the edit failed"
    if job.status is JobStatus.CANCELLED:
        return ApiError("the edit was cancelled", code="cancelled", status=499)
    if code == "deadline_exceeded":
        return ApiError(message, code=code, status=504)
    if code in ("triton_unavailable", "model_unavailable", "queue_full"):
        return ServiceUnavailable(message, code=code, headers={"Retry-After": "5"})
    if code in SERVER_SIDE_FAILURES:
        return ApiError(message, code=code, status=502)
    return from_engine_code(code, message)
