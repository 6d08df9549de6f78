"""Signed completion callbacks to checked addresses, retried with backoff (tenacity).

A failing target never fails the job. Redirects are never followed: a callback must not be
bounced to another host.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from typing import Any

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from gateway.store.job_models import Job, JobStatus
from gateway.webhooks.targets import CallbackPolicy, CallbackRefused

log = logging.getLogger(__name__)
SIGNATURE_HEADER = "X-QIE-Signature"
TIMESTAMP_HEADER = "X-QIE-Timestamp"


class DeliveryFailed(Exception):
    """One attempt failed in a way worth retrying (the target is down or answered an error)."""


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """HMAC-SHA256 over "<timestamp>.<body>", hex, as `sha256=<hex>`."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def payload(job: Job) -> dict[str, Any]:
    completed = job.status is JobStatus.COMPLETED
    return {
        "job_id": job.id,
        "status": job.status.value,
        "model": job.model,
        "image_id": job.image_id,
        "result_url": f"/jobs/{job.id}/result" if completed else None,
        "result": job.result_meta,
        "error": {"code": job.error_code, "message": job.error_message} if job.error_code else None,
    }


class WebhookSender:
    def __init__(
        self,
        secret: str,
        policy: CallbackPolicy,
        *,
        max_attempts: int = 5,
        backoff_s: float = 1.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.secret = secret
        self.policy = policy
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.client = httpx.AsyncClient(timeout=10.0, follow_redirects=False, transport=transport)
        self.pending: set[asyncio.Task[bool]] = set()

    def schedule(self, job: Job) -> None:
        task = asyncio.create_task(self.deliver(job))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def deliver(self, job: Job) -> bool:
        """POST the job's final state; True once a 2xx answer came back."""
        assert job.callback_url
        body = json.dumps(payload(job)).encode()
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(DeliveryFailed),
            stop=stop_after_attempt(self.max_attempts),
            wait=wait_exponential(multiplier=self.backoff_s),
            before_sleep=lambda state: self._log_attempt(job, state),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    await self._post(job.callback_url, body)
        except (DeliveryFailed, CallbackRefused) as exc:
            log.warning("webhook for job %s not delivered: %s", job.id, exc)
            return False
        return True

    async def _post(self, url: str, body: bytes) -> None:
        # Resolved and checked on every attempt, and sent to exactly the address checked.
        target = await self.policy.pin(url)
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "Host": target.host_header,
            TIMESTAMP_HEADER: timestamp,
        }
        if self.secret:
            headers[SIGNATURE_HEADER] = sign(self.secret, timestamp, body)
        try:
            response = await self.client.post(
                target.url, content=body, headers=headers, extensions=target.extensions
            )
        except httpx.HTTPError as exc:
            raise DeliveryFailed(type(exc).__name__) from exc
        if response.is_redirect:
            raise CallbackRefused(f"HTTP {response.status_code}: redirects are not followed")
        if not response.is_success:
            raise DeliveryFailed(f"HTTP {response.status_code}")

    def _log_attempt(self, job: Job, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.warning(
            "webhook for job %s failed (%s), attempt %d of %d",
            job.id,
            error,
            state.attempt_number,
            self.max_attempts,
        )

    async def close(self) -> None:
        for task in list(self.pending):
            task.cancel()
        await self.client.aclose()
