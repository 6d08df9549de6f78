"""Signed completion callbacks, retried with backoff; a failing target never fails the job."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from gateway.errors import Unprocessable

if TYPE_CHECKING:
    from gateway.jobs import Job

log = logging.getLogger(__name__)
SIGNATURE_HEADER = "X-QIE-Signature"
TIMESTAMP_HEADER = "X-QIE-Timestamp"


def check_callback_url(url: str) -> str:
    """Only absolute http(s) URLs; anything else is refused before the job exists."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Unprocessable(
            "callback_url must be an absolute http:// or https:// URL",
            code="invalid_callback_url",
            detail={"field": "callback_url"},
        )
    return url


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """HMAC-SHA256 over "<timestamp>.<body>", hex, as `sha256=<hex>`."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def payload(job: Job) -> dict[str, Any]:
    body: dict[str, Any] = {
        "job_id": job.id,
        "status": job.status.value,
        "model": job.model,
        "image_id": job.image_id,
        "result_url": f"/jobs/{job.id}/result" if job.status.value == "completed" else None,
        "result": job.result_meta,
        "error": {"code": job.error_code, "message": job.error_message} if job.error_code else None,
    }
    return body


class WebhookSender:
    def __init__(self, secret: str, max_attempts: int = 5, backoff_s: float = 1.0) -> None:
        self.secret = secret
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        # Redirects are never followed: a callback must not be bounced to another host.
        self.client = httpx.AsyncClient(timeout=10.0, follow_redirects=False)
        self.pending: set[asyncio.Task[bool]] = set()

    def schedule(self, job: Job) -> None:
        task = asyncio.create_task(self.deliver(job))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def deliver(self, job: Job) -> bool:
        """POST the job's final state; True once a 2xx answer came back."""
        assert job.callback_url
        body = json.dumps(payload(job)).encode()
        for attempt in range(1, self.max_attempts + 1):
            timestamp = str(int(time.time()))
            headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: timestamp}
            if self.secret:
                headers[SIGNATURE_HEADER] = sign(self.secret, timestamp, body)
            try:
                response = await self.client.post(job.callback_url, content=body, headers=headers)
                if 200 <= response.status_code < 300:
                    return True
                reason = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                reason = type(exc).__name__
            log.warning(
                "webhook for job %s failed (%s), attempt %d of %d",
                job.id,
                reason,
                attempt,
                self.max_attempts,
            )
            if attempt < self.max_attempts:
                await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
        return False

    async def close(self) -> None:
        for task in list(self.pending):
            task.cancel()
        await self.client.aclose()
