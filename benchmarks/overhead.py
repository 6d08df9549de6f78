"""What each serving hop adds: in-process engine, Triton, gateway + Triton; same model, same input.

One run edits the same 1-megapixel JPEG with the same tiny dev model three ways, interleaved
request by request so background load hits all three alike:

  inprocess  QwenEditor + qie_engine.editor.run_edit in this process (decode, edit, encode)
  triton     tritonclient gRPC stream to qwen_image_edit (one persistent stream, like the gateway)
  gateway    QieClient.edit -> POST /process on `python -m gateway` -> Triton

Each request also reports the engine's own time (run_edit's timings.total_s, from the result
metadata), so "outside" = end-to-end minus engine time is the serving overhead of that very
request, free of the model's run-to-run noise. The added ms per hop are the differences of those
medians. The goal is gateway + Triton <= 10 ms at p50 over in-process.

Then the costs the gateway adds per request are timed one by one at this run's payload and at a
production payload (1 MP JPEG in, a 1 MP PNG out), and the gateway hop is profiled with
pyinstrument (the gateway runs in-process for that; the profile of its event-loop thread is saved
as HTML and text under .bench/).

    .venv/bin/python -m benchmarks.overhead                 # 40 interleaved repetitions
    .venv/bin/python -m benchmarks.overhead --repetitions 100 --steps 2 --profile-requests 30
    .venv/bin/python -m benchmarks.overhead --smoke
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from benchmarks import BENCH_GATEWAY_ENV, BENCH_KEY, inputs
from benchmarks.results import DEFAULT_OUT_DIR, environment, save_json, summarize, table
from dev_stack.console import Voice
from dev_stack.gateways import GatewayThread, gateway, gateway_env
from dev_stack.processes import free_port, stop_on_sigterm
from dev_stack.triton import DEV_MODEL, TritonEndpoints, triton
from dev_stack.triton_stream import EditStream, edit_inputs

NAME = "overhead"
say = Voice(NAME)
MODEL = "qwen_image_edit"
WAYS = ("inprocess", "triton", "gateway")
GOAL_MS = 10.0


class Outcome(NamedTuple):
    e2e_s: float
    engine_s: float  # run_edit's timings.total_s, from the result metadata
    job_s: float  # gateway only: job created -> finished
    result_bytes: int


@dataclass
class Samples:
    e2e_s: list[float] = field(default_factory=list)
    engine_s: list[float] = field(default_factory=list)  # run_edit's timings.total_s
    job_s: list[float] = field(default_factory=list)  # gateway only: job created -> finished
    result_bytes: int = 0

    def summary(self) -> dict[str, Any]:
        outside = [e - m for e, m in zip(self.e2e_s, self.engine_s, strict=True)]
        data = {
            "latency_ms": summarize(self.e2e_s, 1000.0),
            "engine_ms": summarize(self.engine_s, 1000.0),
            "outside_engine_ms": summarize(outside, 1000.0),
            "result_bytes": self.result_bytes,
        }
        if self.job_s:
            # Before the job exists and after it finished: HTTP, multipart, validation, response.
            around_job = [e - j for e, j in zip(self.e2e_s, self.job_s, strict=True)]
            data["outside_job_ms"] = summarize(around_job, 1000.0)
        return data


class Ways:
    """The three ways to run one edit, each returning (end-to-end s, engine s, job s, bytes)."""

    def __init__(self, grpc_url: str, gateway_url: str, settings: Any) -> None:
        from qie_client.client import QieClient
        from qie_engine.qwen_loader import load_editor

        self.editor = load_editor(MODEL, settings)
        self.stream = EditStream(grpc_url)
        self.client = QieClient(gateway_url, BENCH_KEY, timeout=300)
        self.last_result = b""  # the in-process result, for timing the costs on real bytes

    def close(self) -> None:
        self.stream.close()
        self.client.close()

    def http_round_trip(self, repeat: int) -> dict[str, Any]:
        """GET /health/live on the same keep-alive connection: the HTTP floor of a request."""
        return time_it(lambda: self.client.http.get("/health/live").raise_for_status(), repeat)

    def inprocess(self, image: bytes, prompt: str, options: dict[str, Any]) -> Outcome:
        from qie_engine.edit_request import RawEdit
        from qie_engine.editor import run_edit

        began = time.perf_counter()
        raw = RawEdit([image], prompt, options=json.dumps(options))
        data, meta = run_edit(self.editor, raw, lambda _e: None, lambda: False)
        e2e = time.perf_counter() - began
        self.last_result = data
        return Outcome(e2e, meta.timings["total_s"], 0.0, len(data))

    def triton(self, image: bytes, prompt: str, options: dict[str, Any]) -> Outcome:
        began = time.perf_counter()
        self.stream.send(MODEL, edit_inputs([image], prompt, options=options))
        result = self.stream.collect(timeout=300)
        e2e = time.perf_counter() - began
        if result.error or result.final_meta is None or result.image is None:
            raise RuntimeError(f"Triton failed: {result.error}")
        return Outcome(e2e, result.final_meta["timings"]["total_s"], 0.0, len(result.image))

    def gateway(self, image: bytes, prompt: str, options: dict[str, Any]) -> Outcome:
        began = time.perf_counter()
        result = self.client.edit(image, prompt, model=MODEL, options=options)
        e2e = time.perf_counter() - began
        job = self.client.job(result.job_id)  # untimed: the engine's own timings
        return Outcome(
            e2e, job["result"]["timings"]["total_s"], result.processing_time, len(result.image)
        )


class EditInput(NamedTuple):
    image: bytes
    prompt: str
    options: dict[str, Any]


def measure(ways: Ways, edit: EditInput, warmup: int, repetitions: int) -> dict[str, Samples]:
    calls: dict[str, Callable[[bytes, str, dict[str, Any]], Outcome]] = {
        "inprocess": ways.inprocess,
        "triton": ways.triton,
        "gateway": ways.gateway,
    }
    samples = {way: Samples() for way in WAYS}
    for _ in range(warmup):
        for call in calls.values():
            call(*edit)
    for rep in range(repetitions):
        # Rotate the order too, so no way always runs right after another.
        order = WAYS[rep % 3 :] + WAYS[: rep % 3]
        for way in order:
            e2e, engine, job, size = calls[way](*edit)
            s = samples[way]
            s.e2e_s.append(e2e)
            s.engine_s.append(engine)
            if way == "gateway":
                s.job_s.append(job)
            s.result_bytes = size
        if (rep + 1) % 10 == 0:
            say(f"{rep + 1}/{repetitions} repetitions")
    return samples


def hops(summaries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Added ms per hop at p50 and p95, by both methods."""

    def diff(a: str, b: str, metric: str, q: str) -> float | None:
        x, y = summaries[a][metric][q], summaries[b][metric][q]
        return None if x is None or y is None else round(x - y, 3)

    result: dict[str, Any] = {}
    for name, (outer, inner) in {
        "triton_over_inprocess": ("triton", "inprocess"),
        "gateway_over_triton": ("gateway", "triton"),
        "gateway_and_triton_over_inprocess": ("gateway", "inprocess"),
    }.items():
        result[name] = {
            "paired_p50_ms": diff(outer, inner, "outside_engine_ms", "p50"),
            "paired_p95_ms": diff(outer, inner, "outside_engine_ms", "p95"),
            "raw_p50_ms": diff(outer, inner, "latency_ms", "p50"),
            "raw_p95_ms": diff(outer, inner, "latency_ms", "p95"),
        }
    added = result["gateway_and_triton_over_inprocess"]["paired_p50_ms"]
    result["goal"] = {
        "target": f"gateway + Triton add <= {GOAL_MS:.0f} ms at p50 over in-process",
        "value_ms": added,
        "met": added is not None and added <= GOAL_MS,
    }
    return result


# --------------------------------------------------------------------------- the costs, one by one


def time_it(fn: Callable[[], object], repeat: int) -> dict[str, Any]:
    fn()
    samples = []
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - began)
    return summarize(samples, 1000.0)


def micro_costs(upload: bytes, result: bytes, repeat: int) -> dict[str, Any]:
    """Each per-request cost of the hops, timed alone on these bytes (ms)."""
    import httpx
    import numpy as np
    from pydantic import TypeAdapter

    from gateway.http.schemas import ProcessResponse
    from gateway.settings import Settings
    from gateway.store.job_models import EditInputs
    from gateway.triton.client import build_inputs
    from qie_engine.image_codec import ImageLimits, check_image, decode_image, inspect_image

    limits = ImageLimits(
        max_bytes=Settings.model_fields["max_image_bytes"].default,
        max_pixels=Settings.model_fields["max_pixels"].default,
    )
    encoded = base64.b64encode(result).decode()

    def build_response() -> ProcessResponse:
        return ProcessResponse(
            success=True,
            processed_image=encoded,
            processing_time=1.0,
            model_used=MODEL,
            message="Image processed successfully",
            job_id="0" * 32,
            steps=2,
            width=1024,
            height=1024,
            format="png",
            mime_type="image/png",
            random_weights=True,
        )

    response = build_response()
    # FastAPI's path for a route with response_model and the default response class: validate
    # the returned object against the response field, then dump JSON bytes in pydantic-core.
    adapter = TypeAdapter(ProcessResponse)

    def fastapi_serialize() -> bytes:
        return adapter.dump_json(adapter.validate_python(response))

    wire = fastapi_serialize()
    call = EditInputs(MODEL, [upload], "a prompt", None, '{"steps": 2}', "bench")

    def multipart_body() -> bytes:  # what QieClient.edit builds before sending
        return httpx.Request(
            "POST",
            "http://gateway/process",
            files=[("image", ("image", upload))],
            data={"prompt": "a prompt", "model": MODEL, "options": '{"steps": 2}'},
        ).read()

    return {
        "upload_bytes": len(upload),
        "result_bytes": len(result),
        "response_json_bytes": len(wire),
        "gateway": {
            "check_image_header_only_ms": time_it(lambda: inspect_image(upload, limits), repeat),
            "check_image_with_integrity_ms": time_it(lambda: check_image(upload, limits), repeat),
            "base64_encode_result_ms": time_it(lambda: base64.b64encode(result).decode(), repeat),
            "response_model_build_ms": time_it(build_response, repeat),
            "fastapi_validate_and_dump_json_ms": time_it(fastapi_serialize, repeat),
            "triton_inputs_build_ms": time_it(lambda: build_inputs(call), repeat),
            "copy_result_bytes_ms": time_it(lambda: bytes(bytearray(result)), repeat),
            "numpy_object_tensor_ms": time_it(
                lambda: np.array([upload], dtype=object).tobytes(), repeat
            ),
        },
        "client": {
            "multipart_encode_upload_ms": time_it(multipart_body, repeat),
            "json_parse_and_base64_decode_ms": time_it(
                lambda: base64.b64decode(json.loads(wire)["processed_image"]), repeat
            ),
            "json_parse_only_ms": time_it(lambda: json.loads(wire), repeat),
            "base64_decode_only_ms": time_it(lambda: base64.b64decode(encoded), repeat),
        },
        "engine_for_reference": {
            "full_decode_upload_ms": time_it(lambda: decode_image(upload, limits), repeat),
        },
    }


# --------------------------------------------------------------------------- the profile

CATEGORIES: dict[str, Callable[[str, str], bool]] = {
    # (function name, file path) -> whether a frame belongs to the category; inclusive times.
    "multipart form parsing": lambda fn, path: "multipart" in path or "formparsers" in path,
    "image check (check_image)": lambda fn, path: fn == "check_image",
    "base64 of the result": lambda fn, path: fn in ("b64encode", "b64decode"),
    "response model + JSON": lambda fn, path: (
        fn in ("serialize_response", "render", "process_response")
    ),
    "Triton gRPC stream (client side)": lambda fn, path: "tritonclient" in path or "/grpc/" in path,
    "job store and events": lambda fn, path: "gateway/store/" in path,
    "request validation (FastAPI deps)": lambda fn, path: fn == "solve_dependencies",
    "logging": lambda fn, path: "/logging/" in path or path.endswith("json_logging.py"),
    "event loop idle (waiting)": lambda fn, path: fn in ("select", "poll", "epoll"),
}


def categorize(root: Any, requests: int) -> dict[str, float]:
    """Inclusive ms per request in each category (a frame counted once per category)."""
    totals = dict.fromkeys(CATEGORIES, 0.0)

    def walk(frame: Any, inside: frozenset[str]) -> None:
        fn, path = frame.function or "", frame.file_path or ""
        here = set(inside)
        for name, match in CATEGORIES.items():
            if name not in inside and match(fn, path):
                totals[name] += frame.time
                here.add(name)
        for child in frame.children:
            walk(child, frozenset(here))

    if root is not None:
        walk(root, frozenset())
        totals["profiled wall time"] = root.time
    return {k: round(v * 1000.0 / max(1, requests), 3) for k, v in totals.items()}


def profile_gateway(grpc_url: str, edit: EditInput, requests: int, out_dir: Path) -> dict[str, Any]:
    """pyinstrument on the event-loop thread of an in-process gateway, over `requests` edits."""
    from pyinstrument import Profiler

    from qie_engine.json_logging import JsonFormatter

    # Log as `python -m gateway` does (JSON lines at INFO), to /dev/null, so logging is profiled.
    root_logger = logging.getLogger()
    saved = (root_logger.handlers[:], root_logger.level)
    sink = open(os.devnull, "w")  # noqa: SIM115 - closed in the finally below
    handler = logging.StreamHandler(sink)
    handler.setFormatter(JsonFormatter())
    root_logger.handlers[:] = [handler]
    root_logger.setLevel(logging.INFO)
    try:
        return _profile(grpc_url, edit, requests, out_dir, Profiler)
    finally:
        root_logger.handlers[:], root_logger.level = saved[0], saved[1]
        sink.close()


def _profile(
    grpc_url: str, edit: EditInput, requests: int, out_dir: Path, profiler_class: Any
) -> dict[str, Any]:
    from qie_client.client import QieClient

    server = GatewayThread(gateway_env([grpc_url], free_port(), **BENCH_GATEWAY_ENV))
    server.start()
    server.wait_models([MODEL])
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(server.stop)
        client = cleanup.enter_context(QieClient(server.url, BENCH_KEY, timeout=120))
        for _ in range(2):
            client.edit(edit.image, edit.prompt, model=MODEL, options=edit.options)
        profiler = profiler_class(interval=0.0005, async_mode="disabled")

        async def start() -> None:  # on the server's loop: the profiler samples that thread
            profiler.start()

        async def stop() -> None:
            profiler.stop()

        began = time.perf_counter()
        server.run(start())
        try:
            for _ in range(requests):
                client.edit(edit.image, edit.prompt, model=MODEL, options=edit.options)
        finally:
            server.run(stop())
        wall = time.perf_counter() - began
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path = out_dir / f"{NAME}-gateway-profile-{stamp}.html"
    text_path = out_dir / f"{NAME}-gateway-profile-{stamp}.txt"
    html_path.write_text(profiler.output_html())
    text_path.write_text(
        profiler.output_text(unicode=True, show_all=True)
        + "\n\nBy self time (flat):\n"
        + profiler.output_text(unicode=True, show_all=True, flat=True)
    )
    session = profiler.last_session
    root = session.root_frame() if session is not None else None
    say(f"profile saved: {html_path}")
    return {
        "requests": requests,
        "wall_s": round(wall, 3),
        "html": str(html_path),
        "text": str(text_path),
        "ms_per_request_inclusive": categorize(root, requests),
        "note": "event-loop thread of an in-process gateway; categories are inclusive and may "
        "nest (the gRPC stream runs inside the job); 'idle' is time the loop waited",
    }


# --------------------------------------------------------------------------- output


def print_report(summaries: dict[str, Any], hop: dict[str, Any], costs: dict[str, Any]) -> None:
    rows = []
    for way in WAYS:
        s = summaries[way]
        rows.append(
            [
                way,
                s["latency_ms"]["p50"],
                s["latency_ms"]["p95"],
                s["engine_ms"]["p50"],
                s["outside_engine_ms"]["p50"],
                s["outside_engine_ms"]["p95"],
                s["result_bytes"],
            ]
        )
    print()
    print(
        table(
            ["way", "p50 ms", "p95 ms", "engine p50", "outside p50", "outside p95", "result B"],
            rows,
        )
    )
    print()
    print(
        table(
            ["hop", "added p50 ms", "added p95 ms", "raw p50 diff", "raw p95 diff"],
            [
                [
                    name,
                    h["paired_p50_ms"],
                    h["paired_p95_ms"],
                    h["raw_p50_ms"],
                    h["raw_p95_ms"],
                ]
                for name, h in hop.items()
                if name != "goal"
            ],
        )
    )
    goal = hop["goal"]
    print(
        f"\ngoal: {goal['target']}: {goal['value_ms']} ms -> {'met' if goal['met'] else 'NOT met'}"
    )
    for label, c in costs.items():
        print(
            f"\ncosts one by one, {label} "
            f"(upload {c['upload_bytes']} B, result {c['result_bytes']} B):"
        )
        cost_rows = []
        for side in ("gateway", "client", "engine_for_reference"):
            for name, s in c[side].items():
                cost_rows.append([side, name, s["p50"], s["p95"]])
        print(table(["where", "cost", "p50 ms", "p95 ms"], cost_rows))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--repetitions", type=int, default=40, help="measured edits per way")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured edits per way first")
    parser.add_argument("--steps", type=int, default=2, help="denoising steps (few: hops show)")
    parser.add_argument("--size", type=int, default=1024, help="side of the square input JPEG")
    parser.add_argument(
        "--output-size",
        type=int,
        help="ask for this output side (default: the pipeline's; the dev model caps it at 256)",
    )
    parser.add_argument("--profile-requests", type=int, default=20, help="0 skips the profile")
    parser.add_argument("--micro-repeat", type=int, default=30)
    parser.add_argument("--triton-url", help="use this Triton (same dev model and settings!)")
    parser.add_argument("--model-id", default=str(DEV_MODEL))
    parser.add_argument("--out-dir", type=Path, help="where the JSON and profile go (.bench/)")
    parser.add_argument("--smoke", action="store_true", help="3 repetitions, 2 profiled requests")
    args = parser.parse_args(argv)
    stop_on_sigterm()
    if args.smoke:
        args.repetitions, args.warmup, args.profile_requests, args.micro_repeat = 3, 1, 2, 3

    from qie_engine.qwen_settings import QwenSettings

    settings = QwenSettings(model_id=args.model_id)
    image = inputs.jpeg(args.size, args.size)
    prompt = inputs.PROMPTS[MODEL]
    options: dict[str, Any] = {"steps": args.steps, "seed": 7, "true_cfg_scale": 1.0}
    if args.output_size:
        options.update(width=args.output_size, height=args.output_size)
    out_dir = args.out_dir or DEFAULT_OUT_DIR
    started = time.perf_counter()
    with ExitStack() as stack:
        endpoints = stack.enter_context(
            triton(
                [MODEL],
                external=TritonEndpoints.given(args.triton_url),
                model_id=args.model_id,
            )
        )
        gw = stack.enter_context(gateway([endpoints.grpc_url], [MODEL], **BENCH_GATEWAY_ENV))
        say(f"Triton {endpoints.grpc_url}, gateway {gw.url}; loading the in-process engine")
        ways = Ways(endpoints.grpc_url, gw.url, settings)
        stack.callback(ways.close)
        say(f"{args.warmup} warm-up + {args.repetitions} measured edits per way")
        edit = EditInput(image, prompt, options)
        samples = measure(ways, edit, args.warmup, args.repetitions)
        summaries = {way: samples[way].summary() for way in WAYS}
        hop = hops(summaries)
        profile = (
            profile_gateway(endpoints.grpc_url, edit, args.profile_requests, out_dir)
            if args.profile_requests > 0
            else None
        )
        dev_result = ways.last_result
        http_floor = ways.http_round_trip(args.micro_repeat)
    costs = {
        "this run's payload": micro_costs(image, dev_result, args.micro_repeat),
        "production payload (1 MP JPEG in, 1 MP PNG out)": micro_costs(
            inputs.jpeg(1024, 1024), inputs.png(1024, 1024), args.micro_repeat
        ),
    }
    print_report(summaries, hop, costs)
    print(f"\nHTTP floor, GET /health/live on a kept-alive connection: {http_floor['p50']} ms p50")
    if profile:
        print("\ngateway profile, ms per request (inclusive, may nest):")
        for name, ms in profile["ms_per_request_inclusive"].items():
            print(f"  {name:40} {ms}")
    payload = {
        "benchmark": NAME,
        "smoke": args.smoke,
        "environment": environment(),
        "config": {
            "model": MODEL,
            "model_id": args.model_id,
            "input": {
                "format": "jpeg",
                "width": args.size,
                "height": args.size,
                "bytes": len(image),
            },
            "options": options,
            "repetitions": args.repetitions,
            "warmup": args.warmup,
            "order": "interleaved, rotating",
        },
        "ways": summaries,
        "hops": hop,
        "micro_costs": costs,
        "http_round_trip_ms": http_floor,
        "profile": profile,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    save_json(NAME, payload, out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
