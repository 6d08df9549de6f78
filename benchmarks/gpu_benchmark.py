"""Qwen-Image-Edit at full size on one GPU: stock diffusers against the engine's presets.

The full architecture (20.4 B transformer, Qwen2.5-VL-7B text encoder, VAE) is built directly on
the GPU in bf16 with random weights (benchmarks/full_size_model.py), so nothing is downloaded and
the timings are those of the real model: random weights cost the same FLOPs. One 1024x1024
reference image per edit. The built pipeline is handed to the engine's own loader code
(qie_engine.qwen_loader.assemble), exactly as Triton's model.py hands it a loaded one; the
presets come from qie_engine.presets. Each part saves its own JSON:

  plan     CPU, no GPU: the full size on the meta device (parameter counts), the text-encoder
           tokens of a 1 MP edit, and this builder shrunk, end to end through the engine
  stock    stock diffusers (bf16, default attention, no compile): the model card's settings
           (50 steps, true CFG 4) and 8 steps without CFG
  presets  the engine: quality, balanced, fast, and quality and balanced with BATCHED_CFG
  fp8      QUANTIZATION=fp8 (torchao, the engine's config): quality, balanced, fast again
  batch    a queue of --queue-depth edits: one at a time through the engine against one
           batched pipeline call (prompt list + image list)
  suite    stock, presets, fp8 on ONE built model, in that order (fp8 cannot be undone):
           the one command for a GPU

Random weights and the step cache: cache-dit skips a step when the transformer's residual
barely changed since the last one. Random weights change a lot from step to step (relative
diffs of 0.24-0.52 against the 0.12 that suits the real model), so at the real threshold no step
would ever be skipped. The benchmark uses the dev model's stand-in threshold (0.6) instead, so
balanced skips what cache-dit's documented policy allows at most, and reports how many steps it
skipped; --cache-threshold 0.12 shows the real threshold on random weights (nothing skipped).
The fast preset's Lightning LoRA is a random LoRA of the published one's size (rank 64 on every
attention and MLP layer, 0.85 GB), loaded as an adapter the way the engine serves it.

Figures: s/edit (wall, synchronized), s/step (median between step ends), the time before the
first step (text encoder, VAE encode) and after the last (VAE decode), peak GPU memory
(torch.cuda.max_memory_allocated), full transformer passes and cached steps. --steps-scale 0.5
runs half the steps of quality and balanced (fast keeps its 8); s/edit is then also extrapolated
to the full count and marked as an estimate.

    python -m benchmarks.gpu_benchmark --part plan        # any machine
    python -m benchmarks.gpu_benchmark --part suite       # an H100 or H200: one go, ~8 minutes
    python -m benchmarks.gpu_benchmark --tiny             # CPU smoke of every part, tiny model
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from benchmarks import inputs
from benchmarks.results import environment, save_json, table
from dev_stack.console import Voice
from qie_engine.contract import EditOptions, Preset
from qie_engine.edit_request import EditRequest
from qie_engine.presets import FAST, PRESETS, QUALITY, PresetSpec
from qie_engine.qwen_editor import QwenEditor, capped_condition_area

NAME = "gpu_benchmark"
say = Voice(NAME)
PARTS = ("plan", "stock", "presets", "batch", "fp8")  # fp8 last: it cannot be undone
SUITE = ("stock", "presets", "fp8")
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
            # Assumes the skipped steps cost the median step (with a cache, an estimate only).
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
        self.torch_device = torch.device("cuda:0" if self.cuda else "cpu")
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

    def free(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"device": self.torch_device.type, "dtype": str(self.dtype)}
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
    import importlib.metadata

    found: dict[str, str | None] = {"torch": torch.__version__}
    for package in ("diffusers", "transformers", "peft", "cache-dit", "torchao"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = None
    return found


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
    cache_threshold: float
    queue_depth: int
    batch_preset: str


def scaled(spec: PresetSpec, scale: float) -> int:
    """Steps to run for a preset: fast always runs its own count, the 50-step ones scale."""
    if spec.preset is Preset.FAST:
        return spec.steps
    return max(2, round(spec.steps * scale))


@contextmanager
def counting_full_passes(transformer: Any) -> Iterator[list[int]]:
    """Runs of the last transformer block: one per full pass (a cached step skips it)."""
    count = [0]
    hook = transformer.transformer_blocks[-1].register_forward_pre_hook(
        lambda *_args: count.__setitem__(0, count[0] + 1)
    )
    try:
        yield count
    finally:
        hook.remove()


class Bench:
    """One built pipeline, the engine assembled over it, and the ways to time them."""

    def __init__(self, opts: Options, device: Device, pipe: Any | None = None) -> None:
        self.opts = opts
        self.device = device
        began = time.perf_counter()
        if pipe is not None:
            self.pipe = pipe
        elif opts.tiny:
            from qie_engine.tiny_model import build_tiny_pipeline

            self.pipe = build_tiny_pipeline(variant=opts.variant)
        else:
            from benchmarks.full_size_model import build_full_pipeline

            self.pipe = build_full_pipeline(opts.variant, device="cuda", dtype=device.dtype)
        device.sync()
        self.build_s = round(time.perf_counter() - began, 2)
        self.weights_gib = device.allocated_gib()
        self.pipe.set_progress_bar_config(disable=True)
        self.images = [inputs.photo_like(opts.size, opts.size, seed=i) for i in range(8)]
        self._scratch = tempfile.TemporaryDirectory(prefix="bench-gpu-")
        self.lora_dir = self._write_lora()
        self.editor: QwenEditor | None = None
        kind = "given" if pipe is not None else "tiny" if opts.tiny else "full-size"
        say(f"{kind} pipeline ready in {self.build_s}s, weights {self.weights_gib} GiB")

    def _write_lora(self) -> Path:
        from benchmarks.full_size_model import LORA_RANK, write_random_lora

        rank = 4 if self.opts.tiny else LORA_RANK
        return write_random_lora(self.pipe.transformer, Path(self._scratch.name) / "lora", rank)

    @property
    def condition_pixels(self) -> int | None:
        from qie_engine.tiny_model import STAND_INS

        # The tiny model is measured as it is served; the full size keeps diffusers' ~1 MP.
        return STAND_INS.condition_pixels if self.opts.tiny else None

    def folder(self) -> Any:
        """The facts a model folder would give, for a pipeline built in memory."""
        from qie_engine.model_folder import DevStandIns, ModelFolder

        stand_ins = DevStandIns(
            condition_pixels=self.condition_pixels, cache_threshold=self.opts.cache_threshold
        )
        zero_cond_t = bool(self.pipe.transformer.config.get("zero_cond_t", False))
        return ModelFolder(
            path=Path("(built in memory)"),
            pipeline=type(self.pipe).__name__,
            random_weights=True,
            zero_cond_t=zero_cond_t,
            stand_ins=stand_ins,
        )

    def settings(self, presets: tuple[Preset, ...], quantization: str = "none") -> Any:
        from qie_engine.qwen_settings import QwenSettings

        return QwenSettings(
            model_id="(random full-size weights)" if not self.opts.tiny else "(tiny)",
            device=self.device.torch_device.type,
            lora_path=str(self.lora_dir),
            quantization=quantization,  # type: ignore[arg-type]
            attention_backend=self.opts.attention_backend,
            compile_blocks=self.opts.compile,
            presets=presets,
            warmup=False,
        )

    def assemble(
        self, presets: tuple[Preset, ...] = tuple(PRESETS), quantization: str = "none"
    ) -> QwenEditor:
        """The engine's own loader code over the built pipeline: LoRA, placement, cache."""
        from qie_engine.qwen_loader import assemble

        settings = self.settings(presets, quantization)
        self.editor = assemble(
            "qwen_image_edit", self.pipe, self.folder(), settings, self.device.torch_device
        )
        return self.editor

    def release_extras(self) -> None:
        """Undo assemble's LoRA and cache, so a quantization can be applied before them again."""
        import cache_dit

        if self.editor is None:
            return
        if self.editor.lightning is not None and not self.editor.lightning.fused:
            self.pipe.unload_lora_weights()
        if self.editor.step_cache is not None:
            cache_dit.disable_cache(self.pipe.transformer)
        self.editor = None

    # ----- the engine's path: QwenEditor.edit

    def engine_edit(
        self, editor: QwenEditor, preset: Preset, steps: int, index: int = 0
    ) -> dict[str, Any]:
        request = EditRequest(
            images=[self.images[index % len(self.images)]],
            image_infos=[],
            prompt=PROMPTS[index % len(PROMPTS)],
            negative_prompt=None,
            options=EditOptions(preset=preset, steps=steps, seed=index),
        )
        clock = Clock(self.device.sync)
        self.device.reset_peak()
        with counting_full_passes(self.pipe.transformer) as passes:
            cpu_began = time.process_time()
            clock.start()
            outcome = editor.edit(request, lambda _event: clock.step(), lambda: False)
            clock.stop()
            cpu_s = time.process_time() - cpu_began
        full = editor.preset_steps(PRESETS[preset])
        return {
            **clock.figures(steps, full),
            # This process's CPU time: on a shared CPU it moves far less than the wall time.
            "cpu_s": round(cpu_s, 3),
            "peak_gib": self.device.peak_gib(),
            "full_transformer_passes": passes[0],
            "cached_steps": outcome.meta.cached_steps,
            "batched_cfg": editor.settings.batched_cfg,
        }

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
        kwargs.update(self._batch_inputs(batch))
        if cfg > 1.0:
            kwargs["negative_prompt"] = [" "] * batch if batch > 1 else " "
        self.device.reset_peak()
        clock.start()
        with capped_condition_area(self.condition_pixels), torch.inference_mode():
            result = self.pipe(**kwargs)
        clock.stop()
        return {
            **clock.figures(steps),
            "images": len(result.images),
            "peak_gib": self.device.peak_gib(),
        }

    def _batch_inputs(self, batch: int) -> dict[str, Any]:
        if batch == 1:
            return {"image": self.images[0], "prompt": PROMPTS[0]}
        if self.opts.variant == "plus":  # a list of images is one edit's references in Plus
            return {"image": self.images[0], "prompt": PROMPTS[0], "num_images_per_prompt": batch}
        return {
            "image": [self.images[i % len(self.images)] for i in range(batch)],
            "prompt": [PROMPTS[i % len(PROMPTS)] for i in range(batch)],
        }

    def repeat(self, fn: Callable[[], dict[str, Any]], times: int) -> dict[str, Any]:
        runs = [fn() for _ in range(times)]
        best = min(runs, key=lambda r: r["s_per_image"])
        return {**best, "runs": runs, "repeats": times}


def guarded(label: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """One measurement; an error (a kernel this GPU lacks, out of memory) is a row saying so."""
    say(label)
    try:
        return fn()
    except Exception as exc:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return {"error": f"{type(exc).__name__}: {str(exc)[:400]}"}


# --------------------------------------------------------------------------- the parts


def part_stock(bench: Bench) -> dict[str, Any]:
    """Stock diffusers before the engine touched the pipeline: run this part first."""
    o = bench.opts
    say("stock: warm-up")
    bench.stock_call(2, QUALITY.true_cfg_scale)
    rows: dict[str, Any] = {}
    for label, spec in (("quality settings", QUALITY), ("8 steps, no CFG", FAST)):
        steps = scaled(spec, o.steps_scale)

        def run(steps: int = steps, spec: PresetSpec = spec) -> dict[str, Any]:
            figures = bench.stock_call(steps, spec.true_cfg_scale)
            if steps != spec.steps and figures["s_per_step"] is not None:
                figures["estimated_s_per_image_at_full_steps"] = round(
                    figures["s_per_image"] + (spec.steps - steps) * figures["s_per_step"], 3
                )
            return figures

        rows[label] = guarded(
            f"stock {label}: {steps} steps", functools.partial(bench.repeat, run, o.repeats)
        )
    return {
        "rows": rows,
        "note": "diffusers defaults: SDPA attention, no compile, the model's scheduler; the "
        "8-step row has no Lightning LoRA or scheduler (stock diffusers has neither)",
    }


def timed_preset(bench: Bench, editor: QwenEditor, preset: Preset) -> Callable[[], dict]:
    steps = scaled(PRESETS[preset], bench.opts.steps_scale)

    def run() -> dict[str, Any]:
        return bench.engine_edit(editor, preset, steps)

    return functools.partial(bench.repeat, run, bench.opts.repeats)


def measure_presets(bench: Bench, editor: QwenEditor, label: str) -> dict[str, Any]:
    """Each served preset once warmed up, then quality and balanced with BATCHED_CFG."""
    for preset in editor.settings.presets:
        warm_up = functools.partial(bench.engine_edit, editor, preset, 2)
        guarded(f"{label}: warm-up {preset.value}", warm_up)
    rows: dict[str, Any] = {}
    for preset in editor.settings.presets:
        run = timed_preset(bench, editor, preset)
        rows[preset.value] = guarded(f"{label} {preset.value}", run)
    plain = editor.settings
    editor.settings = dataclasses.replace(plain, batched_cfg=True)
    try:
        for preset in (p for p in (Preset.QUALITY, Preset.BALANCED) if p in plain.presets):
            run = timed_preset(bench, editor, preset)
            rows[f"{preset.value}, batched CFG"] = guarded(f"{label} {preset.value} batched", run)
    finally:
        editor.settings = plain
    return rows


def part_presets(bench: Bench) -> dict[str, Any]:
    editor = bench.editor or bench.assemble()
    return {
        "attention_backend": bench.opts.attention_backend,
        "compile": bench.opts.compile,
        "cache_threshold": bench.opts.cache_threshold,
        "rows": measure_presets(bench, editor, "presets"),
    }


def fp8_refusal(device: Device) -> str | None:
    if not device.cuda:
        return "needs a CUDA GPU"
    capability = torch.cuda.get_device_capability(0)
    if capability < (8, 9):
        return f"needs compute capability 8.9+, got {capability}"
    return None


def part_fp8(bench: Bench) -> dict[str, Any]:
    """QUANTIZATION=fp8 as the engine applies it: quantize first, then the LoRA and the cache."""
    from qie_engine.quantization import quantize_built

    refusal = fp8_refusal(bench.device)
    if refusal is not None:
        return {"applied": False, "reason": refusal}
    bench.release_extras()
    before = bench.device.allocated_gib()
    quantize_built(bench.pipe, "fp8")
    bench.device.free()
    out: dict[str, Any] = {
        "applied": True,
        "allocated_gib_before": before,
        "allocated_gib_after": bench.device.allocated_gib(),
    }
    try:
        editor = bench.assemble(quantization="fp8")
    except Exception as exc:  # e.g. the LoRA adapter over FP8 weights: say so, measure the rest
        out["fast_unavailable"] = f"{type(exc).__name__}: {str(exc)[:400]}"
        with contextlib.suppress(Exception):  # whatever part of the adapter did load
            bench.pipe.unload_lora_weights()
        editor = bench.assemble((Preset.QUALITY, Preset.BALANCED), quantization="fp8")
    out["rows"] = measure_presets(bench, editor, "fp8")
    return out


def part_batch(bench: Bench) -> dict[str, Any]:
    """A queue of edits one at a time through the engine, against one batched pipeline call."""
    o = bench.opts
    preset = Preset(o.batch_preset)
    spec = PRESETS[preset]
    steps = scaled(spec, o.steps_scale)
    editor = bench.editor or bench.assemble()
    bench.engine_edit(editor, preset, 2)
    began = time.perf_counter()
    singles = [bench.engine_edit(editor, preset, steps, i) for i in range(o.queue_depth)]
    sequential_s = time.perf_counter() - began
    # The batched call runs the pipeline directly, with the preset's scheduler and adapter.
    bench.pipe.scheduler = editor.schedulers[spec.scheduler]
    bench.pipe.vae.enable_slicing()  # decode one image at a time: 8 at 1 MP at once is GBs
    lora = editor.lightning.active(spec.lightning_lora) if editor.lightning else nullcontext()
    try:
        with lora:
            batched = batched_call(bench, spec, steps)
    finally:
        bench.pipe.vae.disable_slicing()
    sequential = {
        "total_s": round(sequential_s, 3),
        "images_per_s": round(o.queue_depth / sequential_s, 4),
        "s_per_image_median": statistics.median(r["s_per_image"] for r in singles),
    }
    speedup = None
    if batched.get("images_per_s") and batched.get("batch") == o.queue_depth:
        speedup = round(batched["images_per_s"] / sequential["images_per_s"], 3)
    return {
        "preset": preset.value,
        "steps": steps,
        "queue_depth": o.queue_depth,
        "one_at_a_time": sequential,
        "batched": batched,
        "throughput_speedup": speedup,
    }


def batched_call(bench: Bench, spec: PresetSpec, steps: int) -> dict[str, Any]:
    """The largest batch that fits, halving on out-of-memory."""
    size = bench.opts.queue_depth
    failures: list[dict[str, Any]] = []
    while size >= 1:
        try:
            bench.stock_call(2, spec.true_cfg_scale, batch=size)
            figures = bench.stock_call(steps, spec.true_cfg_scale, batch=size)
        except torch.cuda.OutOfMemoryError as exc:
            failures.append({"batch": size, "error": str(exc)[:200]})
            torch.cuda.empty_cache()
            size //= 2
            continue
        return {
            "batch": size,
            "total_s": figures["s_per_image"],
            "images_per_s": round(size / figures["s_per_image"], 4),
            "peak_gib": figures["peak_gib"],
            "out_of_memory": failures,
        }
    return {"batch": 0, "out_of_memory": failures}


def part_plan(opts: Options) -> dict[str, Any]:
    """No GPU: full-size parameter counts on the meta device, token counts, the builder shrunk."""
    from benchmarks.full_size_model import EXPECTED_PARAMS_B, build_full_pipeline, parameter_counts

    say("plan: full size on the meta device")
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
    say("plan: the same builder, shrunk, through the engine on the CPU")
    shrunk = build_full_pipeline(opts.variant, device="cpu", dtype=torch.float32, shrink=True)
    small = Options(**{**vars(opts), "size": 256, "tiny": True})
    bench = Bench(small, Device(tiny=True), pipe=shrunk)
    editor = bench.assemble()
    run = {p.value: bench.engine_edit(editor, p, 2) for p in PRESETS}
    return {
        "parameters": checks,
        "all_ok": all(c["ok"] for c in checks.values()),
        "weights_bf16_gib": weights_gib,
        "fits": {
            "H100 80GB (79.6 GiB usable)": weights_gib < 79.6,
            "H200 141GB": weights_gib < 139.0,
        },
        "text_encoder_sequence_1mp": text_tokens(meta, opts.variant),
        "transformer_image_tokens_1mp": 2 * (1024 // 16) ** 2,
        "shrunk_engine_run": run,
    }


def text_tokens(meta: Any, variant: str) -> dict[str, Any]:
    """How long the text encoder's sequence is for one 1 MP edit, with this tokenizer."""
    if variant == "plus":  # Plus conditions its text encoder on 384x384 images
        image = inputs.photo_like(384, 384)
        text = meta.prompt_template_encode.format(
            "Picture 1: <|vision_start|><|image_pad|><|vision_end|>" + PROMPTS[0]
        )
    else:
        image = inputs.photo_like(1024, 1024)
        text = meta.prompt_template_encode.format(PROMPTS[0])
    ids = meta.processor(text=[text], images=[image], return_tensors="pt")["input_ids"][0]
    image_tokens = int((ids == meta.text_encoder.config.image_token_id).sum())
    return {
        "tokens": int(ids.shape[0]),
        "image_tokens": image_tokens,
        "text_tokens": int(ids.shape[0]) - image_tokens,
        "note": "byte-level tokenizer: text tokens are 3-4x Qwen's BPE count",
    }


# --------------------------------------------------------------------------- main


def figure_rows(rows: dict[str, Any]) -> list[list[Any]]:
    out = []
    for label, r in rows.items():
        out.append(
            [
                label,
                r.get("steps"),
                r.get("s_per_image"),
                r.get("estimated_s_per_image_at_full_steps"),
                r.get("s_per_step"),
                r.get("peak_gib"),
                r.get("full_transformer_passes"),
                r.get("cached_steps"),
                (r.get("error") or "")[:60],
            ]
        )
    return out


def print_part(part: str, result: dict[str, Any]) -> None:
    print()
    if part == "plan":
        for name, check in result["parameters"].items():
            verdict = "ok" if check["ok"] else "MISMATCH"
            print(f"  {name:13} {check['params_b']:>8} B params ({check['expected_b']}): {verdict}")
        print(f"  bf16 weights {result['weights_bf16_gib']} GiB")
        return
    if part == "batch":
        print(f"  one at a time: {result['one_at_a_time']}")
        print(f"  batched: {result['batched']}; speedup {result['throughput_speedup']}")
        return
    if "rows" not in result:
        print(f"  {result}")
        return
    headers = [
        "setting",
        "steps",
        "s/edit",
        "est. full",
        "s/step",
        "peak GiB",
        "passes",
        "cached",
        "error",
    ]
    print(table(headers, figure_rows(result["rows"])))


PART_RUNNERS: dict[str, Callable[[Bench], dict[str, Any]]] = {
    "stock": part_stock,
    "presets": part_presets,
    "fp8": part_fp8,
    "batch": part_batch,
}


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--part", choices=(*PARTS, "suite", "all"), help="default: all with --tiny, else required"
    )
    parser.add_argument("--tiny", action="store_true", help="CPU smoke: the tiny dev pipeline")
    parser.add_argument("--variant", choices=("edit", "plus"), default="edit")
    parser.add_argument("--size", type=int, help="input side (default 1024; 256 with --tiny)")
    parser.add_argument(
        "--steps-scale",
        type=float,
        help="run this share of the 50-step presets' steps (1; 0.1 tiny)",
    )
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--attention-backend", help="ATTENTION_BACKEND (default: diffusers')")
    parser.add_argument("--compile", action="store_true", help="COMPILE_BLOCKS=true")
    parser.add_argument("--cache-threshold", type=float, help="balanced's residual threshold")
    parser.add_argument("--queue-depth", type=int, default=8)
    parser.add_argument("--batch-preset", choices=[p.value for p in PRESETS], default="fast")
    parser.add_argument("--out-dir", type=Path, help="where the JSON goes (default .bench/)")
    args = parser.parse_args(argv)
    if args.part is None and not args.tiny:
        parser.error("--part is required: --part suite on a GPU, --part plan anywhere; or --tiny")
    if args.part in (None, "all"):
        parts = list(PARTS)
    elif args.part == "suite":
        parts = list(SUITE)
    else:
        parts = [args.part]
    return args, parts


def options(args: argparse.Namespace) -> Options:
    from qie_engine.tiny_model import STAND_INS

    default_threshold = STAND_INS.cache_threshold
    assert default_threshold is not None
    return Options(
        tiny=args.tiny,
        variant=args.variant,
        size=args.size or (256 if args.tiny else 1024),
        steps_scale=args.steps_scale
        if args.steps_scale is not None
        else (0.1 if args.tiny else 1.0),
        repeats=args.repeats,
        attention_backend=args.attention_backend,
        compile=args.compile,
        cache_threshold=args.cache_threshold
        if args.cache_threshold is not None
        else default_threshold,
        queue_depth=args.queue_depth,
        batch_preset=args.batch_preset,
    )


def main(argv: list[str] | None = None) -> int:
    args, parts = parse_args(argv)
    opts = options(args)
    base = {
        "benchmark": NAME,
        "tiny": opts.tiny,
        "environment": environment(),
        "versions": versions(),
        "options": vars(opts),
    }
    exit_code = 0
    bench: Bench | None = None
    device: Device | None = None
    for part in parts:
        started = time.perf_counter()
        if part == "plan":
            result = part_plan(opts)
            device_info: dict[str, Any] = {"device": "meta + cpu"}
            exit_code |= 0 if result["all_ok"] else 1
        else:
            device = device or Device(opts.tiny)
            # One model for the whole run: stock first (untouched diffusers), fp8 last (it
            # cannot be undone). A lone part gets a model of its own.
            bench = bench or Bench(opts, device)
            device_info = {
                **device.describe(),
                "build_s": bench.build_s,
                "weights_gib": bench.weights_gib,
            }
            result = PART_RUNNERS[part](bench)
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
