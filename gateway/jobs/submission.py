"""What the HTTP forms hand to admission: a checked edit ready to queue, or a batch item refused at
the door."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.errors import ErrorCode
from gateway.store.job_models import EditInputs


@dataclass
class Submission:
    """A validated edit request, ready to queue."""

    owner: str
    request: EditInputs
    deadline_s: float
    respond_async: bool = False
    idempotency_key: str | None = None
    request_hash: str | None = None
    callback_url: str | None = None
    image_id: str | None = None


@dataclass
class Refusal:
    """A batch item refused at the door (a bad image): it becomes a job that failed at once, so
    that it fails its own item and not the whole batch."""

    owner: str
    model: str
    request_id: str
    code: ErrorCode
    message: str
    idempotency_key: str | None = None
    request_hash: str | None = None
