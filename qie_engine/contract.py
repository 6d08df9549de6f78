"""The tensor contract shared by every model in the repository (see docs/tensor-contract.md)."""

from __future__ import annotations

import json
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

# Input tensor names. All but DESCRIBE are TYPE_STRING (bytes) in config.pbtxt. IMAGES and
# PROMPT are marked optional there only so a DESCRIBE request can omit them.
INPUT_IMAGES = "IMAGES"  # dims [-1]: 1..max_images encoded images (JPEG, PNG or WebP)
INPUT_PROMPT = "PROMPT"  # dims [1]: UTF-8 instruction
INPUT_NEGATIVE_PROMPT = "NEGATIVE_PROMPT"  # dims [1], optional
INPUT_OPTIONS = "OPTIONS"  # dims [1], optional: JSON object matching EditOptions
INPUT_DESCRIBE = "DESCRIBE"  # TYPE_BOOL dims [1], optional: answer with the model's facts only

# Output tensor names.
OUTPUT_EVENT = "EVENT"  # dims [1]: JSON, a progress event or the final result metadata
OUTPUT_IMAGE = "IMAGE"  # dims [1]: the encoded edited image, only in the final response

MAX_SEED = 2**32 - 1


class OutputFormat(str, Enum):
    PNG = "png"
    WEBP = "webp"
    JPEG = "jpeg"


class Preset(str, Enum):
    FAST = "fast"
    BALANCED = "balanced"
    QUALITY = "quality"


class EditOptions(BaseModel):
    """Generation options; every field is optional and falls back to the model's defaults."""

    model_config = ConfigDict(extra="forbid", use_enum_values=False)

    preset: Preset | None = Field(
        None,
        description="fast (Lightning, few steps, no true CFG), balanced (quality's schedule with "
        "step caching) or quality (the model card's 50 steps with true CFG)",
    )
    steps: Annotated[int, Field(ge=1, le=100, strict=True)] | None = Field(
        None, description="Denoising steps; overrides the preset."
    )
    true_cfg_scale: Annotated[float, Field(ge=1.0, le=20.0)] | None = Field(
        None, description="True classifier-free guidance scale; 1 disables it."
    )
    seed: Annotated[int, Field(ge=0, le=MAX_SEED, strict=True)] | None = Field(
        None, description="Random seed; a random one is chosen and reported when absent."
    )
    output_format: OutputFormat = Field(OutputFormat.PNG, description="png, webp or jpeg")
    width: Annotated[int, Field(ge=64, le=2048, strict=True)] | None = Field(
        None, description="Output width, rounded down to a multiple of 16."
    )
    height: Annotated[int, Field(ge=64, le=2048, strict=True)] | None = Field(
        None, description="Output height, rounded down to a multiple of 16."
    )


class ProgressEvent(BaseModel):
    type: Literal["progress"] = "progress"
    step: int
    total: int
    elapsed_s: float
    message: str = ""


class ResultMeta(BaseModel):
    """Metadata of the final response, sent beside the IMAGE tensor."""

    type: Literal["result"] = "result"
    model: str
    seed: int | None
    steps: int
    width: int
    height: int
    format: OutputFormat
    random_weights: bool = Field(
        description="True when the weights are random: pixels mean nothing."
    )
    timings: dict[str, float] = Field(default_factory=dict)
    operations: list[str] = Field(default_factory=list)
    preset: Preset | None = Field(None, description="The preset the edit ran (Qwen models).")
    cached_steps: int = Field(
        0, description="Denoising steps served from the step cache instead of a full pass."
    )


def parse_options(raw: bytes | str | None) -> EditOptions:
    """Parse the OPTIONS tensor; raises ValueError with the offending fields named."""
    if raw is None or raw in (b"", ""):
        return EditOptions()
    try:
        data: Any = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"OPTIONS is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("OPTIONS must be a JSON object")
    try:
        return EditOptions.model_validate(data)
    except ValidationError as exc:
        raise ValueError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming each bad field and why."""
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "options"
        parts.append(f"{field}: {err['msg']}")
    return "invalid options: " + "; ".join(parts)
