"""Request options and response bodies of the HTTP API (they shape openapi.json)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from qie_engine.contract import EditOptions, LocalEdit, describe_contract
from qie_engine.presets import QUALITY_ALIASES as QUALITY_PRESETS

# A deadline under a second cannot be met by any edit: it is refused, not answered 504.
MIN_DEADLINE_S, MAX_DEADLINE_S = 1.0, 3600.0


class RequestOptions(EditOptions):
    """EditOptions plus the seed's `quality` and `timeout` (seconds)."""

    quality: Literal["high", "quality", "standard", "medium", "low", "fast"] | None = Field(
        default=None,
        description="The seed's quality knob, mapped onto a preset: "
        + ", ".join(f"{word} → {preset.value}" for word, preset in QUALITY_PRESETS.items()),
    )
    timeout: Annotated[float, Field(ge=MIN_DEADLINE_S, le=MAX_DEADLINE_S)] | None = Field(
        default=None,
        description="Deadline in seconds (1 to 3600); the edit is stopped when it passes (504).",
    )

    def edit_options(self) -> EditOptions:
        data = self.model_dump(exclude={"quality", "timeout"}, exclude_none=True)
        if self.preset is None and self.quality is not None:
            data["preset"] = QUALITY_PRESETS[self.quality]
        return EditOptions.model_validate(data)


class ErrorBody(BaseModel):
    code: str = Field(description="Stable machine-readable reason, e.g. image_too_large")
    message: str = Field(description="What went wrong and what to do about it")
    detail: Any = None


class ProcessResponse(BaseModel):
    """The seed's response JSON, plus what a client needs to reproduce the edit."""

    success: bool
    processed_image: str = Field(description="The edited image, base64")
    processing_time: float = Field(description="Seconds from acceptance to result")
    model_used: str
    message: str
    job_id: str
    image_id: str | None = None
    seed: int | None = None
    steps: int
    width: int
    height: int
    format: str
    mime_type: str
    random_weights: bool
    operations: list[str] = Field(default_factory=list)
    local: LocalEdit | None = Field(
        None, description="A masked or region edit: the crop and the size the model saw"
    )


class JobAccepted(BaseModel):
    job_id: str
    status: str
    status_url: str
    events_url: str
    result_url: str
    cancel_url: str


class JobProgress(BaseModel):
    step: int
    total: int


class JobView(BaseModel):
    job_id: str
    status: Literal["pending", "processing", "completed", "failed", "cancelled"]
    model: str
    image_id: str | None = None
    progress: JobProgress
    queue_position: int | None = Field(description="1-based place in the queue while pending")
    eta_s: float | None = Field(description="Estimated seconds until done")
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    error: ErrorBody | None = None
    result: dict[str, Any] | None = None


BatchStatusName = Literal["pending", "processing", "completed", "partial", "failed", "cancelled"]


class BatchAccepted(BaseModel):
    batch_id: str
    job_ids: list[str] = Field(description="One job per item, in the order of the uploads")
    status: BatchStatusName
    total: int
    status_url: str
    events_url: str
    result_url: str
    cancel_url: str


class BatchJob(BaseModel):
    """One item of a batch: its input, its entry in the zip, and its job's state."""

    index: int
    job_id: str
    name: str = Field(description="The input's file name, cleaned of paths and control characters")
    file: str = Field(description="The result's name in the batch's zip")
    seed: int | None = Field(None, description="The seed this variation asked for")
    status: Literal["pending", "processing", "completed", "failed", "cancelled"]
    progress: JobProgress
    error: ErrorBody | None = None
    result: dict[str, Any] | None = None


class BatchView(BaseModel):
    batch_id: str
    kind: Literal["images", "variations"] = Field(
        description="images: one prompt over several images; variations: one image, N seeds"
    )
    model: str
    status: BatchStatusName = Field(
        description="pending (none started), processing, then completed (all), partial (some), "
        "failed (none completed) or cancelled (none completed, some cancelled)"
    )
    total: int
    pending: int
    processing: int
    completed: int
    failed: int
    cancelled: int
    created_at: float
    jobs: list[BatchJob]


class HealthView(BaseModel):
    status: Literal["STARTING", "READY", "BUSY", "UNHEALTHY"]
    models: dict[str, bool]
    triton: dict[str, bool]
    queues: dict[str, dict[str, int]]
    auth: bool
    trouble: dict[str, str] = Field(
        default_factory=dict, description="Runner loops failing now, and why (UNHEALTHY)"
    )


class ModelsView(BaseModel):
    default_model: str
    aliases: dict[str, str]
    models: list[dict[str, Any]]
    tensor_contract: dict[str, Any]


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the error statuses a route can answer."""
    return {status: {"model": ErrorBody} for status in statuses}


TENSOR_CONTRACT = describe_contract()
