"""The benchmark scripts run end to end in their smoke modes and save sane JSON.

Benchmarks are scripts, never timed tests: these check that each one runs, measures what it
says and writes the keys BENCHMARKS.md documents; no assertion here is about speed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dev_stack.triton import TritonServer

ROOT = Path(__file__).resolve().parent.parent


def run_benchmark(module: str, out_dir: Path, *args: str, timeout: float = 240) -> None:
    done = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{module}", *args, "--out-dir", str(out_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = (done.stdout + done.stderr)[-4000:]
    assert done.returncode == 0, f"benchmarks.{module} failed:\n{output}"


def saved(out_dir: Path, prefix: str) -> dict[str, Any]:
    """The one JSON file a run saved under `prefix`."""
    files = sorted(out_dir.glob(f"{prefix}-2*.json"))
    assert len(files) == 1, f"expected one {prefix} JSON, found {[f.name for f in files]}"
    data: dict[str, Any] = json.loads(files[0].read_text())
    return data


def check_latency_summary(summary: dict[str, Any], count: int | None = None) -> None:
    if count is not None:
        assert summary["count"] == count
    assert summary["count"] >= 1
    assert 0 <= summary["min"] <= summary["p50"] <= summary["p95"] <= summary["max"]


@pytest.mark.integration
def test_perf_analyzer_smoke_measures_both_models_to_the_final_response(
    triton_server: TritonServer, tmp_path: Path
) -> None:
    from benchmarks.perf_analyzer import PrepareError, prepare

    try:
        prepare()  # pip download + apt-get download, cached in .bench/perf_analyzer/
    except (PrepareError, OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"perf_analyzer cannot be prepared on this machine: {exc}")
    run_benchmark(
        "perf_analyzer",
        tmp_path,
        "--smoke",
        "--triton-url",
        triton_server.grpc_url,
        "--metrics-url",
        triton_server.metrics_url.removeprefix("http://"),
    )
    data = saved(tmp_path, "perf_analyzer")
    assert data["smoke"] is True
    assert set(data["results"]) == {"classic_edit", "qwen_image_edit"}
    for model, result in data["results"].items():
        assert result["missing_levels"] == [], model
        (level,) = result["levels"]
        assert level["concurrency"] == 1
        assert level["throughput_infer_per_s"] > 0
        assert level["pa_latency_ms"]["p50"] > 0
        # Progress events come first, the image last: at least one of each per request.
        assert level["responses_per_request"] >= 2
        check_latency_summary(level["final_response_latency_ms"])
        first, final = level["first_response_latency_ms"], level["final_response_latency_ms"]
        assert 0 < first["p50"] <= final["p50"]


@pytest.mark.integration
def test_load_test_smoke_starts_its_stack_and_every_edit_succeeds(tmp_path: Path) -> None:
    run_benchmark("load_test", tmp_path, "--smoke")
    data = saved(tmp_path, "load_test")
    result = data["result"]
    assert data["config"]["gateway"] == "started by the benchmark"
    assert result["requests"] == 4
    assert result["succeeded"] == 4
    assert result["success_rate"] == 1.0
    assert result["errors"] == {}
    assert result["throughput_edits_per_s"] > 0
    check_latency_summary(result["latency_s"], count=4)
    assert set(result["by_model"]) == {"classic_edit", "qwen_image_edit"}
    assert set(result["by_mode"]) == {"sync", "async"}
    async_records = [r for r in result["records"] if r["mode"] == "async"]
    assert async_records
    assert all(r["events"] >= 2 and r["result_bytes"] > 0 for r in async_records)
    check_latency_summary(result["health_under_load"]["latency_ms"])
    assert set(result["targets"]) == {
        "concurrent_clients",
        "success_rate",
        "every_edit_under_s",
        "mean_latency_s",
    }
    assert result["targets"]["success_rate"]["met"] is True
    assert result["targets"]["concurrent_clients"]["met"] is False  # 2 clients in a smoke run


@pytest.mark.integration
def test_overhead_smoke_times_three_ways_and_saves_a_profile(
    triton_server: TritonServer, tmp_path: Path
) -> None:
    run_benchmark("overhead", tmp_path, "--smoke", "--triton-url", triton_server.grpc_url)
    data = saved(tmp_path, "overhead")
    for way in ("inprocess", "triton", "gateway"):
        summary = data["ways"][way]
        check_latency_summary(summary["latency_ms"], count=3)
        check_latency_summary(summary["engine_ms"], count=3)
        assert summary["result_bytes"] > 0
    # Outside the engine: about nothing in process (rounding of the engine's own timings),
    # something through each hop.
    assert abs(data["ways"]["inprocess"]["outside_engine_ms"]["p50"]) < 1.0
    assert data["ways"]["triton"]["outside_engine_ms"]["p50"] > 0
    assert data["ways"]["gateway"]["outside_engine_ms"]["p50"] > 0
    assert data["ways"]["gateway"]["outside_job_ms"]["count"] == 3
    hops = data["hops"]
    assert {
        "triton_over_inprocess",
        "gateway_over_triton",
        "gateway_and_triton_over_inprocess",
    } <= set(hops)
    assert isinstance(hops["goal"]["met"], bool)
    for payload in data["micro_costs"].values():
        for side in ("gateway", "client", "engine_for_reference"):
            assert all(cost["p50"] >= 0 for cost in payload[side].values())
    profile = data["profile"]
    assert profile["requests"] == 2
    assert Path(profile["html"]).is_file()
    assert Path(profile["text"]).read_text().strip()
    assert profile["ms_per_request_inclusive"]["profiled wall time"] > 0


def test_gpu_benchmark_tiny_runs_every_part_on_the_cpu(tmp_path: Path) -> None:
    run_benchmark("gpu_benchmark", tmp_path, "--tiny", "--queue-depth", "2", timeout=600)
    plan = saved(tmp_path, "gpu_benchmark-plan-tiny")["result"]
    assert plan["all_ok"] is True  # the full-size configs give the published parameter counts
    assert plan["text_encoder_sequence_1mp"]["image_tokens"] > 0
    assert set(plan["shrunk_engine_run"]) == {"quality", "balanced", "fast"}
    assert all(run["s_per_image"] > 0 for run in plan["shrunk_engine_run"].values())

    stock = saved(tmp_path, "gpu_benchmark-stock-tiny")["result"]["rows"]
    for row in stock.values():
        assert row["s_per_step"] > 0
        assert row["steps_seen"] == row["steps"]

    rows = saved(tmp_path, "gpu_benchmark-presets-tiny")["result"]["rows"]
    assert set(rows) == {
        "quality",
        "balanced",
        "fast",
        "quality, batched CFG",
        "balanced, batched CFG",
    }
    quality, balanced, fast = rows["quality"], rows["balanced"], rows["fast"]
    assert "error" not in quality and "error" not in balanced and "error" not in fast
    # Behaviour, not speed: CFG doubles the passes, the cache removes some, batching halves them.
    assert quality["full_transformer_passes"] == 2 * quality["steps"]
    assert balanced["cached_steps"] > 0
    assert balanced["full_transformer_passes"] == 2 * balanced["steps"] - balanced["cached_steps"]
    assert fast["steps"] == 8
    assert fast["full_transformer_passes"] == 8
    assert rows["quality, batched CFG"]["full_transformer_passes"] == quality["steps"]

    batch = saved(tmp_path, "gpu_benchmark-batch-tiny")["result"]
    assert batch["one_at_a_time"]["images_per_s"] > 0
    assert batch["batched"]["batch"] == batch["queue_depth"] == 2

    fp8 = saved(tmp_path, "gpu_benchmark-fp8-tiny")["result"]
    assert fp8 == {"applied": False, "reason": "needs a CUDA GPU"}


@pytest.mark.integration
def test_soak_smoke_kills_a_replica_and_loses_no_job(tmp_path: Path) -> None:
    run_benchmark("soak", tmp_path, "--jobs", "12", "--clients", "3", "--qwen-every", "0")
    result = saved(tmp_path, "soak")["result"]
    assert result["accepted"] == 12
    assert (result["lost"], result["stuck"]) == (0, 0)
    assert result["final_states"] == {"completed": 12}
    assert result["killed_at_s"] > 0
    assert set(result["survivor_rss_kib"]) == {"start", "end"}
    assert result["redis_used_memory_bytes"]["end"] > 0


def test_hostile_smoke_runs_every_phase_on_both_stores(
    triton_server: TritonServer, tmp_path: Path
) -> None:
    run_benchmark("hostile", tmp_path, "--smoke", "--triton-url", triton_server.grpc_url)
    data = saved(tmp_path, "hostile")
    figures = data["result"]["figures"]
    for store in ("memory", "redis"):
        followers = figures[store]["followers"]
        assert followers["saw_the_end"] == followers["followers"] == 20
        assert set(figures[store]["tiny_webp"]["answers"]) <= {"202", "413", "422"}
        assert figures[store]["scan_bomb"]["codes"] == ["image_too_complex"] * 2
    assert data["result"]["goals_met"]["metrics_series_unchanged"] is True


@pytest.mark.integration
def test_local_edits_smoke_compares_a_region_with_whole_edits(
    triton_server: TritonServer, tmp_path: Path
) -> None:
    run_benchmark("local_edits", tmp_path, "--smoke", "--triton-url", triton_server.grpc_url)
    data = saved(tmp_path, "local_edits")
    ways = {(w["model"], w["way"]): w for w in data["ways"]}
    assert set(ways) == {
        ("classic_edit", "whole"),
        ("classic_edit", "region"),
        ("qwen_image_edit", "whole"),
        ("qwen_image_edit", "whole_input"),
        ("qwen_image_edit", "region"),
    }
    photo = data["config"]["photo"]["size"]
    for way in ways.values():
        check_latency_summary(way["latency_ms"], count=1)
        assert way["result_bytes"] > 0
    for model in ("classic_edit", "qwen_image_edit"):
        region = ways[(model, "region")]
        assert region["result_size"] == photo and region["crop"][2] < photo[0]
    assert (
        ways[("classic_edit", "region")]["working_size"]
        == ways[("classic_edit", "region")]["crop"][2:]
    )
    assert ways[("qwen_image_edit", "whole")]["result_size"] != photo
    assert ways[("qwen_image_edit", "whole_input")]["result_size"] == photo
    assert (
        ways[("qwen_image_edit", "whole_input")]["working_size"]
        == ways[("qwen_image_edit", "whole")]["result_size"]
    )
