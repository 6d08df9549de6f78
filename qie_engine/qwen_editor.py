"""Qwen-Image-Edit through diffusers: loading, presets, progress and cancel at every step."""

from __future__ import annotations

import functools
import json
import logging
import math
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from qie_engine.contract import MAX_SEED, EditOptions, Preset, ProgressEvent, ResultMeta
from qie_engine.edit_request import EditRequest, RequestLimits
from qie_engine.editor import CancelledFn, EditOutcome, ProgressFn
from qie_engine.errors import Cancelled, EngineError, InvalidInput
from qie_engine.qwen_settings import QwenSettings
from qie_engine.tiny_model import RANDOM_WEIGHTS_KEY

log = logging.getLogger(__name__)

PIPELINES = {"QwenImageEditPipeline": "edit", "QwenImageEditPlusPipeline": "plus"}
MAX_IMAGES = {"edit": 1, "plus": 3}


@dataclass(frozen=True)
class PresetSpec:
    steps: int
    true_cfg_scale: float
    lightning_scheduler: bool


# quality: the model card's settings. fast: Lightning-style distilled sampling (shift-3, no CFG);
# it is best with a Lightning LoRA (lora_path), and still runs, coarser, without one.
PRESETS = {
    Preset.QUALITY: PresetSpec(steps=50, true_cfg_scale=4.0, lightning_scheduler=False),
    Preset.FAST: PresetSpec(steps=8, true_cfg_scale=1.0, lightning_scheduler=True),
}
LIGHTNING_SCHEDULER = {
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


def resolve_model_dir(model_id: str) -> Path:
    """A local folder as is; otherwise a Hugging Face repo id through the HF cache (HF_HOME)."""
    local = Path(model_id).expanduser()
    if local.is_dir():
        return local
    if local.is_absolute() or model_id.startswith("."):
        raise EngineError(f"model folder {model_id} does not exist")
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(model_id))


def read_model_index(model_dir: Path) -> dict[str, Any]:
    index_path = model_dir / "model_index.json"
    if not index_path.is_file():
        raise EngineError(f"{model_dir} has no model_index.json; is it a diffusers pipeline?")
    index: dict[str, Any] = json.loads(index_path.read_text())
    if index.get("_class_name") not in PIPELINES:
        raise EngineError(
            f"{model_dir} holds a {index.get('_class_name')}; expected one of {sorted(PIPELINES)}"
        )
    return index


def pick_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


_PATCH_LOCK = threading.Lock()


@contextmanager
def capped_condition_area(pixels: int | None) -> Iterator[None]:
    """Cap the pipelines' internal resize area; the one place the dev model changes diffusers.

    Both edit pipelines call their module's `calculate_dimensions(area, ratio)` for the condition
    and output sizes. With `pixels` set, the module function is swapped for the call's duration
    (diffusers' files are never edited). With None nothing is touched: the real model's path.
    """
    if pixels is None:
        yield
        return
    from diffusers.pipelines.qwenimage import (
        pipeline_qwenimage_edit as edit_module,
    )
    from diffusers.pipelines.qwenimage import (
        pipeline_qwenimage_edit_plus as plus_module,
    )

    def capped(original: Any, area: int, ratio: float) -> Any:
        return original(min(area, pixels), ratio)

    with _PATCH_LOCK:
        originals = [(m, m.calculate_dimensions) for m in (edit_module, plus_module)]
        for module, original in originals:
            setattr(module, "calculate_dimensions", functools.partial(capped, original))  # noqa: B010
        try:
            yield
        finally:
            for module, original in originals:
                setattr(module, "calculate_dimensions", original)  # noqa: B010


class QwenEditor:
    """A loaded Qwen-Image-Edit (or Plus) pipeline behind the Editor interface."""

    def __init__(self, name: str, settings: QwenSettings) -> None:
        from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler

        self.name = name
        self.settings = settings
        model_dir = resolve_model_dir(settings.model_id)
        index = read_model_index(model_dir)
        self.variant = PIPELINES[index["_class_name"]]
        self.random_weights = bool(index.get(RANDOM_WEIGHTS_KEY, False))
        self.limits = RequestLimits(
            image=settings.limits.image,
            max_prompt_chars=settings.limits.max_prompt_chars,
            max_images=MAX_IMAGES[self.variant],
        )
        self.device = pick_device(settings.device)
        self.dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        started = time.perf_counter()
        self.pipe: Any = DiffusionPipeline.from_pretrained(model_dir, dtype=self.dtype)
        if type(self.pipe).__name__ != index["_class_name"]:  # pragma: no cover - diffusers' job
            raise EngineError(f"loaded {type(self.pipe).__name__}, expected {index['_class_name']}")
        self._default_scheduler = self.pipe.scheduler
        self._lightning_scheduler = FlowMatchEulerDiscreteScheduler.from_config(
            {**dict(self.pipe.scheduler.config), **LIGHTNING_SCHEDULER}
        )
        self._apply_knobs()
        self.condition_pixels = settings.dev_condition_pixels if self.random_weights else None
        if settings.dev_condition_pixels and not self.random_weights:
            log.warning("DEV_CONDITION_PIXELS is ignored: %s has real weights", settings.model_id)
        self.load_seconds = time.perf_counter() - started
        log.info(
            "loaded %s (%s, %s) on %s in %.1fs%s",
            settings.model_id,
            index["_class_name"],
            self.dtype,
            self.device,
            self.load_seconds,
            " - RANDOM WEIGHTS, pixels are meaningless" if self.random_weights else "",
        )
        if settings.warmup:
            self.warm_up()

    def _apply_knobs(self) -> None:
        s = self.settings
        if s.lora_path:
            self.pipe.load_lora_weights(s.lora_path)
            self.pipe.fuse_lora()
        if s.attention_backend:
            try:
                self.pipe.transformer.set_attention_backend(s.attention_backend)
            except (ValueError, ImportError, RuntimeError) as exc:
                raise EngineError(f"attention backend {s.attention_backend!r}: {exc}") from None
        if s.cpu_offload != "none" and self.device.type == "cuda":
            if s.cpu_offload == "model":
                self.pipe.enable_model_cpu_offload()
            else:
                self.pipe.enable_sequential_cpu_offload()
        else:
            if s.cpu_offload != "none":
                log.warning(
                    "cpu_offload=%s needs CUDA; running fully on %s", s.cpu_offload, self.device
                )
            self.pipe.to(self.device)
        if s.compile_blocks:
            self.pipe.transformer.compile_repeated_blocks(fullgraph=True)
        self.pipe.set_progress_bar_config(disable=True)

    def warm_up(self) -> None:
        """One short run, so the first real request pays no lazy init or compile cost."""
        started = time.perf_counter()
        request = EditRequest(
            images=[Image.new("RGB", (256, 256), (127, 127, 127))] * 1,
            image_infos=[],
            prompt="warm up",
            negative_prompt=None,
            options=EditOptions(steps=2, seed=0, true_cfg_scale=1.0),
        )
        self.edit(request, lambda _event: None, lambda: False)
        log.info("%s warmed up in %.1fs", self.name, time.perf_counter() - started)

    def resolve_generation(self, options: EditOptions) -> tuple[PresetSpec, int, float]:
        preset = PRESETS[options.preset or self.settings.default_preset]
        steps = options.steps if options.steps is not None else preset.steps
        cfg = (
            options.true_cfg_scale if options.true_cfg_scale is not None else preset.true_cfg_scale
        )
        return preset, steps, cfg

    def output_size(
        self, options: EditOptions, image: Image.Image
    ) -> tuple[int | None, int | None]:
        """Requested size, rounded down to the VAE's multiple; one side given keeps the aspect."""
        multiple = self.pipe.vae_scale_factor * 2
        width, height = options.width, options.height
        if width is None and height is None:
            return None, None
        if width is None:
            width = round(height * image.width / image.height)  # type: ignore[operator]
        if height is None:
            height = round(width * image.height / image.width)
        return max(multiple, width // multiple * multiple), max(
            multiple, height // multiple * multiple
        )

    def edit(
        self, request: EditRequest, on_progress: ProgressFn, is_cancelled: CancelledFn
    ) -> EditOutcome:
        if len(request.images) > self.limits.max_images:
            raise InvalidInput(
                f"{self.name} takes at most {self.limits.max_images} image(s)", code="image_count"
            )
        options = request.options
        preset, steps, cfg = self.resolve_generation(options)
        seed = options.seed if options.seed is not None else secrets.randbelow(MAX_SEED + 1)
        width, height = self.output_size(options, request.images[0])
        negative = request.negative_prompt
        if cfg > 1.0 and negative is None:
            negative = " "  # true CFG needs a negative prompt; the model card uses a blank one
        started = time.perf_counter()

        def on_step_end(_pipe: Any, index: int, _timestep: Any, _kwargs: dict[str, Any]) -> dict:
            on_progress(
                ProgressEvent(
                    step=index + 1, total=steps, elapsed_s=round(time.perf_counter() - started, 3)
                )
            )
            if is_cancelled():
                # Raising (not pipe._interrupt) also skips the VAE decode after the loop.
                raise Cancelled(f"cancelled after step {index + 1} of {steps}")
            return {}

        if is_cancelled():
            raise Cancelled("cancelled before the first step")
        self.pipe.scheduler = (
            self._lightning_scheduler if preset.lightning_scheduler else self._default_scheduler
        )
        images: Any = request.images if self.variant == "plus" else request.images[0]
        with capped_condition_area(self.condition_pixels), torch.inference_mode():
            result = self.pipe(
                image=images,
                prompt=request.prompt,
                negative_prompt=negative if cfg > 1.0 else None,
                true_cfg_scale=cfg,
                num_inference_steps=steps,
                width=width,
                height=height,
                generator=torch.Generator("cpu").manual_seed(seed),
                callback_on_step_end=on_step_end,
            )
        image: Image.Image = result.images[0]
        meta = ResultMeta(
            model=self.name,
            seed=seed,
            steps=steps,
            width=image.width,
            height=image.height,
            format=options.output_format,
            random_weights=self.random_weights,
            timings={"denoise_s": round(time.perf_counter() - started, 4)},
        )
        return EditOutcome(image=image, meta=meta)

    def describe(self) -> dict[str, Any]:
        _, steps, cfg = self.resolve_generation(EditOptions())
        return {
            "variant": self.variant,
            "pipeline": type(self.pipe).__name__,
            "model_id": self.settings.model_id,
            "random_weights": self.random_weights,
            "max_images": self.limits.max_images,
            "device": self.device.type,
            "dtype": str(self.dtype).removeprefix("torch."),
            "defaults": {
                "preset": self.settings.default_preset.value,
                "steps": steps,
                "true_cfg_scale": cfg,
            },
            "presets": {
                p.value: {"steps": spec.steps, "true_cfg_scale": spec.true_cfg_scale}
                for p, spec in PRESETS.items()
            },
        }
