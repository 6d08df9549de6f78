"""The fast preset's Lightning LoRA and scheduler.

Design: the LoRA is a peft adapter, enabled only while a fast request runs and disabled (the
base layers alone, bit for bit) for every other preset. Fusing it into the transformer at load
would make quality and balanced silently run with it, and fusing and unfusing on each switch
drifts the bf16 weights a little every round trip. An instance that serves fast only (PRESETS=
fast) fuses it at load instead: no adapter overhead, and no other preset it could leak into.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qie_engine.errors import EngineError
from qie_engine.model_folder import ModelFolder
from qie_engine.presets import LIGHTNING_LORAS, LIGHTNING_SCHEDULER

log = logging.getLogger(__name__)

ADAPTER = "lightning"


@dataclass(frozen=True)
class LoraSource:
    """Where the LoRA comes from: a local folder, or a hub repo (at a revision), with the file
    inside."""

    location: str
    weight_name: str | None = None
    local: bool = False
    revision: str | None = None

    def __str__(self) -> str:
        return f"{self.location}/{self.weight_name}" if self.weight_name else self.location

    @property
    def public_name(self) -> str:
        """What clients are told: a hub location in full, a local file or folder by its name."""
        return Path(str(self)).name if self.local else str(self)


def _explicit_source(lora_path: str) -> LoraSource:
    local = Path(lora_path).expanduser()
    if local.is_file():
        return LoraSource(str(local.parent), local.name, local=True)
    if local.is_dir():
        return LoraSource(str(local), local=True)
    if local.is_absolute() or lora_path.startswith("."):
        raise EngineError(f"LORA_PATH {lora_path} does not exist")
    parts = lora_path.split("/")
    if len(parts) > 2:  # owner/repo/path/in/repo.safetensors
        return LoraSource("/".join(parts[:2]), "/".join(parts[2:]))
    return LoraSource(lora_path)


def _unpinned_source(lora_path: str | None, folder: ModelFolder, fast_steps: int) -> LoraSource:
    if lora_path:
        return _explicit_source(lora_path)
    if folder.stand_ins is not None and folder.stand_ins.lightning_lora:
        return LoraSource(str(folder.path / folder.stand_ins.lightning_lora), local=True)
    repo, pattern = LIGHTNING_LORAS[folder.family]
    return LoraSource(repo, pattern.format(steps=fast_steps))


def lightning_source(
    lora_path: str | None, folder: ModelFolder, fast_steps: int, revision: str | None = None
) -> LoraSource:
    """LORA_PATH if given; the dev model's own stand-in; else the hub LoRA for this family.
    A hub LoRA is read at `revision` (LORA_REVISION); a local one has none to pin."""
    source = _unpinned_source(lora_path, folder, fast_steps)
    if not revision:
        return source
    if source.local:
        raise EngineError(
            f"LORA_REVISION={revision} pins a Hugging Face repo's commit, and the fast "
            f"preset's LoRA is the local {source}; clear LORA_REVISION"
        )
    return dataclasses.replace(source, revision=revision)


def lightning_scheduler(pipe: Any) -> Any:
    """The model's own scheduler config with the Lightning LoRAs' shift settings on top."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler.from_config(
        {**dict(pipe.scheduler.config), **LIGHTNING_SCHEDULER}
    )


class LightningLora:
    """The Lightning LoRA on a pipeline: an adapter switched per request, or fused for good."""

    def __init__(self, pipe: Any, source: LoraSource, *, fuse: bool) -> None:
        self.pipe = pipe
        self.source = source
        self.fused = fuse
        try:
            pipe.load_lora_weights(
                source.location,
                weight_name=source.weight_name,
                adapter_name=ADAPTER,
                revision=source.revision,
            )
        except Exception as exc:  # hub, file and format errors all end the load the same way
            raise EngineError(
                f"the fast preset's Lightning LoRA {source} could not be loaded "
                f"({type(exc).__name__}: {exc}). Set LORA_PATH to a local copy, or leave fast "
                "out of PRESETS"
            ) from None
        if fuse:
            pipe.fuse_lora(adapter_names=[ADAPTER])
            pipe.unload_lora_weights()
        else:
            pipe.disable_lora()
        log.info("Lightning LoRA %s %s", source, "fused" if fuse else "loaded as an adapter")

    @contextmanager
    def active(self, on: bool) -> Iterator[None]:
        """Enable the adapter for this request only; a fused LoRA is always on."""
        if self.fused or not on:
            yield
            return
        self.pipe.enable_lora()
        try:
            yield
        finally:
            self.pipe.disable_lora()
