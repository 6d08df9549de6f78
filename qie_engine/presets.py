"""The Qwen model's presets, written once: the editor, /models and the benchmarks read them here.

Plain data, importable without torch (model_config and the gateway read it).

Expected seconds per edit on one H100 at about 1 MP come from published figures (measured by
others, see README.md "Presets"), until our own GPU benchmark replaces them:

- quality: stock diffusers, bf16, 50 steps with true CFG: 46.8 s in the transformer alone
  (ModelTC/LightX2V, examples/qwen_image), i.e. about 0.47 s per transformer pass. 2509 and 2511
  run the 40 steps of their model cards: about four fifths of the 50-step figures.
- balanced: the same schedule with cache-dit's DBCache + TaylorSeer: cache-dit's own tables give
  1.6-1.9x at 50 steps with CFG (46.8 s / 1.9 .. 1.6); vLLM-Omni measured 51.5 -> 21.6 s on an H200.
- fast: 8 transformer passes with no CFG, at the 0.47 s per pass above, plus the text encoder
  and the VAE; LightX2V publishes 1.1-1.3 s at 4 steps on its own engine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from qie_engine.contract import Preset

SchedulerKind = Literal["default", "lightning"]


@dataclass(frozen=True)
class PresetSpec:
    """What one preset runs, and what it is expected to cost on an H100."""

    preset: Preset
    steps: int  # quality and balanced: the first Qwen-Image-Edit's; see preset_steps
    true_cfg_scale: float
    scheduler: SchedulerKind
    lightning_lora: bool  # the Lightning LoRA is active only for this preset's requests
    step_cache: bool  # cache-dit skips transformer work on steps it judges redundant
    expected_h100_s: str
    source: str
    summary: str

    def describe(self) -> dict[str, object]:
        """The facts /models shows for this preset."""
        return {
            "steps": self.steps,
            "true_cfg_scale": self.true_cfg_scale,
            "scheduler": self.scheduler,
            "lightning_lora": self.lightning_lora,
            "step_cache": self.step_cache,
            "expected_h100_s": self.expected_h100_s,
            "summary": self.summary,
        }


QUALITY = PresetSpec(
    preset=Preset.QUALITY,
    steps=50,
    true_cfg_scale=4.0,
    scheduler="default",
    lightning_lora=False,
    step_cache=False,
    expected_h100_s="about 47",
    source="ModelTC/LightX2V examples/qwen_image: 46.8 s (stock diffusers, bf16, H100)",
    summary="the model card: 50 steps (40 for 2509 and 2511), true CFG 4",
)
BALANCED = PresetSpec(
    preset=Preset.BALANCED,
    steps=50,
    true_cfg_scale=4.0,
    scheduler="default",
    lightning_lora=False,
    step_cache=True,
    expected_h100_s="25-29",
    source="46.8 s / 1.6-1.9x (cache-dit's tables, 50 steps with CFG); "
    "vLLM-Omni + cache-dit on an H200: 51.5 -> 21.6 s",
    summary="the model card's schedule with cache-dit step caching (DBCache + TaylorSeer)",
)
FAST = PresetSpec(
    preset=Preset.FAST,
    steps=8,
    true_cfg_scale=1.0,
    scheduler="lightning",
    lightning_lora=True,
    step_cache=False,
    expected_h100_s="about 4-5",
    source="8 of the 100 transformer passes of the 46.8 s above, plus text encoder and VAE; "
    "LightX2V: 1.1-1.3 s at 4 steps",
    summary="Lightning LoRA: 8 steps (4 with FAST_STEPS=4), no true CFG",
)
PRESETS: dict[Preset, PresetSpec] = {spec.preset: spec for spec in (QUALITY, BALANCED, FAST)}

# Only fast is expected under both of the seed's budgets on one H100 (under 30 s for a typical
# edit, under 15 s on average); quality and balanced are there for those who ask for them.
DEFAULT_PRESET = Preset.FAST
FAST_STEP_CHOICES = (8, 4)

# Each model family's own step count, from its model card's diffusers example (all three with
# true CFG 4 and a blank negative prompt): quality and balanced run it.
CARD_STEPS: dict[str, int] = {"edit": 50, "2509": 40, "2511": 40}


def preset_steps(spec: PresetSpec, family: str, fast_steps: int) -> int:
    """The steps a preset runs on a model of this family (model_folder.ModelFolder.family)."""
    if spec.preset is Preset.FAST:
        return fast_steps
    return CARD_STEPS[family]


# The seed's `options.quality` words, mapped onto the presets.
QUALITY_ALIASES: dict[str, Preset] = {
    "high": Preset.QUALITY,
    "quality": Preset.QUALITY,
    "standard": Preset.BALANCED,
    "medium": Preset.BALANCED,
    "low": Preset.FAST,
    "fast": Preset.FAST,
}

# FlowMatchEulerDiscreteScheduler settings the Lightning LoRAs are distilled for (their model
# cards): dynamic shifting with base_shift = max_shift = ln 3 and an exponential time shift.
LIGHTNING_SCHEDULER: dict[str, object] = {
    "base_image_seq_len": 256,
    "base_shift": math.log(3),
    "max_image_seq_len": 8192,
    "max_shift": math.log(3),
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "shift_terminal": None,
    "time_shift_type": "exponential",
    "use_dynamic_shifting": True,
}

# The Lightning LoRA of each model family on the Hugging Face hub: (repo, weight file pattern).
LIGHTNING_LORAS: dict[str, tuple[str, str]] = {
    "2511": (
        "lightx2v/Qwen-Image-Edit-2511-Lightning",
        "Qwen-Image-Edit-2511-Lightning-{steps}steps-V1.0-bf16.safetensors",
    ),
    "2509": (
        "lightx2v/Qwen-Image-Lightning",
        "Qwen-Image-Edit-2509/Qwen-Image-Edit-2509-Lightning-{steps}steps-V1.0-bf16.safetensors",
    ),
    "edit": (
        "lightx2v/Qwen-Image-Lightning",
        "Qwen-Image-Edit-Lightning-{steps}steps-V1.0-bf16.safetensors",
    ),
}

# cache-dit's documented DBCache + TaylorSeer settings (its examples/configs/cache.yaml, the
# config SGLang's cache-dit guide applies to Qwen-Image): Fn 1, Bn 0, warm-up 8 steps computing
# every other one, at most 2 cached steps in a row, residual threshold 0.12, TaylorSeer order 1.
STEP_CACHE: dict[str, float | int] = {
    "Fn_compute_blocks": 1,
    "Bn_compute_blocks": 0,
    "max_warmup_steps": 8,
    "warmup_interval": 2,
    "max_cached_steps": -1,
    "max_continuous_cached_steps": 2,
    "residual_diff_threshold": 0.12,
}
TAYLORSEER_ORDER = 1


def preset_names() -> tuple[str, ...]:
    return tuple(p.value for p in PRESETS)
