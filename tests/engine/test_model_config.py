"""config.pbtxt parameters plus environment overrides, into checked engine settings."""

from __future__ import annotations

import json
from typing import Any

import pytest

from qie_engine.contract import Preset
from qie_engine.errors import EngineError
from qie_engine.model_config import OVERRIDABLE, qwen_settings, read_parameters, request_limits


def triton_config(**parameters: str) -> dict[str, Any]:
    """The shape of args["model_config"] as Triton hands it to initialize()."""
    return {
        "name": "qwen_image_edit",
        "parameters": {key: {"string_value": value} for key, value in parameters.items()},
    }


def test_parameters_are_read_from_the_json_triton_passes() -> None:
    config = triton_config(MODEL_ID="Qwen/Qwen-Image-Edit-2511", WARMUP="true")
    assert read_parameters(json.dumps(config), {}) == {
        "MODEL_ID": "Qwen/Qwen-Image-Edit-2511",
        "WARMUP": "true",
    }
    assert read_parameters(config, {}) == read_parameters(json.dumps(config), {})


def test_environment_overrides_win_over_config_parameters() -> None:
    config = triton_config(MODEL_ID="Qwen/Qwen-Image-Edit-2511", DEVICE="auto")
    params = read_parameters(config, {"MODEL_ID": "/models/local", "COMPILE_BLOCKS": "true"})
    assert params["MODEL_ID"] == "/models/local"
    assert params["DEVICE"] == "auto"
    assert params["COMPILE_BLOCKS"] == "true"  # an override needs no config entry


def test_empty_environment_variable_does_not_override() -> None:
    params = read_parameters(triton_config(MODEL_ID="Qwen/Qwen-Image-Edit-2511"), {"MODEL_ID": ""})
    assert params["MODEL_ID"] == "Qwen/Qwen-Image-Edit-2511"


def test_only_known_parameters_are_taken_from_the_environment() -> None:
    params = read_parameters(triton_config(SECRET="config"), {"SECRET": "env", "PATH": "/bin"})
    assert params == {"SECRET": "config"}
    assert "PATH" not in OVERRIDABLE


def test_settings_parse_every_knob() -> None:
    settings = qwen_settings(
        {
            "MODEL_ID": " /models/qwen ",
            "DEVICE": "CPU",
            "LORA_PATH": "/loras/lightning.safetensors",
            "FAST_STEPS": "4",
            "CPU_OFFLOAD": "sequential",
            "QUANTIZATION": "NF4",
            "ATTENTION_BACKEND": "native",
            "COMPILE_BLOCKS": "yes",
            "BATCHED_CFG": "on",
            "PRESETS": "quality, balanced",
            "DEFAULT_PRESET": "Balanced",
            "WARMUP": "off",
            "MAX_IMAGE_BYTES": "1000",
            "MAX_PIXELS": "2000",
            "MAX_PROMPT_CHARS": "300",
        }
    )
    assert settings.model_id == "/models/qwen"
    assert settings.device == "cpu"
    assert settings.lora_path == "/loras/lightning.safetensors"
    assert settings.fast_steps == 4
    assert settings.cpu_offload == "sequential"
    assert settings.quantization == "nf4"
    assert settings.attention_backend == "native"
    assert settings.compile_blocks is True
    assert settings.batched_cfg is True
    assert settings.presets == (Preset.QUALITY, Preset.BALANCED)
    assert settings.default_preset is Preset.BALANCED
    assert settings.warmup is False
    assert settings.limits.image.max_bytes == 1000
    assert settings.limits.image.max_pixels == 2000
    assert settings.limits.max_prompt_chars == 300


def test_blank_parameters_fall_back_to_the_defaults() -> None:
    settings = qwen_settings(
        {"MODEL_ID": "Qwen/Qwen-Image-Edit-2511", "LORA_PATH": " ", "PRESETS": ""}
    )
    assert settings.device == "auto"
    assert settings.lora_path is None
    assert settings.cpu_offload == "none"
    assert settings.attention_backend is None
    assert settings.compile_blocks is False
    assert settings.fast_steps == 8
    assert settings.quantization == "none"
    assert settings.batched_cfg is False
    assert settings.presets == (Preset.QUALITY, Preset.BALANCED, Preset.FAST)
    assert settings.default_preset is Preset.FAST
    assert settings.warmup is True
    assert settings.limits.image.max_pixels == 4096 * 4096


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("COMPILE_BLOCKS", "maybe"),
        ("WARMUP", "2"),
        ("CPU_OFFLOAD", "gpu"),
        ("DEVICE", "tpu"),
        ("DEFAULT_PRESET", "turbo"),
        ("MAX_PIXELS", "lots"),
        ("MAX_PIXELS", "0"),
        ("MAX_IMAGE_BYTES", "-5"),
        ("MAX_PROMPT_CHARS", "1.5"),
        ("QUANTIZATION", "fp4"),
        ("BATCHED_CFG", "sometimes"),
        ("FAST_STEPS", "6"),
        ("FAST_STEPS", "four"),
        ("PRESETS", "quality,turbo"),
        ("PRESETS", ","),
    ],
)
def test_bad_value_is_refused_naming_the_parameter(key: str, value: str) -> None:
    with pytest.raises(EngineError) as info:
        qwen_settings({"MODEL_ID": "Qwen/Qwen-Image-Edit-2511", key: value})
    assert key in str(info.value)
    assert value.lower() in str(info.value).lower()


def test_default_preset_must_be_one_the_instance_serves() -> None:
    with pytest.raises(EngineError, match="DEFAULT_PRESET is 'quality', which PRESETS"):
        qwen_settings({"MODEL_ID": "m", "PRESETS": "fast,balanced", "DEFAULT_PRESET": "quality"})


def test_without_fast_the_default_falls_back_to_the_first_served_preset() -> None:
    settings = qwen_settings({"MODEL_ID": "m", "PRESETS": "balanced,quality"})
    assert settings.default_preset is Preset.BALANCED


@pytest.mark.parametrize("params", [{}, {"MODEL_ID": ""}, {"MODEL_ID": "   "}])
def test_missing_model_id_is_refused(params: dict[str, str]) -> None:
    with pytest.raises(EngineError, match="MODEL_ID"):
        qwen_settings(params)


def test_request_limits_for_the_classic_model() -> None:
    limits = request_limits({"MAX_PIXELS": "100", "MAX_PROMPT_CHARS": "10"}, max_images=1)
    assert limits.image.max_pixels == 100
    assert limits.image.max_bytes == 20 * 1024 * 1024
    assert limits.max_prompt_chars == 10
    assert limits.max_images == 1
    with pytest.raises(EngineError, match="MAX_IMAGE_BYTES"):
        request_limits({"MAX_IMAGE_BYTES": "big"})
