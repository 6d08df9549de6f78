"""N concurrent clients through the gateway with QieClient: success rate, latency, throughput.

Each client is a thread with its own QieClient and sends --requests edits one after another,
either synchronously (POST /process, the image in the JSON answer) or as a job followed over
server-sent events (submit, events until the final one, then GET the result), or alternating
both (--mode mixed). Models alternate too unless --model names one. While the load runs, a
separate poller times GET /health. The defaults are the seed's targets: 10 concurrent clients,
at least 95% of edits succeed, every edit under 30 s and 15 s on average; the script says which
targets are met. Figures are saved as JSON under .bench/.

    .venv/bin/python -m benchmarks.load_test                          # own Triton + gateway
    .venv/bin/python -m benchmarks.load_test --url http://host:8000 --api-key KEY
    .venv/bin/python -m benchmarks.load_test --model qwen_image_edit --mode async --requests 10
    .venv/bin/python -m benchmarks.load_test --smoke
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks import BENCH_GATEWAY_ENV, BENCH_KEY, inputs
from benchmarks.results import environment, save_json, summarize, table
from dev_stack.console import Voice
from dev_stack.gateways import gateway
from dev_stack.processes import stop_on_sigterm
from dev_stack.triton import DEFAULT_MODELS as MODELS
from dev_stack.triton import TritonEndpoints, triton
from qie_client.client import QieClient, QieError

NAME = "load_test"
say = Voice(NAME)
TARGETS = {"clients": 10, "success_rate": 0.95, "max_latency_s": 30.0, "mean_latency_s": 15.0}


@dataclass
class Record:
    client: int
    index: int
    model: str
    mode: str  # sync | async
    ok: bool
    latency_s: float
    started_s: float  # since the load began
    error: str | None = None
    events: int = 0  # SSE events seen (async mode)
    result_bytes: int = 0


@dataclass
class Plan:
    url: str
    api_key: str | None
    clients: int
    requests: int
    models: list[str]
    modes: list[str]
    image: bytes
    options: dict[str, dict[str, Any]]
    timeout_s: float


def edit_once(
    client: QieClient, plan: Plan, model: str, mode: str
) -> tuple[bool, str | None, int, int]:
    """(ok, error, SSE events, result bytes) of one edit."""
    prompt = inputs.PROMPTS.get(model, "make it brighter")
    options = plan.options.get(model) or None
    if mode == "sync":
        result = client.edit(plan.image, prompt, model=model, options=options)
        ok = bool(result.image)
        return ok, None if ok else "empty_image", 0, len(result.image)
    job_id = client.submit(plan.image, prompt, model=model, options=options)
    events, last = 0, ""
    for event in client.events(job_id):
        events += 1
        last = event.event
    if last != "completed":
        return False, f"job_{last or 'no_final_event'}", events, 0
    image = client.result(job_id)
    return bool(image), None if image else "empty_image", events, len(image)


def run_client(
    number: int, plan: Plan, start: threading.Barrier, t0: list[float], out: list[Record]
) -> None:
    with QieClient(plan.url, plan.api_key, timeout=plan.timeout_s) as client:
        start.wait()
        for index in range(plan.requests):
            # Requests in flight at once cover every model, and each round every mode.
            turn = index * plan.clients + number
            model = plan.models[turn % len(plan.models)]
            mode = plan.modes[(turn // len(plan.models)) % len(plan.modes)]
            began = time.perf_counter()
            error: str | None
            try:
                ok, error, events, size = edit_once(client, plan, model, mode)
            except QieError as exc:
                ok, error, events, size = False, f"{exc.status} {exc.code}", 0, 0
            except Exception as exc:  # every failure is a figure, never a lost thread
                ok, error, events, size = False, type(exc).__name__, 0, 0
            out.append(
                Record(
                    client=number,
                    index=index,
                    model=model,
                    mode=mode,
                    ok=ok,
                    latency_s=time.perf_counter() - began,
                    started_s=began - t0[0],
                    error=error,
                    events=events,
                    result_bytes=size,
                )
            )


class HealthPoller(threading.Thread):
    """GET /health every `interval` seconds until stopped: latency and status under load."""

    def __init__(self, url: str, interval: float) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.interval = interval
        self.stopped = threading.Event()
        self.latencies: list[float] = []
        self.statuses: dict[str, int] = {}
        self.errors = 0

    def run(self) -> None:
        with httpx.Client(timeout=10) as http:
            while not self.stopped.is_set():
                began = time.perf_counter()
                try:
                    response = http.get(f"{self.url}/health")
                    self.latencies.append(time.perf_counter() - began)
                    status = str(response.json().get("status", response.status_code))
                    self.statuses[status] = self.statuses.get(status, 0) + 1
                except (httpx.HTTPError, ValueError):
                    self.errors += 1
                self.stopped.wait(self.interval)

    def summary(self) -> dict[str, Any]:
        return {
            "interval_s": self.interval,
            "latency_ms": summarize(self.latencies, 1000.0),
            "statuses": self.statuses,
            "errors": self.errors,
        }


def breakdown(records: list[Record], key: str) -> dict[str, Any]:
    groups: dict[str, list[Record]] = {}
    for record in records:
        groups.setdefault(str(getattr(record, key)), []).append(record)
    return {
        name: {
            "requests": len(group),
            "succeeded": sum(r.ok for r in group),
            "latency_s": summarize([r.latency_s for r in group if r.ok]),
        }
        for name, group in sorted(groups.items())
    }


def evaluate(clients: int, success_rate: float, latency: dict[str, Any]) -> dict[str, Any]:
    """Each of the seed's targets: the goal, the measured value, and whether it is met."""
    max_s, mean_s = latency["max"], latency["mean"]
    return {
        "concurrent_clients": {
            "target": f">= {TARGETS['clients']}",
            "value": clients,
            "met": clients >= TARGETS["clients"],
        },
        "success_rate": {
            "target": f">= {TARGETS['success_rate']:.0%}",
            "value": round(success_rate, 4),
            "met": success_rate >= TARGETS["success_rate"],
        },
        "every_edit_under_s": {
            "target": f"< {TARGETS['max_latency_s']:.0f} s (max)",
            "value": max_s,
            "met": max_s is not None and max_s < TARGETS["max_latency_s"],
        },
        "mean_latency_s": {
            "target": f"< {TARGETS['mean_latency_s']:.0f} s",
            "value": mean_s,
            "met": mean_s is not None and mean_s < TARGETS["mean_latency_s"],
        },
    }


def run_load(plan: Plan, health_interval: float) -> dict[str, Any]:
    records: list[Record] = []
    t0 = [0.0]
    barrier = threading.Barrier(plan.clients + 1)
    threads = [
        threading.Thread(target=run_client, args=(n, plan, barrier, t0, records), daemon=True)
        for n in range(plan.clients)
    ]
    for thread in threads:
        thread.start()
    poller = HealthPoller(plan.url, health_interval)
    t0[0] = time.perf_counter()
    poller.start()
    barrier.wait()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - t0[0]
    poller.stopped.set()
    poller.join(timeout=15)
    ok = [r for r in records if r.ok]
    latency = summarize([r.latency_s for r in ok])
    success_rate = len(ok) / len(records) if records else 0.0
    errors: dict[str, int] = {}
    for record in records:
        if not record.ok:
            errors[record.error or "unknown"] = errors.get(record.error or "unknown", 0) + 1
    return {
        "requests": len(records),
        "succeeded": len(ok),
        "success_rate": round(success_rate, 4),
        "errors": errors,
        "wall_s": round(wall, 3),
        "throughput_edits_per_s": round(len(ok) / wall, 4) if wall > 0 else None,
        "latency_s": latency,
        "by_model": breakdown(records, "model"),
        "by_mode": breakdown(records, "mode"),
        "health_under_load": poller.summary(),
        "targets": evaluate(plan.clients, success_rate, latency),
        "records": [asdict(r) for r in sorted(records, key=lambda r: r.started_s)],
    }


def print_summary(result: dict[str, Any]) -> None:
    lat = result["latency_s"]
    print()
    print(
        f"{result['succeeded']}/{result['requests']} edits succeeded "
        f"({result['success_rate']:.1%}) in {result['wall_s']:.1f} s: "
        f"{result['throughput_edits_per_s']} edits/s"
    )
    if result["errors"]:
        print(f"errors: {result['errors']}")
    rows = [
        ["all", result["succeeded"], lat["mean"], lat["p50"], lat["p95"], lat["p99"], lat["max"]]
    ]
    for group in ("by_model", "by_mode"):
        for name, g in result[group].items():
            s = g["latency_s"]
            rows.append([name, g["succeeded"], s["mean"], s["p50"], s["p95"], s["p99"], s["max"]])
    print(table(["edits", "ok", "mean s", "p50 s", "p95 s", "p99 s", "max s"], rows))
    health = result["health_under_load"]
    h = health["latency_ms"]
    print(
        f"\n/health under load: {h['count']} polls, p50 {h['p50']} ms, p95 {h['p95']} ms, "
        f"p99 {h['p99']} ms, max {h['max']} ms; statuses {health['statuses']}, "
        f"errors {health['errors']}"
    )
    print("\ntargets (the seed's):")
    for name, target in result["targets"].items():
        verdict = "met" if target["met"] else "NOT met"
        print(f"  {name:20} {target['target']:18} measured {target['value']}: {verdict}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--url", help="an already running gateway (default: start Triton + gateway)"
    )
    parser.add_argument("--api-key", help="its API key (with --url)")
    parser.add_argument(
        "--triton-url", help="with no --url: start only the gateway, on this Triton"
    )
    parser.add_argument("--clients", type=int, default=TARGETS["clients"])
    parser.add_argument("--requests", type=int, default=5, help="edits per client")
    parser.add_argument("--model", default="mixed", help="classic_edit, qwen_image_edit or mixed")
    parser.add_argument("--mode", choices=("sync", "async", "mixed"), default="mixed")
    parser.add_argument("--size", type=int, default=1024, help="side of the square input JPEG")
    parser.add_argument(
        "--qwen-options",
        default='{"preset": "fast"}',
        help="options for qwen_image_edit (JSON); the fast preset by default",
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="per request, seconds")
    parser.add_argument("--health-interval", type=float, default=0.25)
    parser.add_argument("--out-dir", type=Path, help="where the JSON goes (default .bench/)")
    parser.add_argument("--smoke", action="store_true", help="2 clients x 2 small edits")
    args = parser.parse_args(argv)
    stop_on_sigterm()

    models = list(MODELS) if args.model == "mixed" else [args.model]
    modes = ["sync", "async"] if args.mode == "mixed" else [args.mode]
    qwen_options = json.loads(args.qwen_options)
    if args.smoke:
        args.clients, args.requests, args.size = 2, 2, 256
        qwen_options = {"steps": 2, "true_cfg_scale": 1.0}
    image = inputs.jpeg(args.size, args.size)
    started = time.perf_counter()
    with ExitStack() as stack:
        if args.url:
            url, key = args.url.rstrip("/"), args.api_key
        else:
            external = TritonEndpoints.given(args.triton_url)
            endpoints = stack.enter_context(triton(models, external=external))
            say(f"Triton ready at {endpoints.grpc_url}")
            url, key = (
                stack.enter_context(gateway([endpoints.grpc_url], models, **BENCH_GATEWAY_ENV)).url,
                BENCH_KEY,
            )
        say(
            f"gateway {url}: {args.clients} clients x {args.requests} edits, {models}, {modes}",
        )
        plan = Plan(
            url=url,
            api_key=key,
            clients=args.clients,
            requests=args.requests,
            models=models,
            modes=modes,
            image=image,
            options={"qwen_image_edit": qwen_options},
            timeout_s=args.timeout,
        )
        result = run_load(plan, args.health_interval)
    print_summary(result)
    payload = {
        "benchmark": NAME,
        "smoke": args.smoke,
        "environment": environment(),
        "config": {
            "gateway": "external" if args.url else "started by the benchmark",
            "url": url,
            "clients": args.clients,
            "requests_per_client": args.requests,
            "models": models,
            "modes": modes,
            "input": {
                "format": "jpeg",
                "width": args.size,
                "height": args.size,
                "bytes": len(image),
            },
            "options": plan.options,
            "targets": TARGETS,
        },
        "result": result,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    save_json(NAME, payload, args.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
