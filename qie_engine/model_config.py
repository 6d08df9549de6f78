"""Reading a model's config.pbtxt parameters (with environment overrides) into engine settings."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from qie_engine.contract import Preset
from qie_engine.edit_request import DEFAULT_MAX_PROMPT_CHARS, RequestLimits
from qie_engine.errors import EngineError
from qie_engine.image_codec import ImageLimits
from qie_engine.qwen_settings import OffloadMode, QwenSettings

# Parameters an operator may override with an environment variable of the same name.
OVERRIDABLE = (
    "MODEL_ID",
    "DEVICE",
    "LORA_PATH",
    "CPU_OFFLOAD",
    "ATTENTION_BACKEND",
    "COMPILE_BLOCKS",
    "DEFAULT_PRESET",
    "DEV_CONDITION_PIXELS",
    "WARMUP",
    "MAX_IMAGE_BYTES",
    "MAX_PIXELS",
    "MAX_PROMPT_CHARS",
)


def read_parameters(
    model_config: str | Mapping[str, Any], environ: Mapping[str, str]
) -> dict[str, str]:
    """config.pbtxt `parameters`, then the environment on top for the keys in OVERRIDABLE."""
    config = json.loads(model_config) if isinstance(model_config, str) else model_config
    params = {
        key: str(value.get("string_value", ""))
        for key, value in config.get("parameters", {}).items()
    }
    for key in OVERRIDABLE:
        if environ.get(key):
            params[key] = environ[key]
    return params


def _int(params: Mapping[str, str], key: str, default: int) -> int:
    raw = params.get(key, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise EngineError(f"parameter {key} must be an integer, got {raw!r}") from None
    if value <= 0:
        raise EngineError(f"parameter {key} must be positive, got {value}")
    return value


def _bool(params: Mapping[str, str], key: str, default: bool) -> bool:
    raw = params.get(key, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise EngineError(f"parameter {key} must be true or false, got {raw!r}")


def _choice(params: Mapping[str, str], key: str, choices: tuple[str, ...], default: str) -> str:
    raw = params.get(key, "").strip().lower() or default
    if raw not in choices:
        raise EngineError(f"parameter {key} must be one of {', '.join(choices)}; got {raw!r}")
    return raw


def request_limits(params: Mapping[str, str], max_images: int = 1) -> RequestLimits:
    return RequestLimits(
        image=ImageLimits(
            max_bytes=_int(params, "MAX_IMAGE_BYTES", ImageLimits.max_bytes),
            max_pixels=_int(params, "MAX_PIXELS", ImageLimits.max_pixels),
        ),
        max_prompt_chars=_int(params, "MAX_PROMPT_CHARS", DEFAULT_MAX_PROMPT_CHARS),
        max_images=max_images,
    )


def qwen_settings(params: Mapping[str, str]) -> QwenSettings:
    model_id = params.get("MODEL_ID", "").strip()
    if not model_id:
        raise EngineError("MODEL_ID is not set: give a Hugging Face repo id or a local folder")
    offload: OffloadMode = _choice(  # type: ignore[assignment]
        params, "CPU_OFFLOAD", ("none", "model", "sequential"), "none"
    )
    condition_pixels = params.get("DEV_CONDITION_PIXELS", "").strip()
    return QwenSettings(
        model_id=model_id,
        device=_choice(params, "DEVICE", ("auto", "cuda", "cpu"), "auto"),
        lora_path=params.get("LORA_PATH", "").strip() or None,
        cpu_offload=offload,
        attention_backend=params.get("ATTENTION_BACKEND", "").strip() or None,
        compile_blocks=_bool(params, "COMPILE_BLOCKS", False),
        default_preset=Preset(_choice(params, "DEFAULT_PRESET", ("quality", "fast"), "quality")),
        dev_condition_pixels=_int(params, "DEV_CONDITION_PIXELS", 1) if condition_pixels else None,
        warmup=_bool(params, "WARMUP", True),
        limits=request_limits(params),
    )
