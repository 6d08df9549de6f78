"""A diffusers model folder: where it is, which pipeline it holds, and the dev model's stand-ins.

Torch-free: it reads JSON only. The dev model declares in its own model_index.json what it needs
to stay cheap on a CPU (DevStandIns); a real model's folder has no such key, so nothing there
changes diffusers' behaviour.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qie_engine.errors import EngineError

log = logging.getLogger(__name__)

PIPELINES = {"QwenImageEditPipeline": "edit", "QwenImageEditPlusPipeline": "plus"}
MAX_IMAGES = {"edit": 1, "plus": 3}
# Keys in model_index.json; diffusers ignores keys that start with "_".
RANDOM_WEIGHTS_KEY = "_qie_random_weights"
DEV_STAND_INS_KEY = "_qie_dev_stand_ins"


@dataclass(frozen=True)
class DevStandIns:
    """What a tiny random-weight model swaps in so that every preset runs on a CPU.

    condition_pixels: caps the ~1 MP area the edit pipelines resize condition images to.
    cache_threshold: cache-dit's residual threshold for balanced. Random weights change a lot
        from step to step (relative residual diffs of 0.24-0.52, against the 0.12 that suits
        the real model), so at the real threshold nothing would ever be cached.
    lightning_lora: folder (relative to the model) of a tiny random LoRA standing in for the
        Lightning LoRA of the fast preset.
    """

    condition_pixels: int | None = None
    cache_threshold: float | None = None
    lightning_lora: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "condition_pixels": self.condition_pixels,
            "cache_threshold": self.cache_threshold,
            "lightning_lora": self.lightning_lora,
        }


@dataclass(frozen=True)
class ModelFolder:
    """The facts read from a folder's model_index.json (and its transformer's config)."""

    path: Path
    pipeline: str
    random_weights: bool
    zero_cond_t: bool
    stand_ins: DevStandIns | None

    @property
    def variant(self) -> str:
        return PIPELINES[self.pipeline]

    @property
    def max_images(self) -> int:
        return MAX_IMAGES[self.variant]

    @property
    def hub_commit(self) -> str | None:
        """The commit of a Hugging Face cache snapshot: the cache names its folder after it."""
        return self.path.name if self.path.parent.name == "snapshots" else None

    @property
    def family(self) -> str:
        """The model family a Lightning LoRA is made for: edit, 2509 or 2511."""
        if self.variant == "edit":
            return "edit"
        # 2511's transformer treats the reference images with a zero timestep; 2509's doesn't.
        return "2511" if self.zero_cond_t else "2509"


def resolve_model_dir(model_id: str, revision: str | None = None) -> Path:
    """A local folder as is; otherwise a Hugging Face repo id at `revision`, through the HF
    cache (HF_HOME). With HF_HUB_OFFLINE=1 the cache alone answers: nothing is downloaded."""
    local = Path(model_id).expanduser()
    if local.is_dir():
        if revision:
            raise EngineError(
                f"MODEL_REVISION={revision} pins a Hugging Face repo's commit, and MODEL_ID "
                f"{model_id} is a local folder; clear MODEL_REVISION"
            )
        return local
    if local.is_absolute() or model_id.startswith("."):
        raise EngineError(f"model folder {model_id} does not exist")
    from huggingface_hub import snapshot_download

    try:
        path = Path(snapshot_download(model_id, revision=revision))
    except Exception as exc:  # the hub client raises many kinds; the message says enough
        raise EngineError(
            f"could not fetch {model_id} at revision {revision or 'main'} from the Hugging Face "
            f"hub ({type(exc).__name__}: {exc}); check the id, the revision and the network "
            "(with HF_HUB_OFFLINE=1, that the cache holds them), or set MODEL_ID to a local folder"
        ) from None
    if not revision:
        log.warning(
            "MODEL_REVISION is not set: %s is served at commit %s, where main points today; "
            "set MODEL_REVISION=%s to keep these weights across restarts",
            model_id,
            path.name,
            path.name,
        )
    return path


def _stand_ins(raw: Any) -> DevStandIns | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise EngineError(f"{DEV_STAND_INS_KEY} in model_index.json must be an object")
    return DevStandIns(
        condition_pixels=raw.get("condition_pixels"),
        cache_threshold=raw.get("cache_threshold"),
        lightning_lora=raw.get("lightning_lora"),
    )


def read_model_folder(model_dir: Path) -> ModelFolder:
    """Refuse anything but a Qwen edit pipeline folder, before any weight is read."""
    index_path = model_dir / "model_index.json"
    if not index_path.is_file():
        raise EngineError(f"{model_dir} has no model_index.json; is it a diffusers pipeline?")
    index: dict[str, Any] = json.loads(index_path.read_text())
    pipeline = index.get("_class_name")
    if pipeline not in PIPELINES:
        raise EngineError(f"{model_dir} holds a {pipeline}; expected one of {sorted(PIPELINES)}")
    config_path = model_dir / "transformer" / "config.json"
    transformer = json.loads(config_path.read_text()) if config_path.is_file() else {}
    return ModelFolder(
        path=model_dir,
        pipeline=pipeline,
        random_weights=bool(index.get(RANDOM_WEIGHTS_KEY, False)),
        zero_cond_t=bool(transformer.get("zero_cond_t", False)),
        stand_ins=_stand_ins(index.get(DEV_STAND_INS_KEY)),
    )
