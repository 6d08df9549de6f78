"""What the store keeps of a batch: its items, each one job. Written once, when it is accepted;
its state is never stored, it is read off its jobs (gateway/batches/progress.py)."""

from __future__ import annotations

import hashlib
from typing import Literal

from pydantic import BaseModel, Field

BatchKind = Literal["images", "variations"]


class BatchItem(BaseModel):
    job_id: str
    name: str = Field(description="The input's file name, cleaned of paths and control characters")
    file: str = Field(description="The result's name in the batch's zip")
    seed: int | None = Field(None, description="The seed this variation asked for")


class Batch(BaseModel):
    id: str
    owner: str
    model: str
    kind: BatchKind
    created_at: float
    items: list[BatchItem]
    request_hash: str | None = None  # set when an Idempotency-Key named the batch

    @property
    def job_ids(self) -> list[str]:
        return [item.job_id for item in self.items]


def idempotent_batch_id(owner: str, key: str) -> str:
    """The batch an Idempotency-Key names: the same key of the same owner, the same batch."""
    return hashlib.sha256(f"batch\0{owner}\0{key}".encode()).hexdigest()[:32]
