"""The tiny random-weight dev models, quick editors loaded from them, and runs of them."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from qie_engine.contract import ResultMeta
from qie_engine.edit_request import RawEdit
from qie_engine.editor import run_edit
from qie_engine.model_folder import DEV_STAND_INS_KEY, RANDOM_WEIGHTS_KEY
from qie_engine.qwen_editor import QwenEditor
from qie_engine.qwen_loader import load_editor
from qie_engine.qwen_settings import QwenSettings
from qie_engine.tiny_model import STAND_INS, save_tiny_pipeline
from tests.engine.recorders import ProgressLog
from tests.images import png_bytes

ROOT = Path(__file__).resolve().parents[2]
DEV_PIXELS = STAND_INS.condition_pixels  # the dev model's own cap on the condition area
# Small and quick: 2 steps, no true CFG, a 64x64 output.
SMALL: dict[str, Any] = {"steps": 2, "seed": 0, "true_cfg_scale": 1.0, "width": 64, "height": 64}


def dev_model(folder: str, variant: str, scratch: Path) -> Path:
    """The model `make dev-model` built, or a fresh one in `scratch` (bare or stale checkout)."""
    built = ROOT / "models" / folder
    index = built / "model_index.json"
    if index.is_file() and DEV_STAND_INS_KEY in json.loads(index.read_text()):
        return built
    return save_tiny_pipeline(scratch / folder, variant=variant)


def copy_model(source: Path, target: Path, *, as_real_weights: bool = False) -> Path:
    """Copy a pipeline folder; `as_real_weights` drops what only the dev model's index holds."""
    shutil.copytree(source, target)
    if as_real_weights:
        index_path = target / "model_index.json"
        index = json.loads(index_path.read_text())
        del index[RANDOM_WEIGHTS_KEY]
        del index[DEV_STAND_INS_KEY]
        index_path.write_text(json.dumps(index))
    return target


def dev_settings(model_dir: Path, **overrides: Any) -> QwenSettings:
    """Settings for a quick tiny-model editor: no warm-up."""
    values: dict[str, Any] = {"model_id": str(model_dir), "warmup": False}
    values.update(overrides)
    return QwenSettings(**values)


def dev_editor(model_dir: Path, name: str = "qwen_image_edit", **overrides: Any) -> QwenEditor:
    return load_editor(name, dev_settings(model_dir, **overrides))


def edit(
    editor: QwenEditor, progress: ProgressLog | None = None, **options: Any
) -> tuple[bytes, ResultMeta]:
    """One edit of a small PNG through run_edit, as Triton's adapter runs it."""
    log = progress if progress is not None else ProgressLog()
    raw = RawEdit([png_bytes(64, 48)], "make the sky a deep purple", options=json.dumps(options))
    return run_edit(editor, raw, log, log.is_cancelled)


@contextmanager
def counting_blocks(editor: QwenEditor) -> Iterator[list[int]]:
    """How many transformer blocks ran: the real work, whatever the cache skipped."""
    count = [0]
    handles = [
        block.register_forward_pre_hook(lambda *_args: count.__setitem__(0, count[0] + 1))
        for block in editor.pipe.transformer.transformer_blocks
    ]
    try:
        yield count
    finally:
        for handle in handles:
            handle.remove()
