"""perf_analyzer against classic_edit and the tiny qwen_image_edit, over gRPC streaming.

Both models are decoupled (progress responses, then the image), so perf_analyzer runs with
`-i grpc --streaming`, real input data (a JPEG, a prompt and OPTIONS, written as its --input-data
JSON) and a concurrency sweep `--concurrency-range 1:N`. Its CSV (`-f`) gives throughput and
latency percentiles. perf_analyzer 2.60 prints "using the first response for measuring latency"
for decoupled models, yet its CSV latencies match the time to the LAST response (the edited image)
request by request; the script checks that against its --profile-export-file, from which it also
takes the time to the first response (the first progress event). Figures are saved as JSON under
.bench/.

The binary comes from the `perf-analyzer` PyPI wheel (manylinux_2_38). On a machine with glibc
>= 2.38 it runs as is; on older ones (Debian 12 has 2.36) the script fetches Debian trixie's libc6,
libstdc++6 and libgcc-s1 with `apt-get download` (private sources list and state, the system's
apt configuration untouched), unpacks them with `dpkg -x` and starts the binary through that
glibc's loader. Everything is cached in .bench/perf_analyzer/.

    .venv/bin/python -m benchmarks.perf_analyzer                 # both models, concurrency 1..4
    .venv/bin/python -m benchmarks.perf_analyzer --max-concurrency 8 --models classic_edit
    .venv/bin/python -m benchmarks.perf_analyzer --smoke         # concurrency 1, few requests
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import mmap
import os
import platform
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import inputs
from benchmarks.results import DEFAULT_OUT_DIR, ROOT, environment, save_json, summarize, table
from dev_stack.console import Voice
from dev_stack.processes import stop_on_sigterm
from dev_stack.triton import DEFAULT_MODELS as MODELS
from dev_stack.triton import TritonEndpoints, triton
from qie_engine.contract import INPUT_IMAGES, INPUT_OPTIONS, INPUT_PROMPT

NAME = "perf_analyzer"
say = Voice(NAME)
PA_VERSION = "2.60.0"
CACHE_DIR = ROOT / ".bench" / "perf_analyzer"
GLIBC_NEEDED = (2, 38)
DEBIAN_MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
RUNTIME_PACKAGES = ("libc6", "libstdc++6", "libgcc-s1")
ARCHES = {
    "x86_64": ("x86_64", "amd64", "ld-linux-x86-64.so.2"),
    "aarch64": ("aarch64", "arm64", "ld-linux-aarch64.so.1"),
}


class PrepareError(RuntimeError):
    """perf_analyzer could not be fetched or made runnable on this machine."""


# --------------------------------------------------------------------------- the binary


def glibc_version() -> tuple[int, int] | None:
    try:
        text = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError):
        return None
    match = re.search(r"(\d+)\.(\d+)", text)
    return (int(match[1]), int(match[2])) if match else None


def _run(cmd: Sequence[str], cwd: Path | None = None, timeout: float = 600) -> None:
    done = subprocess.run(
        list(cmd), cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip()[-2000:]
        raise PrepareError(f"{' '.join(cmd[:4])} ... failed ({done.returncode}):\n{tail}")


def _fetch_wheel(target: Path, machine: str) -> Path:
    """pip download the wheel for its platform tag (pip would refuse to install it here)."""
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--only-binary=:all:",
                "--platform",
                f"manylinux_2_38_{machine}",
                "--python-version",
                "3.12",
                "--dest",
                scratch,
                f"perf-analyzer=={PA_VERSION}",
            ]
        )
        wheels = list(Path(scratch).glob("perf_analyzer-*.whl"))
        if not wheels:
            raise PrepareError("pip download gave no perf_analyzer wheel")
        unpacked = Path(scratch) / "unpacked"
        with zipfile.ZipFile(wheels[0]) as wheel:
            wheel.extractall(unpacked)
        binary = unpacked / "perf_analyzer" / "bin" / "perf_analyzer"
        binary.chmod(0o755)
        unpacked.rename(target)  # atomic: an interrupted download leaves no half cache
    return target / "perf_analyzer" / "bin" / "perf_analyzer"


def _fetch_runtime(target: Path, debian_arch: str) -> None:
    """apt-get download trixie's glibc and libstdc++ into a private root; no system file changes."""
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise PrepareError(
            f"glibc {'.'.join(map(str, GLIBC_NEEDED))}+ is needed and apt-get/dpkg are missing; "
            "run perf_analyzer on a newer system (e.g. Ubuntu 24.04)"
        )
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch_name:
        scratch = Path(scratch_name)
        apt = scratch / "apt"
        for sub in ("lists/partial", "archives/partial", "sources.list.d", "preferences.d"):
            (apt / sub).mkdir(parents=True)
        (apt / "status").touch()
        sources = apt / "sources.list"
        sources.write_text(f"deb [signed-by={DEBIAN_KEYRING}] {DEBIAN_MIRROR} trixie main\n")
        options = [
            f"-oDir::Etc::SourceList={sources}",
            f"-oDir::Etc::SourceParts={apt / 'sources.list.d'}",
            f"-oDir::Etc::Preferences={apt / 'preferences'}",
            f"-oDir::Etc::PreferencesParts={apt / 'preferences.d'}",
            f"-oDir::State={apt}",
            f"-oDir::State::Lists={apt / 'lists'}",
            f"-oDir::State::status={apt / 'status'}",
            f"-oDir::Cache={apt}",
            f"-oDir::Cache::Archives={apt / 'archives'}",
            f"-oAPT::Architecture={debian_arch}",
            "-oAPT::Architectures=",
            "-oDebug::NoLocking=1",
        ]
        if os.geteuid() == 0:  # files land in private folders the _apt user cannot write
            options.append("-oAPT::Sandbox::User=root")
        _run(["apt-get", *options, "-qq", "update"])
        debs = scratch / "debs"
        debs.mkdir()
        _run(["apt-get", *options, "-qq", "download", *RUNTIME_PACKAGES], cwd=debs)
        root = scratch / "root"
        for deb in sorted(debs.glob("*.deb")):
            _run(["dpkg", "-x", str(deb), str(root)])
        root.rename(target)


def prepare(cache_dir: Path = CACHE_DIR) -> list[str]:
    """The command prefix that runs perf_analyzer here; fetches and caches what it needs."""
    arch = ARCHES.get(platform.machine())
    if arch is None:
        raise PrepareError(f"no perf_analyzer wheel for {platform.machine()}")
    machine, debian_arch, loader_name = arch
    cache_dir.mkdir(parents=True, exist_ok=True)
    wheel_dir = cache_dir / f"perf_analyzer-{PA_VERSION}"
    binary = wheel_dir / "perf_analyzer" / "bin" / "perf_analyzer"
    if not binary.is_file():
        binary = _fetch_wheel(wheel_dir, machine)
    glibc = glibc_version()
    if glibc is not None and glibc >= GLIBC_NEEDED:
        return [str(binary)]
    runtime = cache_dir / "trixie-runtime"
    if not runtime.is_dir():
        _fetch_runtime(runtime, debian_arch)
    libdir = runtime / "usr" / "lib" / f"{machine}-linux-gnu"
    loader = libdir / loader_name
    if not loader.is_file():
        raise PrepareError(f"{loader} is missing; delete {runtime} and run again")
    # Only libc, libm, libstdc++ and libgcc_s come from trixie; libssl and libz stay the system's.
    return [str(loader), "--library-path", str(libdir), str(binary)]


# --------------------------------------------------------------------------- input data


def triton_bytes_element(value: bytes) -> str:
    """One BYTES element for --input-data's {"b64": ...}: 4-byte little-endian length, then data."""
    return base64.b64encode(struct.pack("<I", len(value)) + value).decode()


def input_data(image: bytes, prompt: str, options: dict[str, Any]) -> dict[str, Any]:
    """perf_analyzer's real-input JSON for the tensor contract (docs/tensor-contract.md)."""
    return {
        "data": [
            {
                # IMAGES is dims [-1], so its shape is given with the content.
                INPUT_IMAGES: {"content": {"b64": triton_bytes_element(image)}, "shape": [1]},
                INPUT_PROMPT: [prompt],
                INPUT_OPTIONS: [json.dumps(options)],
            }
        ]
    }


# --------------------------------------------------------------------------- results


@dataclass
class Level:
    """One concurrency level of one model."""

    concurrency: int
    mode: str  # "stabilized" (count windows) or "fixed_count" (--request-count, no stability)
    csv: dict[str, str]
    final_latency_ms: dict[str, Any] = field(default_factory=dict)
    first_latency_ms_export: dict[str, Any] = field(default_factory=dict)
    responses_per_request: float | None = None

    def to_json(self) -> dict[str, Any]:
        row = self.csv

        def number(key: str, scale: float = 1.0) -> float | None:
            raw = row.get(key, "").strip()
            try:
                return round(float(raw) * scale, 3)
            except ValueError:
                return None

        ms = 1e-3  # perf_analyzer reports microseconds
        pa_p50, final_p50 = number("p50 latency", ms), self.final_latency_ms.get("p50")
        agrees = None
        if pa_p50 is not None and final_p50 is not None:
            agrees = abs(pa_p50 - final_p50) <= max(1.0, 0.02 * final_p50)
        return {
            "concurrency": self.concurrency,
            "mode": self.mode,
            "throughput_infer_per_s": number("Inferences/Second"),
            "response_throughput_per_s": number("Response Throughput"),
            # perf_analyzer's own figures; for our decoupled models: to the final response.
            "pa_latency_ms": {
                "p50": number("p50 latency", ms),
                "p90": number("p90 latency", ms),
                "p95": number("p95 latency", ms),
                "p99": number("p99 latency", ms),
                "avg": number("Avg latency", ms),
            },
            # From the profile export: request sent -> last response (the image) / first response.
            "final_response_latency_ms": self.final_latency_ms,
            "first_response_latency_ms": self.first_latency_ms_export,
            "responses_per_request": self.responses_per_request,
            # Whether perf_analyzer's p50 is the final-response p50 (what the tables assume).
            "pa_p50_matches_final_response": agrees,
            "server_ms": {
                "queue": number("Server Queue", ms),
                "compute_input": number("Server Compute Input", ms),
                "compute_infer": number("Server Compute Infer", ms),
                "compute_output": number("Server Compute Output", ms),
            },
            "gpu": {
                key: row[key]
                for key in (
                    "Avg GPU Utilization",
                    "Avg GPU Power Usage",
                    "Max GPU Memory Usage",
                    "Total GPU Memory",
                )
                if row.get(key)
            },
            "csv": row,
        }


def parse_csv(path: Path) -> dict[int, dict[str, str]]:
    """perf_analyzer's -f CSV, one row per concurrency (its columns vary with the run mode)."""
    if not path.is_file():
        return {}
    rows: dict[int, dict[str, str]] = {}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            try:
                rows[int(row["Concurrency"])] = {k: (v or "") for k, v in row.items() if k}
            except (KeyError, ValueError):
                continue
    return rows


_EXPERIMENT = re.compile(rb'"experiment"\s*:\s*\{\s*"mode"\s*:\s*"(\w+)"\s*,\s*"value"\s*:\s*(\d+)')
_TIMESTAMP = re.compile(rb'"timestamp"\s*:\s*(\d+)')
_RESPONSES = re.compile(rb'"response_timestamps"\s*:\s*\[([\d,\s]*)\]')


def parse_export(path: Path) -> dict[int, list[tuple[int, list[int]]]]:
    """Request and response timestamps (ns) per concurrency from --profile-export-file.

    The export holds every input and output tensor too, as raw bytes inside JSON strings (not
    valid UTF-8, often hundreds of MB), so only the timestamp fields are picked out of the bytes;
    binary payloads cannot fake them, since quotes inside strings are escaped.
    """
    if path.stat().st_size == 0:
        return {}
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return _scan_export(data)


def _scan_export(data: mmap.mmap) -> dict[int, list[tuple[int, list[int]]]]:
    experiments = [(m.start(), int(m[2])) for m in _EXPERIMENT.finditer(data)]
    requests: dict[int, list[tuple[int, list[int]]]] = {value: [] for _, value in experiments}
    timestamps = [(m.start(), int(m[1])) for m in _TIMESTAMP.finditer(data)]
    t_index = 0
    for match in _RESPONSES.finditer(data):
        position = match.start()
        while t_index + 1 < len(timestamps) and timestamps[t_index + 1][0] < position:
            t_index += 1
        if not timestamps or timestamps[t_index][0] > position:
            continue
        owner = [value for start, value in experiments if start < position]
        if not owner:
            continue
        sent = timestamps[t_index][1]
        received = [int(x) for x in match[1].split(b",") if x.strip()]
        requests[owner[-1]].append((sent, received))
    return requests


def latency_from_export(
    requests: list[tuple[int, list[int]]],
) -> tuple[dict[str, Any], dict[str, Any], float | None]:
    """(final-response latency ms, first-response latency ms, responses per request)."""
    answered = [(sent, got) for sent, got in requests if got]
    final = [(max(got) - sent) / 1e6 for sent, got in answered]
    first = [(min(got) - sent) / 1e6 for sent, got in answered]
    per_request = sum(len(got) for _, got in answered) / len(answered) if answered else None
    return summarize(final), summarize(first), per_request


# --------------------------------------------------------------------------- running


@dataclass
class SweepPlan:
    """How one perf_analyzer sweep runs: its limits, windows and what it keeps."""

    out_dir: Path
    max_concurrency: int
    request_count: dict[str, int]  # minimum requests per measurement window, per model
    stability: int
    max_trials: int
    fallback_count: int  # requests per level when a level never stabilizes
    keep_export: bool
    gpu_metrics: bool


def keep(export_file: Path, plan: SweepPlan) -> None:
    """Move a profile export next to the JSON (--keep-export), or delete it: they grow large."""
    if not export_file.is_file():
        return
    if plan.keep_export:
        plan.out_dir.mkdir(parents=True, exist_ok=True)
        target = plan.out_dir / f"{NAME}-{time.strftime('%Y%m%d-%H%M%S')}-{export_file.name}"
        shutil.move(export_file, target)
        say(f"kept {target}")
    else:
        export_file.unlink()


@dataclass(frozen=True)
class PaTarget:
    """What every perf_analyzer run of one model shares."""

    prefix: list[str]
    model: str
    grpc_url: str
    metrics_url: str
    data_file: Path
    gpu_metrics: bool


def pa_command(
    target: PaTarget, csv_file: Path, export_file: Path, concurrency: str, count_args: list[str]
) -> list[str]:
    cmd = [
        *target.prefix,
        "-m",
        target.model,
        "-u",
        target.grpc_url,
        "-i",
        "grpc",
        "--streaming",
        "--input-data",
        str(target.data_file),
        "--concurrency-range",
        concurrency,
        *count_args,
        "-f",
        str(csv_file),
        "--profile-export-file",
        str(export_file),
    ]
    if target.gpu_metrics:
        cmd += ["--verbose-csv", "--collect-metrics", "--metrics-url", target.metrics_url]
    return cmd


def run_pa(cmd: list[str], log: Path, timeout: float) -> int:
    say(" ".join(cmd[cmd.index("-m") :]))
    with log.open("a") as handle:
        handle.write("$ " + " ".join(cmd) + "\n")
        handle.flush()
        try:
            done = subprocess.run(
                cmd, stdout=handle, stderr=subprocess.STDOUT, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired:
            handle.write(f"\n[timed out after {timeout:.0f}s]\n")
            return 124
    return done.returncode


def bench_model(target: PaTarget, work: Path, plan: SweepPlan) -> dict[str, Any]:
    model = target.model
    log = work / f"{model}.log"
    levels: dict[int, Level] = {}
    wanted = list(range(1, plan.max_concurrency + 1))
    # The sweep the brief asks for: one run, --concurrency-range 1:N, stabilized count windows.
    csv_file, export_file = work / f"{model}.csv", work / f"{model}-export.json"
    stabilized = [
        "--measurement-mode",
        "count_windows",
        "--measurement-request-count",
        str(plan.request_count[model]),
        "--stability-percentage",
        str(plan.stability),
        "--max-trials",
        str(plan.max_trials),
    ]
    code = run_pa(
        pa_command(target, csv_file, export_file, f"1:{plan.max_concurrency}", stabilized),
        log,
        timeout=1800,
    )
    exports = parse_export(export_file) if export_file.is_file() else {}
    for concurrency, row in parse_csv(csv_file).items():
        levels[concurrency] = Level(concurrency, "stabilized", row)
        final, first, per_request = latency_from_export(exports.get(concurrency, []))
        levels[concurrency].final_latency_ms = final
        levels[concurrency].first_latency_ms_export = first
        levels[concurrency].responses_per_request = per_request
    keep(export_file, plan)
    # A level that never stabilized (a slow model on a busy machine) is measured once more with a
    # fixed request count: no stability check, so always an answer, marked as such.
    for concurrency in (c for c in wanted if c not in levels):
        say(f"{model} concurrency {concurrency} did not stabilize; fixed-count run")
        csv_file = work / f"{model}-c{concurrency}.csv"
        export_file = work / f"{model}-c{concurrency}-export.json"
        fixed = ["--request-count", str(max(plan.fallback_count, concurrency * 2))]
        run_pa(
            pa_command(target, csv_file, export_file, str(concurrency), fixed),
            log,
            timeout=1800,
        )
        fixed_row = parse_csv(csv_file).get(concurrency)
        if fixed_row is None:
            continue
        level = Level(concurrency, "fixed_count", fixed_row)
        if export_file.is_file():
            final, first, per_request = latency_from_export(
                parse_export(export_file).get(concurrency, [])
            )
            level.final_latency_ms, level.first_latency_ms_export = final, first
            level.responses_per_request = per_request
            keep(export_file, plan)
        levels[concurrency] = level
    missing = [c for c in wanted if c not in levels]
    return {
        "exit_code_sweep": code,
        "levels": [levels[c].to_json() for c in sorted(levels)],
        "missing_levels": missing,
        "log_tail": "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        if missing
        else "",
    }


def print_results(results: dict[str, Any]) -> None:
    rows = []
    for model, result in results.items():
        for level in result["levels"]:
            pa, first = level["pa_latency_ms"], level["first_response_latency_ms"]
            rows.append(
                [
                    model,
                    level["concurrency"],
                    level["mode"],
                    level["throughput_infer_per_s"],
                    pa["p50"],
                    pa["p95"],
                    pa["p99"],
                    first.get("p50"),
                    level["responses_per_request"],
                    level["server_ms"]["queue"],
                    level["server_ms"]["compute_infer"],
                ]
            )
    print()
    print(
        table(
            [
                "model",
                "conc",
                "mode",
                "infer/s",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "1st event p50",
                "resp/req",
                "queue ms",
                "compute ms",
            ],
            rows,
        )
    )
    print(
        "\np50/p95/p99: perf_analyzer's latency, request to final response (the image); "
        "1st event: to the first progress response (profile export)."
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated")
    parser.add_argument("--max-concurrency", type=int, default=4, help="sweep 1..N")
    parser.add_argument("--size", type=int, default=512, help="side of the square input JPEG")
    parser.add_argument(
        "--qwen-options",
        default='{"steps": 2, "seed": 7}',
        help="OPTIONS for qwen_image_edit (JSON); few steps keep a run short",
    )
    parser.add_argument("--classic-count", type=int, default=50, help="requests per window")
    parser.add_argument("--qwen-count", type=int, default=6, help="requests per window")
    parser.add_argument("--stability", type=int, default=20, help="perf_analyzer -s (%%)")
    parser.add_argument("--max-trials", type=int, default=6)
    parser.add_argument("--fallback-count", type=int, default=12)
    parser.add_argument(
        "--triton-url", help="use this Triton gRPC host:port instead of starting one"
    )
    parser.add_argument("--metrics-url", help="its metrics host:port/metrics (with --triton-url)")
    parser.add_argument(
        "--gpu-metrics",
        choices=("auto", "on", "off"),
        default="auto",
        help="collect Triton's GPU metrics into the CSV (auto: when nvidia-smi exists)",
    )
    parser.add_argument(
        "--keep-export", action="store_true", help="keep the (large) profile exports"
    )
    parser.add_argument("--out-dir", type=Path, help="where the JSON goes (default .bench/)")
    parser.add_argument("--cache-dir", type=Path, default=CACHE_DIR)
    parser.add_argument(
        "--prepare-only", action="store_true", help="fetch perf_analyzer, then exit"
    )
    parser.add_argument("--smoke", action="store_true", help="concurrency 1, few requests")
    args = parser.parse_args(argv)
    stop_on_sigterm()

    try:
        prefix = prepare(args.cache_dir)
    except (PrepareError, OSError, subprocess.SubprocessError) as exc:
        say(f"perf_analyzer is not available: {exc}")
        return 3
    say(f"perf_analyzer: {' '.join(prefix)}")
    if args.prepare_only:
        return 0

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    qwen_options = json.loads(args.qwen_options)
    plan = SweepPlan(
        out_dir=args.out_dir or DEFAULT_OUT_DIR,
        max_concurrency=1 if args.smoke else args.max_concurrency,
        request_count={
            "classic_edit": 5 if args.smoke else args.classic_count,
            "qwen_image_edit": 3 if args.smoke else args.qwen_count,
        },
        stability=100 if args.smoke else args.stability,
        max_trials=4 if args.smoke else args.max_trials,
        fallback_count=3 if args.smoke else args.fallback_count,
        keep_export=args.keep_export,
        gpu_metrics=args.gpu_metrics == "on"
        or (args.gpu_metrics == "auto" and shutil.which("nvidia-smi") is not None),
    )
    for model in models:
        plan.request_count.setdefault(model, args.classic_count)
    size = 256 if args.smoke else args.size
    image = inputs.jpeg(size, size)
    started = time.perf_counter()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-pa-") as work_name:
        work = Path(work_name)
        external = TritonEndpoints.given(args.triton_url, args.metrics_url)
        with triton(models, external=external) as endpoints:
            for model in models:
                options = qwen_options if model == "qwen_image_edit" else {}
                data_file = work / f"{model}-input.json"
                data_file.write_text(
                    json.dumps(input_data(image, inputs.PROMPTS.get(model, "edit it"), options))
                )
                target = PaTarget(
                    prefix,
                    model,
                    endpoints.grpc_url,
                    endpoints.metrics_url,
                    data_file,
                    plan.gpu_metrics,
                )
                results[model] = bench_model(target, work, plan)
                results[model]["options"] = options
    print_results(results)
    payload = {
        "benchmark": NAME,
        "smoke": args.smoke,
        "environment": environment(),
        "perf_analyzer": {"version": PA_VERSION, "command_prefix": prefix},
        "config": {
            "models": models,
            "max_concurrency": plan.max_concurrency,
            "input": {"format": "jpeg", "width": size, "height": size, "bytes": len(image)},
            "request_count_per_window": plan.request_count,
            "stability_percent": plan.stability,
            "max_trials": plan.max_trials,
            "protocol": "grpc --streaming",
        },
        "results": results,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    save_json(NAME, payload, args.out_dir)
    incomplete = [m for m, r in results.items() if not r["levels"] or r["missing_levels"]]
    if incomplete:
        say(f"incomplete results for {incomplete}; see log_tail in the JSON")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
