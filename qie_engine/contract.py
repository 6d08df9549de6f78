"""The tensor contract shared by every model in the repository (see docs/tensor-contract.md)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

# Input tensor names.
INPUT_IMAGES = "IMAGES"
INPUT_PROMPT = "PROMPT"
INPUT_NEGATIVE_PROMPT = "NEGATIVE_PROMPT"
INPUT_OPTIONS = "OPTIONS"
INPUT_DESCRIBE = "DESCRIBE"
INPUT_MASK = "MASK"
# Output tensor names.
OUTPUT_EVENT = "EVENT"
OUTPUT_IMAGE = "IMAGE"


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of the contract, as config.pbtxt would declare it."""

    name: str
    data_type: Literal["TYPE_STRING", "TYPE_BOOL"]
    dims: tuple[int, ...]
    meaning: str
    optional: bool = False

    def config(self) -> dict[str, Any]:
        """The entry python_backend's auto_complete_config adds to the model's config."""
        entry: dict[str, Any] = {"name": self.name, "data_type": self.data_type}
        entry["dims"] = list(self.dims)
        return {**entry, "optional": True} if self.optional else entry

    def describe(self) -> str:
        wire = "BYTES" if self.data_type == "TYPE_STRING" else "BOOL"
        return f"{wire} {list(self.dims)}: {self.meaning}"


# Every input is optional to Triton, so that a DESCRIBE request may carry DESCRIBE alone; the
# model itself refuses an edit without IMAGES or PROMPT ([invalid_input]).
INPUTS = (
    TensorSpec(INPUT_IMAGES, "TYPE_STRING", (-1,), "encoded JPEG/PNG/WebP images", True),
    TensorSpec(INPUT_PROMPT, "TYPE_STRING", (1,), "UTF-8 instruction", True),
    TensorSpec(INPUT_NEGATIVE_PROMPT, "TYPE_STRING", (1,), "what to steer away from", True),
    TensorSpec(INPUT_OPTIONS, "TYPE_STRING", (1,), "JSON EditOptions (preset, steps, ...)", True),
    TensorSpec(INPUT_DESCRIBE, "TYPE_BOOL", (1,), "answer with the model's facts only", True),
    TensorSpec(
        INPUT_MASK,
        "TYPE_STRING",
        (1,),
        "encoded mask of the first image's size: white (or opaque) edits, black keeps",
        True,
    ),
)
OUTPUTS = (
    TensorSpec(OUTPUT_EVENT, "TYPE_STRING", (1,), "JSON progress or the result's metadata"),
    TensorSpec(OUTPUT_IMAGE, "TYPE_STRING", (1,), "the encoded result, final response only"),
)
# One request streams progress responses, then one final response: a decoupled model.
DECOUPLED = True


def auto_complete(config: Any) -> Any:
    """python_backend's `auto_complete_config`: the contract's tensors and transaction policy,
    so that config.pbtxt keeps only what Triton must read before the model loads."""
    config.set_max_batch_size(0)
    config.set_model_transaction_policy({"decoupled": DECOUPLED})
    for tensor in INPUTS:
        config.add_input(tensor.config())
    for tensor in OUTPUTS:
        config.add_output(tensor.config())
    return config


def describe_contract() -> dict[str, Any]:
    """The contract as /models shows it."""
    return {
        "doc": "docs/tensor-contract.md",
        "decoupled": DECOUPLED,
        "inputs": {tensor.name: tensor.describe() for tensor in INPUTS},
        "outputs": {tensor.name: tensor.describe() for tensor in OUTPUTS},
        "errors": "Triton errors whose message starts with [code]",
    }


MAX_SEED = 2**32 - 1


class OutputFormat(str, Enum):
    PNG = "png"
    WEBP = "webp"
    JPEG = "jpeg"


class OutputSize(str, Enum):
    MODEL = "model"
    INPUT = "input"


Pixels = Annotated[int, Field(ge=0, le=65535, strict=True)]


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
    region: tuple[Pixels, Pixels, Pixels, Pixels] | None = Field(
        None,
        description="x, y, width, height: edit only this rectangle of the (first) image, in its "
        "pixels after EXIF orientation; the rest is kept as it is, at full resolution. A "
        "rectangle MASK, for clients that cannot draw one.",
    )
    mask_padding: Annotated[int, Field(ge=0, le=4096, strict=True)] | None = Field(
        None,
        description="Context kept around the mask's box for the model to see, in the input's "
        "pixels; by default a quarter of the box's longer side, at least 32.",
    )
    mask_feather: Annotated[int, Field(ge=0, le=512, strict=True)] | None = Field(
        None,
        description="Width of the blend at the mask's edge, in the input's pixels; by default "
        "1 % of the image's shorter side, at least 4.",
    )
    output_size: OutputSize | None = Field(
        None,
        description="model (the default): the size the model edits at (about 1 MP for Qwen); "
        "input: the result resized to the input's size. A masked or region edit always keeps "
        "the input's.",
    )

    @model_validator(mode="after")
    def _one_size(self) -> EditOptions:
        if self.region is not None and (self.region[2] < 1 or self.region[3] < 1):
            raise ValueError("region: width and height must be at least 1")
        sized = self.width is not None or self.height is not None
        if sized and (self.region is not None or self.output_size is OutputSize.INPUT):
            raise ValueError(
                "width and height give the model's output size; they cannot be combined with a "
                "region or output_size=input, which keep the input's size"
            )
        return self


class ProgressEvent(BaseModel):
    type: Literal["progress"] = "progress"
    step: int
    total: int
    elapsed_s: float
    message: str = ""


class LocalEdit(BaseModel):
    """How a masked (or region) edit ran: the part of the image the model saw, and at what size."""

    crop: tuple[int, int, int, int] = Field(
        description="x, y, width, height of the crop in the input's pixels (after EXIF orientation)"
    )
    working_size: tuple[int, int] = Field(description="width, height the model edited the crop at")
    padding: int = Field(description="context kept around the mask's box, in the input's pixels")
    feather: int = Field(description="width of the blend at the mask's edge, in the input's pixels")


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
    local: LocalEdit | None = Field(
        None, description="A masked or region edit: the crop and the size the model saw."
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
