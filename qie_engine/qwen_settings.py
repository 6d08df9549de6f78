"""The Qwen model's settings: plain data, importable without torch (model_config reads them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from qie_engine.contract import Preset
from qie_engine.edit_request import RequestLimits

OffloadMode = Literal["none", "model", "sequential"]


@dataclass(frozen=True)
class QwenSettings:
    """Every knob of the Qwen model; each one is a config.pbtxt parameter."""

    model_id: str
    device: str = "auto"
    lora_path: str | None = None
    cpu_offload: OffloadMode = "none"
    attention_backend: str | None = None
    compile_blocks: bool = False
    default_preset: Preset = Preset.QUALITY
    # Dev model only (ignored for real weights): caps the ~1 MP area the edit pipelines resize
    # every condition image to, which dominates a tiny model's CPU time.
    dev_condition_pixels: int | None = None
    warmup: bool = True
    limits: RequestLimits = field(default_factory=RequestLimits)
