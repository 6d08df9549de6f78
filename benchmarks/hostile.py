"""Heavy use and one hostile client against one replica with Redis and one with the memory store,
in one run (BENCHMARKS.md, "Hostile load"). Each goal is printed, met or not:

- followers: N server-sent event followers on a running job; how many saw its end (goal: all),
  GET /jobs/{id} latency while they follow (goal: Redis p99 within 2x the memory store's), and
  the replica's peak RSS;
- tiny WebP: M concurrent 706-byte WebPs that declare 4096 x 4096 (16.7 MP, the pixel limit);
  the replica's peak RSS (goal: under 512 MiB) and every answer a 202, 413 or 422;
- scan bomb: a progressive JPEG of 8,000 scans; time to the 422 (goal: under 100 ms);
- made-up methods: K requests with invented HTTP methods; /metrics series before and after
  (goal: unchanged; its bytes are reported too: the counts in it grow).

    .venv/bin/python -m benchmarks.hostile            # 1,000 followers, 50 uploads, 1,000 methods
    .venv/bin/python -m benchmarks.hostile --smoke    # a few of each, for the tests
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks import BENCH_GATEWAY_ENV, BENCH_KEY, inputs
from benchmarks.results import environment, save_json, summarize, table
from dev_stack.console import Voice
from dev_stack.gateways import GatewayProcess, gateway
from dev_stack.processes import stop_on_sigterm
from dev_stack.redis import RedisServer
from dev_stack.triton import TritonEndpoints, triton

NAME = "hostile"
say = Voice(NAME)
AUTH = {"Authorization": f"Bearer {BENCH_KEY}"}
MODELS = ("classic_edit", "qwen_image_edit")
GOALS = {"followers_saw_end": 1.0, "p99_ratio": 2.0, "webp_peak_rss_mib": 512, "bomb_ms": 100}
# The job the followers watch: long enough that every one of them connects while it runs.
LONG_EDIT = {"steps": 40, "width": 512, "height": 512, "true_cfg_scale": 1.0, "seed": 1}


@dataclass(frozen=True)
class Plan:
    followers: int
    uploads: int
    methods: int
    bomb_tries: int


class PeakRss:
    """The highest resident set size of a process, sampled every 20 ms while it is entered."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kib = 0
        self._stop = threading.Event()

    def _rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    @contextmanager
    def watching(self) -> Iterator[PeakRss]:
        def sample() -> None:
            while not self._stop.is_set():
                self.peak_kib = max(self.peak_kib, self._rss_kib())
                self._stop.wait(0.02)

        thread = threading.Thread(target=sample, daemon=True)
        self.peak_kib = self._rss_kib()
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()

    @property
    def peak_mib(self) -> float:
        return round(self.peak_kib / 1024, 1)


def submit(url: str, image: bytes, model: str, options: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{url}/process",
        headers={**AUTH, "Prefer": "respond-async"},
        files={"image": ("a.png", image, "application/octet-stream")},
        data={"prompt": "brighter", "model": model, "options": json.dumps(options)},
        timeout=120,
    )


async def follow(client: httpx.AsyncClient, url: str, job_id: str) -> str:
    """How one follower's stream ended: its last event ("completed" when it saw the end), the
    HTTP status it was refused with, or the client's error."""
    try:
        async with client.stream("GET", f"{url}/jobs/{job_id}/events", headers=AUTH) as answer:
            if answer.status_code != 200:
                return f"HTTP {answer.status_code}"
            last = "no event"
            async for line in answer.aiter_lines():
                if line.startswith("event:"):
                    last = line.split(":", 1)[1].strip()
            return last
    except httpx.HTTPError as exc:
        return type(exc).__name__


async def crowd(url: str, job_id: str, followers: int) -> tuple[list[str], list[float]]:
    limits = httpx.Limits(max_connections=followers + 10, max_keepalive_connections=10)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:
        tasks = [asyncio.create_task(follow(client, url, job_id)) for _ in range(followers)]
        latencies = []
        while not all(task.done() for task in tasks):
            began = time.perf_counter()
            await client.get(f"{url}/jobs/{job_id}", headers=AUTH)
            latencies.append(time.perf_counter() - began)
            await asyncio.sleep(0.05)
        return [task.result() for task in tasks], latencies


def followers_phase(process: GatewayProcess, followers: int) -> dict[str, Any]:
    job = submit(process.url, inputs.png(256, 256), "qwen_image_edit", LONG_EDIT).json()
    with PeakRss(process.process.pid if process.process else 0).watching() as rss:
        seen, latencies = asyncio.run(crowd(process.url, job["job_id"], followers))
    return {
        "followers": followers,
        "saw_the_end": seen.count("completed"),
        "endings": dict(Counter(seen)),
        "get_job_ms": summarize(latencies, 1000, 1),
        "peak_rss_mib": rss.peak_mib,
    }


def tiny_webp_phase(process: GatewayProcess, uploads: int) -> dict[str, Any]:
    webp = inputs.flat_webp(4096, 4096)
    answers: list[int] = []

    def upload() -> None:
        answers.append(submit(process.url, webp, "qwen_image_edit", {"steps": 1}).status_code)

    threads = [threading.Thread(target=upload) for _ in range(uploads)]
    with PeakRss(process.process.pid if process.process else 0).watching() as rss:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return {
        "uploads": uploads,
        "bytes_each": len(webp),
        "answers": {str(s): answers.count(s) for s in sorted(set(answers))},
        "peak_rss_mib": rss.peak_mib,
    }


def scan_bomb_phase(url: str, tries: int) -> dict[str, Any]:
    bomb = inputs.jpeg_with_scans(8000, 1024, 1024)
    times, codes = [], []
    for _ in range(tries):
        began = time.perf_counter()
        answer = submit(url, bomb, "classic_edit", {})
        times.append(time.perf_counter() - began)
        codes.append(answer.json().get("code"))
    return {"bytes": len(bomb), "to_refusal_ms": summarize(times, 1000, 1), "codes": codes}


def series(text: str) -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def methods_phase(url: str, methods: int) -> dict[str, Any]:
    """/metrics before and after; the first of each kind of request is sent once before, so
    that only what the made-up methods add is counted (their counts grow, not their series)."""
    with httpx.Client(timeout=30) as client:
        client.request("WARMUP", f"{url}/health")
        client.get(f"{url}/metrics")
        before = client.get(f"{url}/metrics").text
        for i in range(methods):
            client.request(f"M{i:05d}", f"{url}/health")
        after = client.get(f"{url}/metrics").text
    return {
        "methods": methods,
        "metrics_series_before": series(before),
        "metrics_series_after": series(after),
        "metrics_bytes_before": len(before),
        "metrics_bytes_after": len(after),
    }


def replica(endpoints: TritonEndpoints, redis_url: str | None) -> Any:
    env = {**BENCH_GATEWAY_ENV, "MAX_QUEUE_DEPTH": "1000", "REDIS_URL": redis_url or ""}
    return gateway([endpoints.grpc_url], list(MODELS), **env)


def run(endpoints: TritonEndpoints, redis_url: str, plan: Plan) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for store, url in (("memory", None), ("redis", redis_url)):
        with replica(endpoints, url) as process:
            say(f"{store}: {plan.followers} followers on a running job")
            figures[store] = {"followers": followers_phase(process, plan.followers)}
            say(f"{store}: {plan.uploads} tiny WebPs at once")
            figures[store]["tiny_webp"] = tiny_webp_phase(process, plan.uploads)
            say(f"{store}: the scan bomb, {plan.bomb_tries} times")
            figures[store]["scan_bomb"] = scan_bomb_phase(process.url, plan.bomb_tries)
            say(f"{store}: {plan.methods} made-up methods")
            figures[store]["methods"] = methods_phase(process.url, plan.methods)
    return figures


def goals(figures: dict[str, Any]) -> dict[str, Any]:
    memory, redis = figures["memory"], figures["redis"]
    p99 = {s: figures[s]["followers"]["get_job_ms"]["p99"] or 0.0 for s in ("memory", "redis")}
    return {
        "every_follower_saw_the_end": all(
            f["followers"]["saw_the_end"] == f["followers"]["followers"] for f in (memory, redis)
        ),
        "redis_p99_within_2x_memory": p99["redis"] <= GOALS["p99_ratio"] * max(p99["memory"], 1),
        "webp_peak_rss_under_512_mib": all(
            f["tiny_webp"]["peak_rss_mib"] < GOALS["webp_peak_rss_mib"] for f in (memory, redis)
        ),
        "bomb_refused_under_100_ms": all(
            (f["scan_bomb"]["to_refusal_ms"]["p50"] or 0) < GOALS["bomb_ms"]
            for f in (memory, redis)
        ),
        "metrics_series_unchanged": all(
            f["methods"]["metrics_series_before"] == f["methods"]["metrics_series_after"]
            for f in (memory, redis)
        ),
    }


def print_summary(figures: dict[str, Any], met: dict[str, Any]) -> None:
    rows = []
    for store in ("memory", "redis"):
        f = figures[store]
        methods = f["methods"]
        rows.append(
            [
                store,
                f"{f['followers']['saw_the_end']}/{f['followers']['followers']}",
                f["followers"]["get_job_ms"]["p50"],
                f["followers"]["get_job_ms"]["p99"],
                f["followers"]["peak_rss_mib"],
                f["tiny_webp"]["peak_rss_mib"],
                json.dumps(f["tiny_webp"]["answers"]),
                f["scan_bomb"]["to_refusal_ms"]["p50"],
                f"{methods['metrics_series_before']} -> {methods['metrics_series_after']}",
            ]
        )
    headers = ["store", "saw end", "GET p50 ms", "GET p99 ms", "RSS MiB (followers)"]
    headers += ["RSS MiB (WebPs)", "WebP answers", "bomb ms", "/metrics series"]
    print(table(headers, rows))
    for goal, ok in met.items():
        print(f"{goal}: {'met' if ok else 'NOT met'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--followers", type=int, default=1000)
    parser.add_argument("--uploads", type=int, default=50)
    parser.add_argument("--methods", type=int, default=1000)
    parser.add_argument("--bomb-tries", type=int, default=5)
    parser.add_argument("--triton-url", help="a running Triton's gRPC host:port (else started)")
    parser.add_argument("--out-dir", type=Path, help="where the JSON goes (default .bench/)")
    parser.add_argument("--smoke", action="store_true", help="a few of each, for the tests")
    args = parser.parse_args(argv)
    stop_on_sigterm()
    plan = Plan(args.followers, args.uploads, args.methods, args.bomb_tries)
    if args.smoke:
        plan = Plan(followers=20, uploads=4, methods=20, bomb_tries=2)
    # A thousand followers are a thousand sockets here and in the replica.
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    started = time.perf_counter()
    with ExitStack() as stack:
        endpoints = stack.enter_context(
            triton(MODELS, external=TritonEndpoints.given(args.triton_url))
        )
        redis = RedisServer(Path(stack.enter_context(tempfile.TemporaryDirectory())))
        redis.start()
        stack.callback(redis.stop)
        figures = run(endpoints, redis.url, plan)
    met = goals(figures)
    print_summary(figures, met)
    payload = {
        "benchmark": NAME,
        "smoke": args.smoke,
        "environment": environment(),
        "config": {"plan": plan.__dict__, "long_edit": LONG_EDIT, "goals": GOALS},
        "result": {"figures": figures, "goals_met": met},
        "wall_s": round(time.perf_counter() - started, 1),
    }
    save_json(NAME, payload, args.out_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
