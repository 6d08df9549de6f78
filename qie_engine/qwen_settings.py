"""The Qwen model's settings: plain data, importable without torch (model_config reads them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from qie_engine.contract import Preset
from qie_engine.edit_request import RequestLimits
from qie_engine.presets import DEFAULT_PRESET, PRESETS

OffloadMode = Literal["none", "model", "sequential"]
QuantizationMode = Literal["none", "fp8", "int8", "nf4"]
OFFLOAD_MODES: tuple[OffloadMode, ...] = ("none", "model", "sequential")
QUANTIZATION_MODES: tuple[QuantizationMode, ...] = ("none", "fp8", "int8", "nf4")


@dataclass(frozen=True)
class QwenSettings:
    """Every knob of the Qwen model; each one is a config.pbtxt parameter."""

    model_id: str
    # The hub commit (or tag, or branch) MODEL_ID is read at; None: whatever main is now.
    model_revision: str | None = None
    device: str = "auto"
    # The Lightning LoRA for fast: None picks the one made for the model family on the hub
    # (downloaded once into HF_HOME); a local file or folder, or a hub "owner/repo/file", wins.
    lora_path: str | None = None
    lora_revision: str | None = None  # the same pin for a LoRA read from the hub
    fast_steps: int = 8  # 8 or 4: which Lightning LoRA, and fast's step count
    cpu_offload: OffloadMode = "none"
    quantization: QuantizationMode = "none"
    attention_backend: str | None = None
    compile_blocks: bool = False
    # Cond and uncond in one batch-2 transformer call; off until a GPU shows it pays.
    batched_cfg: bool = False
    presets: tuple[Preset, ...] = tuple(PRESETS)
    default_preset: Preset = DEFAULT_PRESET
    warmup: bool = True
    limits: RequestLimits = field(default_factory=RequestLimits)
