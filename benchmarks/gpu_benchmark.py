"""Qwen-Image-Edit at full size on one GPU: stock diffusers vs our engine, presets, batching.

The full architecture (20.4 B transformer, Qwen2.5-VL-7B text encoder, VAE) is built directly on
the GPU in bf16 with random weights (benchmarks/full_size_model.py), so nothing is downloaded and
the timings are those of the real model: random weights cost the same FLOPs. One 1024x1024
reference image per edit. Each part fits a 10-minute command and saves its own JSON:

  plan     CPU, no GPU needed: builds the full size on the meta device and checks parameter counts,
           counts the text-encoder tokens of a 1 MP edit, and runs this builder shrunk (same
           vocabulary, ids, processor) end to end through the engine
  stock    stock diffusers (bf16, default attention, no compile) at the model card's settings
           (50 steps, true CFG 4) and at fast-preset settings (8 steps, no CFG)
  engine   the engine (QwenEditor.edit) as its knobs are added one by one: defaults, each
           --engine-backends attention backend, FP8 via torchao (when installed; not yet an
           engine setting), compile of the repeated transformer blocks (COMPILE_BLOCKS)
  presets  the engine with --attention-backend/--compile/--fp8 at the fast preset (8 steps,
           no true CFG) and the quality preset (50 steps, true CFG 4)
  batch    a queue of --queue-depth edits (8): one at a time through the engine, versus one
           batched pipeline call (prompt list + image list; Plus takes a list as one edit's
           references, so it batches with num_images_per_prompt)

Figures: s/image (wall, synchronized), s/step (median between step ends, synchronized), the time
before the first step (text encoder, VAE encode) and after the last (VAE decode), and peak GPU
memory (torch.cuda.max_memory_allocated). --steps-scale 0.2 runs a fifth of the steps; s/image is
then also extrapolated to the full count and marked as an estimate.

    python -m benchmarks.gpu_benchmark --part plan                 # any machine
    python -m benchmarks.gpu_benchmark --part stock                # an H100
    python -m benchmarks.gpu_benchmark --part engine --engine-backends _native_cudnn,flash
    python -m benchmarks.gpu_benchmark --part presets --compile --attention-backend _native_cudnn
    python -m benchmarks.gpu_benchmark --part batch --steps-scale 0.5
    python -m benchmarks.gpu_benchmark --tiny                      # CPU smoke, every part, tiny
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import torch

from benchmarks import inputs
from benchmarks.results import environment, save_json, say, table

NAME = "gpu_benchmark"
PARTS = ("plan", "stock", "engine", "presets", "batch")
PROMPTS = [
    "replace the sky with a warm sunset",
    "make it look like a watercolor painting",
    "add a small red boat on the water",
    "turn the scene into winter with snow",
    "make the colors vivid and high contrast",
    "remove the people in the background",
    "make it black and white with film grain",
    "change the season to autumn",
]


@dataclass(frozen=True)
class Spec:
    steps: int
    true_cfg_scale: float


# The engine's presets (qie_engine.qwen_editor.PRESETS), as plain pipeline settings.
QUALITY = Spec(steps=50, true_cfg_scale=4.0)
FAST = Spec(steps=8, true_cfg_scale=1.0)
TINY_CONDITION_PIXELS = 65536  # as the dev model is served: keeps the tiny pipeline cheap on CPU


# --------------------------------------------------------------------------- timing


@dataclass
class Clock:
    """Step-end timestamps of one pipeline call, taken after a device synchronize."""

    sync: Callable[[], None]
    began: float = 0.0
    ended: float = 0.0
    marks: list[float] = field(default_factory=list)

    def start(self) -> None:
        self.sync()
        self.began = time.perf_counter()

    def step(self) -> None:
        self.sync()
        self.marks.append(time.perf_counter())

    def stop(self) -> None:
        self.sync()
        self.ended = time.perf_counter()

    def figures(self, steps: int, full_steps: int | None = None) -> dict[str, Any]:
        total = self.ended - self.began
        gaps = [b - a for a, b in zip(self.marks, self.marks[1:], strict=False)]
        per_step = statistics.median(gaps) if gaps else None
        before = (self.marks[0] - self.began - (per_step or 0.0)) if self.marks else None
        after = (self.ended - self.marks[-1]) if self.marks else None
        out: dict[str, Any] = {
            "steps": steps,
            "s_per_image": round(total, 4),
            "s_per_step": None if per_step is None else round(per_step, 4),
            "s_before_first_step": None if before is None else round(before, 4),
            "s_after_last_step": None if after is None else round(after, 4),
            "steps_seen": len(self.marks),
        }
        if full_steps and full_steps != steps and per_step is not None:
            out["estimated_s_per_image_at_full_steps"] = round(
                total + (full_steps - steps) * per_step, 3
            )
            out["full_steps"] = full_steps
        return out


class Device:
    """CUDA (bf16) or CPU (tiny, float32): synchronize, peak memory, names."""

    def __init__(self, tiny: bool) -> None:
        self.cuda = torch.cuda.is_available() and not tiny
        if not tiny and not self.cuda:
            raise SystemExit("no CUDA device: run --part plan, or --tiny for the CPU smoke run")
        self.name = "cuda" if self.cuda else "cpu"
        self.dtype = torch.bfloat16 if self.cuda else torch.float32

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def reset_peak(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> float | None:
        return round(torch.cuda.max_memory_allocated() / 2**30, 3) if self.cuda else None

    def allocated_gib(self) -> float | None:
        return round(torch.cuda.memory_allocated() / 2**30, 3) if self.cuda else None

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"device": self.name, "dtype": str(self.dtype)}
        if self.cuda:
            props = torch.cuda.get_device_properties(0)
            info.update(
                gpu=props.name,
                capability=list(torch.cuda.get_device_capability(0)),
                total_memory_gib=round(props.total_memory / 2**30, 2),
                cuda=torch.version.cuda,
            )
        return info


def versions() -> dict[str, str | None]:
    import diffusers
    import transformers

    try:
        import torchao

        torchao_version: str | None = torchao.__version__
    except ImportError:
        torchao_version = None
    return {
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "torchao": torchao_version,
    }


# --------------------------------------------------------------------------- the bench


@dataclass
class Options:
    tiny: bool
    variant: str
    size: int
    steps_scale: float
    repeats: int
    attention_backend: str | None
    compile: bool
    fp8: str  # auto (engine part: try when torchao is installed), on, off
    engine_backends: list[str]
    engine_preset: str
    queue_depth: int
    batch_preset: str
    tiny_compile: bool


def scaled(steps: int, scale: float) -> int:
    return max(2, round(steps * scale))


class Bench:
    """One built pipeline and the ways to time it."""

    def __init__(
        self,
        opts: Options,
        device: Device,
        pipe: Any | None = None,
        condition_pixels: int | None = None,
    ) -> None:
        from diffusers import FlowMatchEulerDiscreteScheduler

        from qie_engine.qwen_editor import LIGHTNING_SCHEDULER

        self.opts = opts
        self.device = device
        # The dev model's cap on the pipelines' ~1 MP internal resize; None is the real path.
        self.condition_pixels = condition_pixels
        began = time.perf_counter()
        if pipe is not None:
            self.pipe = pipe
        elif opts.tiny:
            from qie_engine.tiny_model import build_tiny_pipeline

            self.pipe = build_tiny_pipeline(variant=opts.variant)
            self.condition_pixels = TINY_CONDITION_PIXELS
        else:
            from benchmarks.full_size_model import build_full_pipeline

            self.pipe = build_full_pipeline(opts.variant, device="cuda", dtype=device.dtype)
        device.sync()
        self.build_s = round(time.perf_counter() - began, 2)
        self.weights_gib = device.allocated_gib()
        self.pipe.set_progress_bar_config(disable=True)
        self.default_scheduler = self.pipe.scheduler
        self.lightning_scheduler = FlowMatchEulerDiscreteScheduler.from_config(
            {**dict(self.pipe.scheduler.config), **LIGHTNING_SCHEDULER}
        )
        self.images = [inputs.photo_like(opts.size, opts.size, seed=i) for i in range(8)]
        # A model_index.json only, so QwenEditor loads "from" it (from_pretrained is swapped).
        self._model_dir = tempfile.TemporaryDirectory(prefix="bench-gpu-model-")
        self.model_dir = Path(self._model_dir.name)
        self._write_model_index()
        kind = "given" if pipe is not None else "tiny" if opts.tiny else "full-size"
        say(NAME, f"{kind} pipeline ready in {self.build_s}s, weights {self.weights_gib} GiB")

    def _write_model_index(self) -> None:
        from qie_engine.tiny_model import RANDOM_WEIGHTS_KEY

        index = {"_class_name": type(self.pipe).__name__, RANDOM_WEIGHTS_KEY: True}
        (self.model_dir / "model_index.json").write_text(json.dumps(index))

    def condition_cap(self) -> contextlib.AbstractContextManager[None]:
        from qie_engine.qwen_editor import capped_condition_area

        return capped_condition_area(self.condition_pixels)

    # ----- the engine's own path: QwenEditor with the knobs config.pbtxt exposes

    def editor(self, attention_backend: str | None, compile_blocks: bool) -> Any:
        """A QwenEditor over the pipeline already built (from_pretrained is swapped for it)."""
        from diffusers import DiffusionPipeline

        from qie_engine.qwen_editor import QwenEditor
        from qie_engine.qwen_settings import QwenSettings

        settings = QwenSettings(
            model_id=str(self.model_dir),
            device=self.device.name,
            attention_backend=attention_backend,
            compile_blocks=compile_blocks,
            dev_condition_pixels=self.condition_pixels,
            warmup=False,
        )
        # None must mean diffusers' default even after an earlier variant set a backend:
        # reset_attention_backend() (diffusers 0.42) leaves the registry's active backend as it
        # was, so the default is set explicitly.
        from diffusers.utils.constants import DIFFUSERS_ATTN_BACKEND

        self.pipe.transformer.set_attention_backend(DIFFUSERS_ATTN_BACKEND)
        # QwenEditor keeps the scheduler it finds as the quality preset's: give it the model's.
        self.pipe.scheduler = self.default_scheduler
        with mock.patch.object(DiffusionPipeline, "from_pretrained", return_value=self.pipe):
            return QwenEditor("qwen_image_edit", settings)

    def engine_edit(self, editor: Any, preset: str, steps: int, index: int = 0) -> dict[str, Any]:
        from qie_engine.contract import EditOptions, Preset
        from qie_engine.edit_request import EditRequest

        request = EditRequest(
            images=[self.images[index % len(self.images)]],
            image_infos=[],
            prompt=PROMPTS[index % len(PROMPTS)],
            negative_prompt=None,
            options=EditOptions(preset=Preset(preset), steps=steps, seed=index),
        )
        clock = Clock(self.device.sync)
        self.device.reset_peak()
        clock.start()
        editor.edit(request, lambda _event: clock.step(), lambda: False)
        clock.stop()
        full = (QUALITY if preset == "quality" else FAST).steps
        return {**clock.figures(steps, full), "peak_gib": self.device.peak_gib()}

    # ----- stock diffusers: the pipeline called as its model card shows

    def stock_call(self, steps: int, cfg: float, batch: int = 1) -> dict[str, Any]:
        clock = Clock(self.device.sync)

        def on_step(_pipe: Any, _i: int, _t: Any, _kwargs: dict[str, Any]) -> dict[str, Any]:
            clock.step()
            return {}

        kwargs: dict[str, Any] = {
            "num_inference_steps": steps,
            "true_cfg_scale": cfg,
            "generator": torch.Generator("cpu").manual_seed(0),
            "callback_on_step_end": on_step,
        }
        if batch == 1:
            kwargs.update(image=self.images[0], prompt=PROMPTS[0])
        elif self.opts.variant == "plus":  # a list of images is one edit's references in Plus
            kwargs.update(image=self.images[0], prompt=PROMPTS[0], num_images_per_prompt=batch)
        else:
            kwargs.update(
                image=[self.images[i % len(self.images)] for i in range(batch)],
                prompt=[PROMPTS[i % len(PROMPTS)] for i in range(batch)],
            )
        if cfg > 1.0:
            negatives = [" "] * batch if isinstance(kwargs["prompt"], list) else " "
            kwargs["negative_prompt"] = negatives
        self.device.reset_peak()
        clock.start()
        with self.condition_cap(), torch.inference_mode():
            result = self.pipe(**kwargs)
        clock.stop()
        return {
            **clock.figures(steps),
            "images": len(result.images),
            "peak_gib": self.device.peak_gib(),
        }

    def repeat(self, fn: Callable[[], dict[str, Any]], times: int) -> dict[str, Any]:
        runs = [fn() for _ in range(times)]
        best = min(runs, key=lambda r: r["s_per_image"])
        return {**best, "runs": runs, "repeats": times}


# --------------------------------------------------------------------------- the parts


def part_stock(bench: Bench) -> dict[str, Any]:
    o = bench.opts
    bench.pipe.scheduler = bench.default_scheduler
    say(NAME, "stock: warm-up")
    bench.stock_call(2, QUALITY.true_cfg_scale)
    out: dict[str, Any] = {}
    for label, spec in (("quality", QUALITY), ("fast", FAST)):
        steps = scaled(spec.steps, o.steps_scale)
        say(NAME, f"stock {label}: {steps} steps, true CFG {spec.true_cfg_scale}")

        def run(steps: int = steps, spec: Spec = spec) -> dict[str, Any]:
            figures = bench.stock_call(steps, spec.true_cfg_scale)
            if steps != spec.steps and figures["s_per_step"] is not None:
                figures["estimated_s_per_image_at_full_steps"] = round(
                    figures["s_per_image"] + (spec.steps - steps) * figures["s_per_step"], 3
                )
            return figures

        out[label] = {"settings": vars(spec), **bench.repeat(run, o.repeats)}
    out["note"] = (
        "diffusers defaults: SDPA attention backend, no compile, the model's scheduler; "
        "the fast row is the stock pipeline at 8 steps without CFG (no Lightning scheduler)"
    )
    return out


def apply_fp8(bench: Bench) -> dict[str, Any]:
    """FP8 (dynamic activations, per-row weights) on the transformer's Linear layers via torchao."""
    if not bench.device.cuda:
        return {"applied": False, "reason": "needs a CUDA GPU"}
    capability = torch.cuda.get_device_capability(0)
    if capability < (8, 9):
        return {"applied": False, "reason": f"needs compute capability 8.9+, got {capability}"}
    try:
        from torchao.quantization import (  # type: ignore[import-not-found, unused-ignore]
            Float8DynamicActivationFloat8WeightConfig,
            PerRow,
            quantize_,
        )
    except ImportError as exc:
        return {"applied": False, "reason": f"torchao not installed ({exc})"}
    before = bench.device.allocated_gib()
    try:
        config = Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())
        quantize_(bench.pipe.transformer, config)
    except Exception as exc:  # an API or kernel this torchao/GPU pair lacks: say so, go on
        return {"applied": False, "reason": f"{type(exc).__name__}: {str(exc)[:300]}"}
    torch.cuda.empty_cache()
    return {
        "applied": True,
        "allocated_gib_before": before,
        "allocated_gib_after": bench.device.allocated_gib(),
    }


def part_engine(bench: Bench) -> dict[str, Any]:
    o = bench.opts
    preset = o.engine_preset
    steps = scaled((QUALITY if preset == "quality" else FAST).steps, o.steps_scale)
    rows: list[dict[str, Any]] = []

    def measure(
        label: str, backend: str | None, compile_blocks: bool, warmups: int
    ) -> dict[str, Any]:
        say(NAME, f"engine: {label}")
        row: dict[str, Any] = {
            "variant": label,
            "attention_backend": backend,
            "compile": compile_blocks,
        }
        try:
            editor = bench.editor(backend, compile_blocks)
            began = time.perf_counter()
            for _ in range(warmups):
                bench.engine_edit(editor, preset, 2)
            row["warmup_s"] = round(time.perf_counter() - began, 2)
            row.update(bench.repeat(lambda: bench.engine_edit(editor, preset, steps), o.repeats))
        except Exception as exc:  # a backend this GPU or build lacks: a row that says so
            row["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
            if bench.device.cuda:
                torch.cuda.empty_cache()
        rows.append(row)
        return row

    tried: list[tuple[str | None, dict[str, Any]]] = [
        (None, measure("engine defaults", None, False, 1))
    ]
    tried += [(b, measure(f"attention={b}", b, False, 1)) for b in o.engine_backends]
    working = [(b, r) for b, r in tried if "error" not in r and r.get("s_per_step")]
    best_backend = min(working, key=lambda item: item[1]["s_per_step"])[0] if working else None
    fp8 = {"applied": False, "reason": "--fp8 off"}
    if o.fp8 != "off":
        fp8 = apply_fp8(bench)
        if fp8["applied"]:
            measure(f"fp8 + attention={best_backend}", best_backend, False, 1)
    if bench.device.cuda or o.tiny_compile:
        label = f"compile{' + fp8' if fp8['applied'] else ''} + attention={best_backend}"
        measure(label, best_backend, True, 2)
    else:
        rows.append(
            {
                "variant": "compile",
                "skipped": "tiny CPU run (inductor on CPU would dominate); --tiny-compile runs it",
            }
        )
    return {
        "preset": preset,
        "steps": steps,
        "fp8": fp8,
        "best_attention_backend": best_backend,
        "variants": rows,
    }


def part_presets(bench: Bench) -> dict[str, Any]:
    o = bench.opts
    fp8 = (
        apply_fp8(bench) if o.fp8 == "on" else {"applied": False, "reason": "not asked (--fp8 on)"}
    )
    editor = bench.editor(o.attention_backend, o.compile)
    say(NAME, "presets: warm-up")
    began = time.perf_counter()
    for preset in ("fast", "quality"):
        bench.engine_edit(editor, preset, 2)
    warmup = round(time.perf_counter() - began, 2)
    out: dict[str, Any] = {
        "attention_backend": o.attention_backend,
        "compile": o.compile,
        "fp8": fp8,
        "warmup_s": warmup,
    }
    for preset, spec in (("fast", FAST), ("quality", QUALITY)):
        steps = scaled(spec.steps, o.steps_scale)
        say(NAME, f"presets {preset}: {steps} steps")

        def run(preset: str = preset, steps: int = steps) -> dict[str, Any]:
            return bench.engine_edit(editor, preset, steps)

        out[preset] = {"settings": vars(spec), **bench.repeat(run, o.repeats)}
    return out


def part_batch(bench: Bench) -> dict[str, Any]:
    o = bench.opts
    preset = o.batch_preset
    spec = QUALITY if preset == "quality" else FAST
    steps = scaled(spec.steps, o.steps_scale)
    depth = o.queue_depth
    fp8 = (
        apply_fp8(bench) if o.fp8 == "on" else {"applied": False, "reason": "not asked (--fp8 on)"}
    )
    editor = bench.editor(o.attention_backend, o.compile)
    say(NAME, f"batch: one at a time, {depth} edits of {steps} steps")
    bench.engine_edit(editor, preset, 2)
    began = time.perf_counter()
    completions, singles = [], []
    for index in range(depth):
        singles.append(bench.engine_edit(editor, preset, steps, index))
        completions.append(time.perf_counter() - began)
    sequential_s = completions[-1]
    sequential = {
        "total_s": round(sequential_s, 3),
        "images_per_s": round(depth / sequential_s, 4),
        "mean_completion_s": round(sum(completions) / depth, 3),
        "s_per_image_median": statistics.median(r["s_per_image"] for r in singles),
        "peak_gib": max((r["peak_gib"] or 0.0) for r in singles) if bench.device.cuda else None,
    }
    # The batched call runs the pipeline directly, with the scheduler the preset uses.
    bench.pipe.scheduler = (
        bench.lightning_scheduler if preset == "fast" else bench.default_scheduler
    )
    bench.pipe.vae.enable_slicing()  # decode one image at a time: 8 at 1024x1024 at once is GBs
    batched: dict[str, Any] = {}
    size = depth
    while size >= 1:
        say(NAME, f"batch: one call of {size}")
        try:
            bench.stock_call(2, spec.true_cfg_scale, batch=size)
            figures = bench.stock_call(steps, spec.true_cfg_scale, batch=size)
            batched = {
                "batch": size,
                "total_s": figures["s_per_image"],
                "images_per_s": round(size / figures["s_per_image"], 4),
                "mean_completion_s": figures["s_per_image"],
                "s_per_step": figures["s_per_step"],
                "peak_gib": figures["peak_gib"],
                "how": "num_images_per_prompt"
                if o.variant == "plus"
                else "prompt list + image list",
            }
            break
        except torch.cuda.OutOfMemoryError as exc:
            batched.setdefault("out_of_memory", []).append({"batch": size, "error": str(exc)[:200]})
            torch.cuda.empty_cache()
            size //= 2
    bench.pipe.vae.disable_slicing()
    speedup = None
    if batched.get("images_per_s") and batched.get("batch") == depth:
        speedup = round(batched["images_per_s"] / sequential["images_per_s"], 3)
    return {
        "preset": preset,
        "steps": steps,
        "queue_depth": depth,
        "attention_backend": o.attention_backend,
        "compile": o.compile,
        "fp8": fp8,
        "one_at_a_time": sequential,
        "batched": batched,
        "throughput_speedup": speedup,
        "note": "one at a time = the engine as Triton runs it today (one request per execute); "
        "batched = one pipeline call, all images finish together (vae slicing on)",
    }


def part_plan(opts: Options) -> dict[str, Any]:
    """No GPU: full-size parameter counts on the meta device, token counts, the builder shrunk."""
    from benchmarks.full_size_model import (
        EXPECTED_PARAMS_B,
        build_full_pipeline,
        parameter_counts,
    )

    say(NAME, "plan: full size on the meta device")
    meta = build_full_pipeline(opts.variant, device="meta")
    counts = parameter_counts(meta)
    checks = {
        name: {
            "params_b": round(counts[name] / 1e9, 3),
            "expected_b": expected,
            "ok": abs(counts[name] / 1e9 - expected) <= 0.02 * expected,
        }
        for name, expected in EXPECTED_PARAMS_B.items()
    }
    weights_gib = round(sum(counts.values()) * 2 / 2**30, 2)
    # How long the text encoder's sequence is for one 1 MP edit, with this tokenizer: the
    # pipelines' own templates and condition sizes (Edit: the 1 MP image; Plus: 384x384).
    if opts.variant == "plus":
        image = inputs.photo_like(384, 384)
        text = meta.prompt_template_encode.format(
            "Picture 1: <|vision_start|><|image_pad|><|vision_end|>" + PROMPTS[0]
        )
    else:
        image = inputs.photo_like(1024, 1024)
        text = meta.prompt_template_encode.format(PROMPTS[0])
    model_inputs = meta.processor(text=[text], images=[image], return_tensors="pt")
    ids = model_inputs["input_ids"][0]
    image_tokens = int((ids == meta.text_encoder.config.image_token_id).sum())
    say(NAME, "plan: the same builder, shrunk, through the engine on the CPU")
    shrunk = build_full_pipeline(opts.variant, device="cpu", dtype=torch.float32, shrink=True)
    small = Options(**{**vars(opts), "size": 256})
    bench = Bench(small, Device(tiny=True), pipe=shrunk, condition_pixels=TINY_CONDITION_PIXELS)
    run = bench.engine_edit(bench.editor(None, False), "quality", 2)
    return {
        "parameters": checks,
        "all_ok": all(c["ok"] for c in checks.values()),
        "weights_bf16_gib": weights_gib,
        "fits": {
            "H100 80GB (79.6 GiB usable)": weights_gib < 79.6,
            "H200 141GB": weights_gib < 139.0,
        },
        "text_encoder_sequence_1mp": {
            "tokens": int(ids.shape[0]),
            "image_tokens": image_tokens,
            "text_tokens": int(ids.shape[0]) - image_tokens,
            "note": "byte-level tokenizer: text tokens are 3-4x Qwen's BPE count",
        },
        "transformer_image_tokens_1mp": 2 * (1024 // 16) ** 2,
        "shrunk_engine_run": run,
    }


# --------------------------------------------------------------------------- main


def print_part(part: str, result: dict[str, Any]) -> None:
    print()
    if part == "plan":
        for name, check in result["parameters"].items():
            verdict = "ok" if check["ok"] else "MISMATCH"
            print(f"  {name:13} {check['params_b']:>8} B params ({check['expected_b']}): {verdict}")
        sequence = result["text_encoder_sequence_1mp"]
        print(f"  bf16 weights {result['weights_bf16_gib']} GiB; 1 MP edit tokens: {sequence}")
        return
    rows: list[list[Any]] = []
    if part in ("stock", "presets"):
        for label in ("fast", "quality"):
            r = result[label]
            rows.append(
                [
                    label,
                    r["steps"],
                    r["s_per_image"],
                    r.get("estimated_s_per_image_at_full_steps"),
                    r["s_per_step"],
                    r["s_before_first_step"],
                    r["s_after_last_step"],
                    r["peak_gib"],
                ]
            )
        print(
            table(
                [
                    "setting",
                    "steps",
                    "s/image",
                    "est. full",
                    "s/step",
                    "before",
                    "after",
                    "peak GiB",
                ],
                rows,
            )
        )
    elif part == "engine":
        for r in result["variants"]:
            rows.append(
                [
                    r["variant"],
                    r.get("s_per_image"),
                    r.get("s_per_step"),
                    r.get("peak_gib"),
                    r.get("warmup_s"),
                    (r.get("error") or r.get("skipped") or "")[:70],
                ]
            )
        print(table(["variant", "s/image", "s/step", "peak GiB", "warm-up s", "note"], rows))
    elif part == "batch":
        seq, bat = result["one_at_a_time"], result["batched"]
        rows.append(
            [
                "one at a time",
                result["queue_depth"],
                seq["total_s"],
                seq["images_per_s"],
                seq["mean_completion_s"],
                seq["peak_gib"],
            ]
        )
        rows.append(
            [
                f"batched ({bat.get('how', '-')})",
                bat.get("batch"),
                bat.get("total_s"),
                bat.get("images_per_s"),
                bat.get("mean_completion_s"),
                bat.get("peak_gib"),
            ]
        )
        print(table(["mode", "images", "total s", "images/s", "mean done s", "peak GiB"], rows))
        print(f"  throughput speedup: {result['throughput_speedup']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--part", choices=(*PARTS, "all"), help="default: all with --tiny, else required"
    )
    parser.add_argument("--tiny", action="store_true", help="CPU smoke: the tiny dev pipeline")
    parser.add_argument("--variant", choices=("edit", "plus"), default="edit")
    parser.add_argument("--size", type=int, help="input side (default 1024; 256 with --tiny)")
    parser.add_argument(
        "--steps-scale",
        type=float,
        help="run this fraction of the steps (default 1; 0.1 with --tiny)",
    )
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--attention-backend", help="presets/batch: ATTENTION_BACKEND (default: diffusers')"
    )
    parser.add_argument("--compile", action="store_true", help="presets/batch: COMPILE_BLOCKS=true")
    parser.add_argument(
        "--fp8",
        choices=("auto", "on", "off"),
        default="auto",
        help="FP8 transformer via torchao: engine part tries it when installed (auto); "
        "presets/batch only with on",
    )
    parser.add_argument(
        "--engine-backends", default="_native_cudnn,flash", help="engine part: backends to try"
    )
    parser.add_argument("--engine-preset", choices=("fast", "quality"), default="fast")
    parser.add_argument("--queue-depth", type=int, default=8)
    parser.add_argument("--batch-preset", choices=("fast", "quality"), default="fast")
    parser.add_argument(
        "--tiny-compile", action="store_true", help="with --tiny: also time compile"
    )
    parser.add_argument("--out-dir", type=Path, help="where the JSON goes (default .bench/)")
    args = parser.parse_args(argv)
    if args.part is None and not args.tiny:
        parser.error("--part is required (each part fits one 10-minute command); or use --tiny")
    parts = list(PARTS) if args.part in (None, "all") else [args.part]
    opts = Options(
        tiny=args.tiny,
        variant=args.variant,
        size=args.size or (256 if args.tiny else 1024),
        steps_scale=args.steps_scale
        if args.steps_scale is not None
        else (0.1 if args.tiny else 1.0),
        repeats=args.repeats,
        attention_backend=args.attention_backend,
        compile=args.compile,
        fp8=args.fp8,
        engine_backends=[
            b
            for b in (
                args.engine_backends.split(",") if not args.tiny else ["native", "_native_cudnn"]
            )
            if b
        ],
        engine_preset=args.engine_preset,
        queue_depth=args.queue_depth,
        batch_preset=args.batch_preset,
        tiny_compile=args.tiny_compile,
    )
    if args.tiny and args.engine_backends != parser.get_default("engine_backends"):
        opts.engine_backends = [b for b in args.engine_backends.split(",") if b]
    base = {
        "benchmark": NAME,
        "tiny": opts.tiny,
        "environment": environment(),
        "versions": versions(),
        "options": {k: v for k, v in vars(opts).items()},
    }
    exit_code = 0
    for part in parts:
        started = time.perf_counter()
        if part == "plan":
            result = part_plan(opts)
            device_info: dict[str, Any] = {"device": "meta + cpu"}
            exit_code |= 0 if result["all_ok"] else 1
        else:
            device = Device(opts.tiny)
            # A fresh model per part: FP8 and compile cannot be undone, and parts compare
            # settings from the same starting point.
            bench = Bench(opts, device)
            device_info = {
                **device.describe(),
                "build_s": bench.build_s,
                "weights_gib": bench.weights_gib,
            }
            result = {
                "stock": part_stock,
                "engine": part_engine,
                "presets": part_presets,
                "batch": part_batch,
            }[part](bench)
            del bench
            gc.collect()
            if device.cuda:
                torch.cuda.empty_cache()
        print_part(part, result)
        save_json(
            f"{NAME}-{part}{'-tiny' if opts.tiny else ''}",
            {
                **base,
                "part": part,
                "device": device_info,
                "result": result,
                "wall_s": round(time.perf_counter() - started, 1),
            },
            args.out_dir,
        )
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
