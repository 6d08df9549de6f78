"""Building a QwenEditor: the pipeline from a hub id or a folder, then the presets' extras.

`load_editor` is what Triton's model.py calls: bind the instance's device, resolve, check the
memory modes against the device, `from_pretrained` (with diffusers' quantization config),
`assemble`, warm up.
`assemble` takes a pipeline built by anyone (the GPU benchmark builds a full-size one in memory)
and adds what the served presets need: the Lightning LoRA, the step cache, device placement or
offload, the attention backend, compile. Nothing is looked up behind the caller's back.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from qie_engine.batched_cfg import check_masked_attention
from qie_engine.contract import Preset
from qie_engine.errors import EngineError
from qie_engine.instance_device import bind, compute_dtype, one_load_at_a_time, pick_device
from qie_engine.lightning import LightningLora, lightning_source
from qie_engine.model_folder import ModelFolder, read_model_folder, resolve_model_dir
from qie_engine.quantization import check_memory_modes, pipeline_quantization
from qie_engine.qwen_editor import PresetExtras, QwenEditor
from qie_engine.qwen_settings import QwenSettings
from qie_engine.step_cache import StepCache

log = logging.getLogger(__name__)


def load_pipeline(folder: ModelFolder, settings: QwenSettings, device: torch.device) -> Any:
    """from_pretrained on the folder, quantized as it loads when QUANTIZATION asks for it."""
    from diffusers import DiffusionPipeline

    check_memory_modes(settings.quantization, settings.cpu_offload, device)
    pipe: Any = DiffusionPipeline.from_pretrained(
        folder.path,
        dtype=compute_dtype(device),
        quantization_config=pipeline_quantization(settings.quantization),
    )
    if type(pipe).__name__ != folder.pipeline:  # pragma: no cover - diffusers' job
        raise EngineError(f"loaded {type(pipe).__name__}, expected {folder.pipeline}")
    return pipe


def _place(pipe: Any, settings: QwenSettings, device: torch.device) -> None:
    if settings.cpu_offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif settings.cpu_offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        pipe.to(device)


def _attention(pipe: Any, settings: QwenSettings, device: torch.device) -> None:
    backend = settings.attention_backend
    if backend:
        try:
            pipe.transformer.set_attention_backend(backend)
        except (ValueError, ImportError, RuntimeError) as exc:
            raise EngineError(f"attention backend {backend!r}: {exc}") from None
    if settings.batched_cfg:
        check_masked_attention(backend, device, compute_dtype(device))


def assemble(
    name: str, pipe: Any, folder: ModelFolder, settings: QwenSettings, device: torch.device
) -> QwenEditor:
    """Add the served presets' extras to a built pipeline and hand both to a QwenEditor."""
    check_memory_modes(settings.quantization, settings.cpu_offload, device)
    lightning = None
    if Preset.FAST in settings.presets:
        source = lightning_source(
            settings.lora_path, folder, settings.fast_steps, settings.lora_revision
        )
        lightning = LightningLora(pipe, source, fuse=settings.presets == (Preset.FAST,))
    step_cache = None
    if Preset.BALANCED in settings.presets:
        # Before the offload hooks: the forward they keep and restore is then cache-dit's.
        threshold = folder.stand_ins.cache_threshold if folder.stand_ins else None
        step_cache = StepCache(pipe.transformer, threshold)
    _place(pipe, settings, device)
    _attention(pipe, settings, device)
    if settings.compile_blocks:
        pipe.transformer.compile_repeated_blocks(fullgraph=True)
    pipe.set_progress_bar_config(disable=True)
    extras = PresetExtras(lightning=lightning, step_cache=step_cache)
    return QwenEditor(name, pipe, folder=folder, settings=settings, extras=extras)


def load_editor(name: str, settings: QwenSettings) -> QwenEditor:
    """Everything model.py needs: bind the device, load, assemble, warm up (Triton is ready
    only after this)."""
    started = time.perf_counter()
    device = pick_device(settings.device)
    bind(device)  # before anything reads a weight or asks the GPU what it can do
    folder = read_model_folder(resolve_model_dir(settings.model_id, settings.model_revision))
    with one_load_at_a_time(device):  # until the pipeline is placed on its device
        pipe = load_pipeline(folder, settings, device)
        editor = assemble(name, pipe, folder, settings, device)
    log.info(
        "loaded %s (%s, %s, quantization %s) on %s in %.1fs; presets %s, default %s%s",
        settings.model_id,
        folder.pipeline,
        compute_dtype(device),
        settings.quantization,
        device,
        time.perf_counter() - started,
        ", ".join(p.value for p in settings.presets),
        settings.default_preset.value,
        " - RANDOM WEIGHTS, pixels are meaningless" if folder.random_weights else "",
    )
    if settings.warmup:
        editor.warm_up()
    return editor
