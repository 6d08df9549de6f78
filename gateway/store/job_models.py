"""What the store keeps of a job: its fields, its events and the edit it asked for."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from pydantic import BaseModel


class JobStatus(str, Enum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})
TERMINAL_EVENTS = frozenset(s.value for s in TERMINAL_STATUSES)


class Job(BaseModel):
    id: str
    owner: str
    model: str
    status: JobStatus = JobStatus.PENDING
    request_id: str
    replica: str
    created_at: float
    deadline_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    attempts: int = 0
    progress_step: int = 0
    progress_total: int = 0
    error_code: str | None = None
    error_message: str | None = None
    result_meta: dict[str, Any] | None = None
    result_mime: str | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None
    callback_url: str | None = None
    image_id: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_STATUSES


class JobEvent(BaseModel):
    """One server-sent event of a job; ids start at 1 per job and only grow."""

    id: int
    event: str
    data: dict[str, Any]

    @property
    def final(self) -> bool:
        return self.event in TERMINAL_EVENTS


@dataclass(frozen=True)
class NewEvent:
    """An event about to be appended; the store numbers it."""

    event: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class EditInputs:
    """One edit as Triton tensors want it; images are the uploaded bytes, untouched.

    Kept with the job until it finishes, so that any replica can run it.
    """

    model: str
    images: list[bytes]
    prompt: str
    negative_prompt: str | None
    options_json: str
    request_id: str
    mask: bytes | None = None  # the first image's mask, as uploaded (a local edit)


class IdempotencyConflict(Exception):
    """The owner used this Idempotency-Key before, for a different request."""


JOB_ID_SHAPE = re.compile(r"[0-9a-f]{32}")


def new_job_id() -> str:
    """128 random bits as hex: unguessable, so a job id is no capability leak."""
    return secrets.token_hex(16)


def is_job_id(text: str) -> bool:
    """Whether `text` has the shape of a job (or batch) id; anything else names no job."""
    return JOB_ID_SHAPE.fullmatch(text) is not None
