"""Qwen-Image-Edit behind the Editor interface: presets, progress and cancel at every step.

QwenEditor is handed a built pipeline and its extras (qwen_loader builds them); it loads
nothing itself. Per request it picks the preset's scheduler, switches the Lightning adapter and
the step cache, and runs the pipeline with a callback that reports each step and stops on cancel.
"""

from __future__ import annotations

import functools
import logging
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.pipelines.qwenimage.pipeline_qwenimage_edit import calculate_dimensions
from PIL import Image

from qie_engine.batched_cfg import batched_cfg
from qie_engine.contract import MAX_SEED, EditOptions, ProgressEvent, ResultMeta
from qie_engine.edit_request import EditRequest, RequestLimits
from qie_engine.editor import CancelledFn, EditOutcome, ProgressFn
from qie_engine.errors import Cancelled, InvalidInput
from qie_engine.lightning import LightningLora, lightning_scheduler
from qie_engine.model_folder import ModelFolder
from qie_engine.presets import PRESETS, PresetSpec, preset_steps
from qie_engine.quantization import describe_quantization
from qie_engine.qwen_settings import QwenSettings
from qie_engine.step_cache import StepCache

log = logging.getLogger(__name__)

_PATCH_LOCK = threading.Lock()
# The model card's blank negative prompt: diffusers runs true CFG only when one is passed.
BLANK_NEGATIVE = " "
# The area both edit pipelines size their output and condition images to (1024 x 1024 pixels).
MODEL_AREA = 1024 * 1024


@contextmanager
def capped_condition_area(pixels: int | None) -> Iterator[None]:
    """Cap the pipelines' internal resize area; the one place the dev model changes diffusers.

    Both edit pipelines call their module's `calculate_dimensions(area, ratio)` for the condition
    and output sizes. With `pixels` set (the dev model's stand-in), the module function is
    swapped for the call's duration; diffusers' files are never edited. With None nothing is
    touched: the real model's path.
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


@contextmanager
def offload_reset_on_error(pipe: Any) -> Iterator[None]:
    """Leave CPU_OFFLOAD=model as a fresh request expects, however the call ends.

    diffusers sends every component back to the host only at the end of a call that returns
    (`maybe_free_model_hooks()`). A cancel or an error raises past that, leaving the transformer
    on the GPU; the text encoder's hook has no earlier model to push off, so the next request
    would load it beside the transformer. Without offload hooks the call only resets diffusers'
    stateful hooks, which a fresh request expects too.
    """
    try:
        yield
    except BaseException:
        pipe.maybe_free_model_hooks()
        raise


@dataclass(frozen=True)
class PresetExtras:
    """What the served presets add to the pipeline: fast's LoRA, balanced's step cache."""

    lightning: LightningLora | None = None
    step_cache: StepCache | None = None


class QwenEditor:
    """A built Qwen-Image-Edit (or Plus) pipeline and its preset extras, as an Editor."""

    def __init__(
        self,
        name: str,
        pipe: Any,
        *,
        folder: ModelFolder,
        settings: QwenSettings,
        extras: PresetExtras | None = None,
    ) -> None:
        self.name = name
        self.pipe = pipe
        self.folder = folder
        self.settings = settings
        self.lightning = extras.lightning if extras else None
        self.step_cache = extras.step_cache if extras else None
        self.variant = folder.variant
        self.random_weights = folder.random_weights
        self.limits = RequestLimits(
            image=settings.limits.image,
            max_prompt_chars=settings.limits.max_prompt_chars,
            max_images=folder.max_images,
        )
        stand_ins = folder.stand_ins
        self.condition_pixels = stand_ins.condition_pixels if stand_ins else None
        self.schedulers = {"default": pipe.scheduler, "lightning": lightning_scheduler(pipe)}
        self.last_batched_calls = 0

    @property
    def device(self) -> torch.device:
        return torch.device(self.pipe._execution_device)

    # ----- presets

    def resolve_generation(self, options: EditOptions) -> tuple[PresetSpec, int, float]:
        preset = options.preset or self.settings.default_preset
        if preset not in self.settings.presets:
            served = ", ".join(p.value for p in self.settings.presets)
            raise InvalidInput(
                f"{self.name} does not serve the {preset.value} preset; it serves: {served}",
                code="invalid_options",
            )
        spec = PRESETS[preset]
        steps = options.steps if options.steps is not None else self.preset_steps(spec)
        cfg = options.true_cfg_scale if options.true_cfg_scale is not None else spec.true_cfg_scale
        return spec, steps, cfg

    def preset_steps(self, spec: PresetSpec) -> int:
        return preset_steps(spec, self.folder.family, self.settings.fast_steps)

    @contextmanager
    def _preset_applied(self, spec: PresetSpec, steps: int, cfg: float) -> Iterator[None]:
        """The scheduler, adapter, cache and CFG batching this request's preset asks for."""
        batch_cfg = self.settings.batched_cfg and cfg > 1.0
        self.pipe.scheduler = self.schedulers[spec.scheduler]
        with ExitStack() as stack:
            # Entered first, so it runs last: after the batched-CFG hook has come off.
            stack.enter_context(offload_reset_on_error(self.pipe))
            if self.lightning is not None:
                stack.enter_context(self.lightning.active(spec.lightning_lora))
            if self.step_cache is not None:
                separate = cfg > 1.0 and not batch_cfg
                self.step_cache.configure(on=spec.step_cache, steps=steps, separate_cfg=separate)
            batcher = stack.enter_context(batched_cfg(self.pipe)) if batch_cfg else None
            stack.enter_context(capped_condition_area(self.condition_pixels))
            stack.enter_context(torch.inference_mode())
            yield
            self.last_batched_calls = batcher.batched_calls if batcher is not None else 0

    # ----- one edit

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

    def working_size(self, crop: tuple[int, int]) -> tuple[int, int]:
        """The pipeline's own output size for an image of the crop's aspect: MODEL_AREA (the dev
        model's capped condition area) by diffusers' calculate_dimensions, in the VAE multiple."""
        area = (
            MODEL_AREA if self.condition_pixels is None else min(MODEL_AREA, self.condition_pixels)
        )
        # Bound at import, so this is diffusers' own function even while a call has it capped.
        width, height, _ = calculate_dimensions(area, crop[0] / crop[1])
        multiple = self.pipe.vae_scale_factor * 2
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
        spec, steps, cfg = self.resolve_generation(options)
        seed = options.seed if options.seed is not None else secrets.randbelow(MAX_SEED + 1)
        width, height = request.working_size or self.output_size(options, request.images[0])
        negative = request.negative_prompt if request.negative_prompt else BLANK_NEGATIVE
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
        images: Any = request.images if self.variant == "plus" else request.images[0]
        with self._preset_applied(spec, steps, cfg):
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
        cached = self.step_cache.cached_steps() if self.step_cache and spec.step_cache else 0
        meta = ResultMeta(
            model=self.name,
            seed=seed,
            steps=steps,
            width=image.width,
            height=image.height,
            format=options.output_format,
            random_weights=self.random_weights,
            timings={"denoise_s": round(time.perf_counter() - started, 4)},
            preset=spec.preset,
            cached_steps=cached,
        )
        return EditOutcome(image=image, meta=meta)

    def warm_up(self) -> None:
        """Two steps of each served preset, so no first request pays lazy init or compile."""
        for preset in self.settings.presets:
            started = time.perf_counter()
            request = EditRequest(
                images=[Image.new("RGB", (256, 256), (127, 127, 127))],
                image_infos=[],
                prompt="warm up",
                negative_prompt=None,
                options=EditOptions(preset=preset, steps=2, seed=0),
            )
            self.edit(request, lambda _event: None, lambda: False)
            log.info(
                "%s warmed up %s in %.1fs", self.name, preset.value, time.perf_counter() - started
            )

    # ----- facts for clients

    def describe(self) -> dict[str, Any]:
        default, steps, cfg = self.resolve_generation(EditOptions())
        return {
            "variant": self.variant,
            "pipeline": type(self.pipe).__name__,
            # A hub id as it is; a local folder by its name only (where it lies is the host's).
            "model_id": self.settings.model_id if self.folder.hub_commit else self.folder.path.name,
            "model_revision": self.settings.model_revision,  # the pin, None when unpinned
            "model_commit": self.folder.hub_commit,  # what was loaded (None: a local folder)
            "random_weights": self.random_weights,
            "max_images": self.limits.max_images,
            "device": self.device.type,
            "dtype": str(self.pipe.transformer.dtype).removeprefix("torch."),
            "quantization": self.settings.quantization,
            "transformer_weights": describe_quantization(self.pipe),
            "cpu_offload": self.settings.cpu_offload,
            "batched_cfg": self.settings.batched_cfg,
            "lightning_lora": self.lightning.source.public_name if self.lightning else None,
            "lora_revision": self.lightning.source.revision if self.lightning else None,
            "defaults": {"preset": default.preset.value, "steps": steps, "true_cfg_scale": cfg},
            "presets": {
                p.value: {**PRESETS[p].describe(), "steps": self.preset_steps(PRESETS[p])}
                for p in self.settings.presets
            },
        }
