"""Reading a model's config.pbtxt parameters (with environment overrides) into engine settings."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from qie_engine import limits
from qie_engine.contract import Preset
from qie_engine.edit_request import RequestLimits
from qie_engine.errors import EngineError
from qie_engine.image_codec import ImageLimits
from qie_engine.presets import DEFAULT_PRESET, FAST_STEP_CHOICES, PRESETS, preset_names
from qie_engine.qwen_settings import (
    OFFLOAD_MODES,
    QUANTIZATION_MODES,
    OffloadMode,
    QuantizationMode,
    QwenSettings,
)

# Parameters an operator may override with an environment variable of the same name.
OVERRIDABLE = (
    "MODEL_ID",
    "MODEL_REVISION",
    "DEVICE",
    "LORA_PATH",
    "LORA_REVISION",
    "FAST_STEPS",
    "CPU_OFFLOAD",
    "QUANTIZATION",
    "ATTENTION_BACKEND",
    "COMPILE_BLOCKS",
    "BATCHED_CFG",
    "PRESETS",
    "DEFAULT_PRESET",
    "WARMUP",
    *limits.SHARED,
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
            **{
                field: _int(params, name, limits.default(name))
                for name, field in limits.IMAGE_LIMITS.items()
            }
        ),
        max_prompt_chars=_int(params, "MAX_PROMPT_CHARS", limits.MAX_PROMPT_CHARS),
        max_images=max_images,
    )


def _presets(params: Mapping[str, str]) -> tuple[Preset, ...]:
    raw = params.get("PRESETS", "").strip().lower()
    if not raw:
        return tuple(PRESETS)
    names = [name.strip() for name in raw.split(",") if name.strip()]
    unknown = [name for name in names if name not in preset_names()]
    if unknown or not names:
        raise EngineError(
            f"parameter PRESETS must list some of {', '.join(preset_names())}; got {raw!r}"
        )
    return tuple(Preset(name) for name in dict.fromkeys(names))


def _default_preset(params: Mapping[str, str], served: tuple[Preset, ...]) -> Preset:
    fallback = DEFAULT_PRESET if DEFAULT_PRESET in served else served[0]
    preset = Preset(_choice(params, "DEFAULT_PRESET", preset_names(), fallback.value))
    if preset not in served:
        raise EngineError(
            f"parameter DEFAULT_PRESET is {preset.value!r}, which PRESETS "
            f"({', '.join(p.value for p in served)}) does not serve"
        )
    return preset


def _fast_steps(params: Mapping[str, str]) -> int:
    steps = _int(params, "FAST_STEPS", FAST_STEP_CHOICES[0])
    if steps not in FAST_STEP_CHOICES:
        choices = " or ".join(str(c) for c in FAST_STEP_CHOICES)
        raise EngineError(
            f"parameter FAST_STEPS must be {choices} (the Lightning LoRAs' step counts); "
            f"got {steps}"
        )
    return steps


def qwen_settings(params: Mapping[str, str]) -> QwenSettings:
    model_id = params.get("MODEL_ID", "").strip()
    if not model_id:
        raise EngineError("MODEL_ID is not set: give a Hugging Face repo id or a local folder")
    offload: OffloadMode = _choice(params, "CPU_OFFLOAD", OFFLOAD_MODES, "none")  # type: ignore[assignment]
    quantization: QuantizationMode = _choice(  # type: ignore[assignment]
        params, "QUANTIZATION", QUANTIZATION_MODES, "none"
    )
    served = _presets(params)
    return QwenSettings(
        model_id=model_id,
        model_revision=params.get("MODEL_REVISION", "").strip() or None,
        device=_choice(params, "DEVICE", ("auto", "cuda", "cpu"), "auto"),
        lora_path=params.get("LORA_PATH", "").strip() or None,
        lora_revision=params.get("LORA_REVISION", "").strip() or None,
        fast_steps=_fast_steps(params),
        cpu_offload=offload,
        quantization=quantization,
        attention_backend=params.get("ATTENTION_BACKEND", "").strip() or None,
        compile_blocks=_bool(params, "COMPILE_BLOCKS", False),
        batched_cfg=_bool(params, "BATCHED_CFG", False),
        presets=served,
        default_preset=_default_preset(params, served),
        warmup=_bool(params, "WARMUP", True),
        limits=request_limits(params),
    )
