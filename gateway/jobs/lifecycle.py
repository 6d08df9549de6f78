"""Every state change of a job: one atomic store write carrying its event, then the metrics,
the log line and, once it ends, the webhook. Writes are retried while the store is briefly down,
so that no job is lost or stuck."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any, TypeVar

from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from gateway.errors import ErrorCode, StoreUnavailable
from gateway.metrics import Metrics
from gateway.store.job_models import TERMINAL_STATUSES, Job, JobStatus, NewEvent
from gateway.store.job_store import JobStore
from gateway.triton.client import FinalResult
from gateway.webhooks.sender import WebhookSender
from qie_engine.contract import ProgressEvent

log = logging.getLogger(__name__)
T = TypeVar("T")

STORE_RETRY_S = 30.0
UNFINISHED = (JobStatus.PENDING, JobStatus.PROCESSING)
MIME_TYPES = {"png": "image/png", "webp": "image/webp", "jpeg": "image/jpeg"}


async def persist(operation: Callable[[], Awaitable[T]]) -> T:
    """Run a store call, retrying while the store is unreachable (up to STORE_RETRY_S)."""
    retrying = AsyncRetrying(
        retry=retry_if_exception_type(StoreUnavailable),
        stop=stop_after_delay(STORE_RETRY_S),
        wait=wait_exponential(multiplier=0.1, max=2.0),
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            return await operation()
    raise AssertionError("tenacity reraises the last error")


class JobLifecycle:
    def __init__(self, store: JobStore, metrics: Metrics, webhooks: WebhookSender) -> None:
        self.store = store
        self.metrics = metrics
        self.webhooks = webhooks

    async def write(
        self,
        job_id: str,
        fields: Mapping[str, Any],
        event: NewEvent,
        *,
        result: bytes | None = None,
        expect: Mapping[str, Collection[Any]] | None = None,
    ) -> Job | None:
        return await persist(
            lambda: self.store.apply(job_id, fields, event, result=result, expect=expect)
        )

    async def start(self, job: Job) -> Job | None:
        """pending → processing (or a retry of a job whose runner died); None if it changed."""
        attempt = job.attempts + 1
        fields = {
            "status": JobStatus.PROCESSING,
            "started_at": time.time(),
            "attempts": attempt,
            "progress_step": 0,
            "progress_total": 0,
        }
        expect: dict[str, Collection[Any]] = {"status": [job.status], "attempts": [job.attempts]}
        event = NewEvent("started", {"attempt": attempt})
        started = await self.write(job.id, fields, event, expect=expect)
        if started is not None and attempt == 1:
            self.metrics.queue_wait.labels(model=job.model).observe(time.time() - job.created_at)
        return started

    async def progress(self, job: Job, event: ProgressEvent) -> None:
        """A step of the run that started as `job`; nothing once another run took it over."""
        await self.write(
            job.id,
            {"progress_step": event.step, "progress_total": event.total},
            NewEvent("progress", event.model_dump(exclude={"type"})),
            expect={"status": [JobStatus.PROCESSING], "attempts": [job.attempts]},
        )

    async def finish(
        self,
        job: Job,
        status: JobStatus,
        error: tuple[ErrorCode, str] | None = None,
        *,
        result: FinalResult | None = None,
        expect: Collection[JobStatus] = UNFINISHED,
        fenced: bool = False,
    ) -> Job | None:
        """The final state, event and result in one write; None if the job had moved on.

        `fenced`: `job` is the run that started it, and the write is refused if another run has
        taken the job over since (its attempt count is the fencing token, written by start).
        """
        code, message = (error[0].value, error[1]) if error else (None, None)
        result_meta = None if result is None else result.meta.model_dump(mode="json")
        fields: dict[str, Any] = {
            "status": status,
            "finished_at": time.time(),
            "error_code": code,
            "error_message": message,
        }
        data: dict[str, Any] = {"status": status.value}
        if code:
            data["error"] = {"code": code, "message": message}
        if result_meta is not None:
            fields["result_meta"] = result_meta
            fields["result_mime"] = MIME_TYPES.get(result_meta.get("format", "png"), "image/png")
            data["result"] = result_meta
        image = None if result is None else result.image
        conditions: dict[str, Collection[Any]] = {"status": expect}
        if fenced:
            conditions["attempts"] = [job.attempts]
        done = await self.write(
            job.id, fields, NewEvent(status.value, data), result=image, expect=conditions
        )
        if done is None:
            return None
        self.metrics.jobs.labels(model=done.model, status=status.value).inc()
        if status is JobStatus.COMPLETED:
            self.metrics.last_success.labels(model=done.model).set(time.time())
        if done.callback_url:
            self.webhooks.schedule(done)
        log.info(
            "job %s %s",
            done.id,
            status.value,
            extra={"request_id": done.request_id, "model": done.model, "error_code": code},
        )
        return done


def is_final(job: Job | None) -> bool:
    return job is None or job.status in TERMINAL_STATUSES
