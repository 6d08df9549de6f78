"""Local edits against whole edits: a phone photo, a region of about 10 %, through the gateway.

For each model (classic_edit and the Qwen model Triton serves: the tiny random-weight one unless
told otherwise, whose pixels mean nothing), one 4000 x 3000 photo is edited these ways, the
requests interleaved so background load hits all alike:

  whole         the plain edit (Qwen: at its ~1 MP working size, and answered at that size)
  whole_input   Qwen only: the plain edit with output_size=input (resized to 4000 x 3000)
  region        region=1400,900,1200,1000 (10 % of the photo): only its padded crop is edited,
                at the model's working size, and stitched back at full resolution

Each way reports its latency (p50 of the repetitions), the engine's own time, the bytes sent
back, the answer's size, and the size the model worked at (X-Local-Edit's working_size for a
region; the model's output for a whole edit).

    .venv/bin/python -m benchmarks.local_edits                      # 5 repetitions
    .venv/bin/python -m benchmarks.local_edits --smoke              # 1 repetition, 800 x 600
    .venv/bin/python -m benchmarks.local_edits --triton-url 127.0.0.1:8001
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import BENCH_GATEWAY_ENV, BENCH_KEY, inputs
from benchmarks.results import DEFAULT_OUT_DIR, environment, save_json, summarize, table
from dev_stack.console import Voice
from dev_stack.gateways import gateway
from dev_stack.processes import stop_on_sigterm
from dev_stack.triton import TritonEndpoints, triton
from qie_client.client import EditResult, QieClient

NAME = "local_edits"
say = Voice(NAME)
MODELS = ("classic_edit", "qwen_image_edit")
PROMPTS = {"classic_edit": "make it black and white", "qwen_image_edit": "make the sky pink"}
PHONE = (4000, 3000)
SMOKE = (800, 600)


def region_of(width: int, height: int) -> tuple[int, int, int, int]:
    """About 10 % of the photo, off its centre: 1400,900,1200,1000 of a 4000 x 3000 one."""
    return (width * 7 // 20, height * 3 // 10, width * 3 // 10, height // 3)


@dataclass
class Way:
    model: str
    name: str
    fields: dict[str, Any]
    latency_s: list[float] = field(default_factory=list)
    engine_s: list[float] = field(default_factory=list)
    last: EditResult | None = None

    def run(self, client: QieClient, photo: bytes) -> None:
        started = time.perf_counter()
        self.last = client.edit(photo, PROMPTS[self.model], model=self.model, **self.fields)
        self.latency_s.append(time.perf_counter() - started)
        self.engine_s.append(self.last.processing_time)

    def summary(self) -> dict[str, Any]:
        assert self.last is not None
        local = self.last.local
        worked_at = local["working_size"] if local else [self.last.width, self.last.height]
        return {
            "model": self.model,
            "way": self.name,
            "fields": self.fields,
            "latency_ms": summarize(self.latency_s, 1000.0),
            "job_ms": summarize(self.engine_s, 1000.0),
            "result_bytes": len(self.last.image),
            "result_size": [self.last.width, self.last.height],
            "working_size": worked_at,
            "crop": local["crop"] if local else None,
        }


def ways(photo_size: tuple[int, int], steps: int) -> list[Way]:
    region = region_of(*photo_size)
    qwen = {"steps": steps, "seed": 7, "true_cfg_scale": 1.0}
    return [
        Way("classic_edit", "whole", {}),
        Way("classic_edit", "region", {"region": region}),
        Way("qwen_image_edit", "whole", {"options": qwen}),
        Way("qwen_image_edit", "whole_input", {"options": {**qwen, "output_size": "input"}}),
        Way("qwen_image_edit", "region", {"options": qwen, "region": region}),
    ]


def measure(gateway_url: str, photo: bytes, all_ways: list[Way], repetitions: int) -> None:
    with QieClient(gateway_url, api_key=BENCH_KEY, timeout=600) as client:
        for way in all_ways:  # warm-up, unmeasured
            way.run(client, photo)
            way.latency_s.clear()
            way.engine_s.clear()
        for repetition in range(repetitions):
            say(f"repetition {repetition + 1} of {repetitions}")
            for way in all_ways:
                way.run(client, photo)


def summaries_of(all_ways: list[Way]) -> list[dict[str, Any]]:
    summaries = [way.summary() for way in all_ways]
    whole = {s["model"]: s for s in summaries if s["way"] == "whole"}
    for s in summaries:
        if s["way"] == "whole_input":  # resized after the edit, which ran at the whole's size
            s["working_size"] = whole[s["model"]]["result_size"]
    return summaries


def report(summaries: list[dict[str, Any]]) -> None:
    rows = [
        [
            s["model"],
            s["way"],
            s["latency_ms"]["p50"],
            s["job_ms"]["p50"],
            s["result_bytes"],
            "x".join(map(str, s["result_size"])),
            "x".join(map(str, s["working_size"])),
        ]
        for s in summaries
    ]
    headers = ["model", "way", "p50 ms", "job p50 ms", "bytes back", "answer", "model saw"]
    print(table(headers, rows))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--repetitions", type=int, default=5, help="measured edits per way")
    parser.add_argument("--steps", type=int, default=4, help="the Qwen model's denoising steps")
    parser.add_argument("--triton-url", help="a running Triton's gRPC host:port (else started)")
    parser.add_argument("--out-dir", type=Path, help="where the JSON goes (.bench/)")
    parser.add_argument("--smoke", action="store_true", help="1 repetition of an 800 x 600 photo")
    args = parser.parse_args(argv)
    stop_on_sigterm()
    photo_size = SMOKE if args.smoke else PHONE
    repetitions = 1 if args.smoke else args.repetitions
    photo = inputs.jpeg(*photo_size)
    all_ways = ways(photo_size, args.steps)
    started = time.perf_counter()
    with ExitStack() as stack:
        endpoints = stack.enter_context(
            triton(MODELS, external=TritonEndpoints.given(args.triton_url))
        )
        gw = stack.enter_context(gateway([endpoints.grpc_url], MODELS, **BENCH_GATEWAY_ENV))
        width, height = photo_size
        say(f"a {width}x{height} JPEG ({len(photo)} bytes), region {region_of(width, height)}")
        measure(gw.url, photo, all_ways, repetitions)
    summaries = summaries_of(all_ways)
    report(summaries)
    payload = {
        "benchmark": NAME,
        "smoke": args.smoke,
        "environment": environment(),
        "config": {
            "photo": {"format": "jpeg", "size": list(photo_size), "bytes": len(photo)},
            "region": list(region_of(*photo_size)),
            "repetitions": repetitions,
            "qwen_steps": args.steps,
            "order": "interleaved, after one unmeasured edit per way",
        },
        "ways": summaries,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    save_json(NAME, payload, args.out_dir or DEFAULT_OUT_DIR)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
