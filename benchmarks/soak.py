"""Soak: two gateway replicas on one Redis, hundreds of jobs, one replica SIGKILLed halfway.

Counts what QUALITY.md 34 and 37 ask about: jobs lost (accepted, then unknown), jobs stuck (not
finished when the run ends), the final states by reason, the surviving replica's memory at the
start and the end, and Redis's memory. Clients submit async jobs with an Idempotency-Key to
either replica, move to the other one when theirs stops answering (as a load balancer would),
and follow each job to its end.

    .venv/bin/python -m benchmarks.soak                # 500 jobs, 10 clients
    .venv/bin/python -m benchmarks.soak --jobs 40 --clients 4 --qwen-every 0   # a quick look
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks import BENCH_GATEWAY_ENV, BENCH_KEY, inputs
from benchmarks.results import DEFAULT_OUT_DIR, environment, save_json, table
from dev_stack.console import Voice
from dev_stack.gateways import GatewayProcess, gateway_env
from dev_stack.processes import free_port, stop_on_sigterm
from dev_stack.redis import RedisServer
from dev_stack.triton import DEFAULT_MODELS, triton

NAME = "soak"
say = Voice(NAME)
AUTH = {"Authorization": f"Bearer {BENCH_KEY}"}
FINAL = ("completed", "failed", "cancelled")


@dataclass
class Tally:
    """What the clients saw, shared between their threads."""

    accepted: list[str] = field(default_factory=list)
    refused: collections.Counter[str] = field(default_factory=collections.Counter)
    submitted: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def rss_kib(process: GatewayProcess) -> int:
    assert process.process is not None
    status = Path(f"/proc/{process.process.pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")))


class Clients:
    def __init__(self, replicas: list[GatewayProcess], args: argparse.Namespace) -> None:
        self.replicas = replicas
        self.args = args
        self.tally = Tally()
        self.alive = [True] * len(replicas)
        self.image = inputs.jpeg(128, 96)

    def live_urls(self, first: int) -> list[str]:
        order = [(first + i) % len(self.replicas) for i in range(len(self.replicas))]
        return [self.replicas[i].url for i in order if self.alive[i]]

    def submit(self, n: int, http: httpx.Client) -> str | None:
        qwen = self.args.qwen_every and n % self.args.qwen_every == 0
        data = {"prompt": "make it black and white", "model": "classic_edit"}
        if qwen:
            data = {"prompt": "a sunny day", "model": "qwen_image_edit", "options": '{"steps": 2}'}
        headers = {**AUTH, "Prefer": "respond-async", "Idempotency-Key": uuid.uuid4().hex}
        for url in self.live_urls(n):
            try:
                response = http.post(
                    f"{url}/process",
                    headers=headers,
                    files={"image": ("photo.jpg", self.image, "image/jpeg")},
                    data=data,
                )
            except httpx.HTTPError:
                continue  # that replica is gone: the same key on another one is the same job
            if response.status_code == 202:
                job_id: str = response.json()["job_id"]
                return job_id
            with self.tally.lock:
                self.tally.refused[f"{response.status_code} {response.json().get('code')}"] += 1
            return None
        return None

    def follow(self, job_id: str, http: httpx.Client, deadline: float) -> None:
        while time.monotonic() < deadline:
            for url in self.live_urls(0):
                try:
                    status = http.get(f"{url}/jobs/{job_id}", headers=AUTH).json().get("status")
                except (httpx.HTTPError, ValueError):
                    continue
                if status in FINAL:
                    return
                break
            time.sleep(0.2)

    def worker(self, jobs: range) -> None:
        with httpx.Client(timeout=30) as http:
            for n in jobs:
                job_id = self.submit(n, http)
                with self.tally.lock:
                    self.tally.submitted += 1
                    if job_id is not None:
                        self.tally.accepted.append(job_id)
                if job_id is not None:
                    self.follow(job_id, http, time.monotonic() + self.args.job_timeout)


def started_twice(http: httpx.Client, url: str, job_id: str) -> bool:
    """Whether the job's event stream shows a second attempt (its first runner died)."""
    with http.stream("GET", f"{url}/jobs/{job_id}/events", headers=AUTH) as response:
        return any('"attempt": 2' in line for line in response.iter_lines())


def final_states(
    url: str, job_ids: Sequence[str]
) -> tuple[collections.Counter[str], list[str], int]:
    """Each accepted job's final state (by reason), the ones the survivor does not know, and
    how many ran a second time."""
    states: collections.Counter[str] = collections.Counter()
    lost = []
    retried = 0
    with httpx.Client(timeout=30) as http:
        for job_id in job_ids:
            response = http.get(f"{url}/jobs/{job_id}", headers=AUTH)
            if response.status_code == 404:
                lost.append(job_id)
                continue
            body = response.json()
            reason = (body.get("error") or {}).get("code")
            states[body["status"] + (f" ({reason})" if reason else "")] += 1
            if body["status"] in FINAL:
                retried += started_twice(http, url, job_id)
    return states, lost, retried


def run(args: argparse.Namespace, redis: RedisServer, grpc_url: str) -> dict[str, Any]:
    common = {**BENCH_GATEWAY_ENV, "REDIS_URL": redis.url, "JOB_LEASE_S": str(args.lease_s)}
    common["MAX_QUEUE_DEPTH"] = str(args.jobs)
    replicas = [
        GatewayProcess(gateway_env([grpc_url], free_port(), GATEWAY_REPLICA_ID=name, **common))
        for name in ("replica-a", "replica-b")
    ]
    try:
        for replica in replicas:
            replica.start()
        for replica in replicas:
            replica.wait_models(DEFAULT_MODELS)
        clients = Clients(replicas, args)
        survivor, doomed = replicas[1], replicas[0]
        rss_start = rss_kib(survivor)
        redis_start = redis.info("memory")["used_memory"]
        say(f"{args.jobs} jobs, {args.clients} clients; replica-a dies after {args.jobs // 2}")
        began = time.monotonic()
        with ThreadPoolExecutor(args.clients) as pool:
            work = [range(i, args.jobs, args.clients) for i in range(args.clients)]
            futures = [pool.submit(clients.worker, jobs) for jobs in work]
            while clients.tally.submitted < args.jobs // 2:
                time.sleep(0.05)
            doomed.kill()
            clients.alive[0] = False
            killed_at = time.monotonic() - began
            say(f"SIGKILLed replica-a at {killed_at:.1f}s")
            for future in futures:
                future.result()
        elapsed = time.monotonic() - began
        states, lost, retried = final_states(survivor.url, clients.tally.accepted)
        stuck = sum(n for state, n in states.items() if state.split()[0] not in FINAL)
        rss_end = rss_kib(survivor)
        memory = redis.info("memory")
        return {
            "jobs": args.jobs,
            "clients": args.clients,
            "qwen_every": args.qwen_every,
            "killed_at_s": round(killed_at, 1),
            "elapsed_s": round(elapsed, 1),
            "accepted": len(clients.tally.accepted),
            "refused": dict(clients.tally.refused),
            "lost": len(lost),
            "retried_after_the_kill": retried,
            "stuck": stuck,
            "final_states": dict(sorted(states.items())),
            "survivor_rss_kib": {"start": rss_start, "end": rss_end},
            "redis_used_memory_bytes": {"start": redis_start, "end": memory["used_memory"]},
            "redis_used_memory_peak": memory["used_memory_peak_human"],
            "redis_keys": redis.info("keyspace").get("db0", {}).get("keys", 0),
        }
    finally:
        for replica in replicas:
            replica.stop(timeout=30)
            replica.log_path.unlink(missing_ok=True)


def print_report(result: dict[str, Any]) -> None:
    rows = [
        ["jobs accepted", result["accepted"]],
        ["jobs lost", result["lost"]],
        ["jobs stuck", result["stuck"]],
        ["jobs run again (their replica died)", result["retried_after_the_kill"]],
        *[[f"final: {state}", n] for state, n in result["final_states"].items()],
        ["survivor RSS start / end (MiB)", "{:.1f} / {:.1f}".format(
            result["survivor_rss_kib"]["start"] / 1024, result["survivor_rss_kib"]["end"] / 1024
        )],
        ["Redis used memory start / end (MiB)", "{:.1f} / {:.1f}".format(
            result["redis_used_memory_bytes"]["start"] / 2**20,
            result["redis_used_memory_bytes"]["end"] / 2**20,
        )],
        ["wall time (s)", result["elapsed_s"]],
    ]  # fmt: skip
    print(table(["soak", "value"], rows))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--qwen-every", type=int, default=25, help="every Nth job is a tiny Qwen")
    parser.add_argument("--lease-s", type=float, default=3.0, help="JOB_LEASE_S of the replicas")
    parser.add_argument("--job-timeout", type=float, default=300.0)
    parser.add_argument("--out-dir", type=Path, help="where the JSON goes (default .bench/)")
    args = parser.parse_args(argv)
    stop_on_sigterm()
    with tempfile.TemporaryDirectory(prefix="soak-redis-") as directory:
        redis = RedisServer(Path(directory))
        redis.start()
        try:
            with triton(DEFAULT_MODELS) as endpoints:
                result = run(args, redis, endpoints.grpc_url)
        finally:
            redis.stop()
    print_report(result)
    path = save_json(NAME, {"benchmark": NAME, "environment": environment(), "result": result},
                     args.out_dir or DEFAULT_OUT_DIR)  # fmt: skip
    say(f"saved {path}")
    say(json.dumps({k: result[k] for k in ("lost", "stuck", "final_states")}))
    return 0 if result["lost"] == 0 and result["stuck"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
