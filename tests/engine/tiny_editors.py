"""The tiny random-weight dev models, and quick settings for editors loaded from them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from qie_engine.qwen_settings import QwenSettings
from qie_engine.tiny_model import RANDOM_WEIGHTS_KEY, save_tiny_pipeline

ROOT = Path(__file__).resolve().parents[2]
DEV_PIXELS = 65536  # the condition-area cap the dev server uses; keeps tiny-model steps cheap
# Small and quick: 2 steps, no true CFG, a 64x64 output.
SMALL: dict[str, Any] = {"steps": 2, "seed": 0, "true_cfg_scale": 1.0, "width": 64, "height": 64}


def dev_model(folder: str, variant: str, scratch: Path) -> Path:
    """The model `make dev-model` built, or a fresh one in `scratch` on a bare checkout."""
    built = ROOT / "models" / folder
    if (built / "model_index.json").is_file():
        return built
    return save_tiny_pipeline(scratch / folder, variant=variant)


def copy_model(source: Path, target: Path, *, as_real_weights: bool = False) -> Path:
    """Copy a pipeline folder; `as_real_weights` drops the random-weights mark."""
    shutil.copytree(source, target)
    if as_real_weights:
        index_path = target / "model_index.json"
        index = json.loads(index_path.read_text())
        del index[RANDOM_WEIGHTS_KEY]
        index_path.write_text(json.dumps(index))
    return target


def dev_settings(model_dir: Path, **overrides: Any) -> QwenSettings:
    """Settings for a quick tiny-model editor: no warm-up, capped condition area."""
    values: dict[str, Any] = {
        "model_id": str(model_dir),
        "warmup": False,
        "dev_condition_pixels": DEV_PIXELS,
    }
    values.update(overrides)
    return QwenSettings(**values)
