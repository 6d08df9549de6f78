"""Prometheus config, alert rules and the Grafana dashboard, checked with promtool.

promtool comes with Debian's `prometheus` package. The tests that need it skip, saying so,
only when it is not installed; everything else runs regardless.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

# By its top-level name, as `mypy tests/deploy` maps the file; pytest puts this folder on
# sys.path. Tests elsewhere import it as tests.deploy.metric_names.
from metric_names import dashboard_expressions

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "monitoring"
PROMETHEUS_CONFIG = MONITORING / "prometheus.yml"
ALERTS = MONITORING / "alerts.yml"
ALERT_TESTS = MONITORING / "alerts.test.yml"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "qwen-image-edit.json"
DATASOURCES = MONITORING / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = MONITORING / "grafana" / "provisioning" / "dashboards" / "qwen-image-edit.yml"


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    return found


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=False, timeout=60)


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alerts() -> list[dict[str, Any]]:
    return [rule for group in load(ALERTS)["groups"] for rule in group["rules"] if "alert" in rule]


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


# --- Prometheus ------------------------------------------------------------------------------


def test_prometheus_config_is_valid(promtool: str) -> None:
    result = run(promtool, "check", "config", str(PROMETHEUS_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_scrapes_triton_and_the_gateway_and_loads_the_alerts() -> None:
    config = load(PROMETHEUS_CONFIG)
    targets = {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
        for job in config["scrape_configs"]
    }
    assert targets == {"triton": ["triton:8002"], "qwen-image-edit": ["qwen-image-edit:8000"]}
    for job in config["scrape_configs"]:
        assert job.get("metrics_path", "/metrics") == "/metrics"
    assert config["rule_files"] == ["alerts.yml"]
    assert (PROMETHEUS_CONFIG.parent / "alerts.yml").is_file()


# --- Alerts ----------------------------------------------------------------------------------


def test_alert_rules_pass_their_unit_tests(promtool: str) -> None:
    result = run(promtool, "test", "rules", str(ALERT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_weakened_alert_fails_its_unit_tests(promtool: str, tmp_path: Path) -> None:
    # The unit tests must notice when an alert stops firing: raise one threshold tenfold.
    weakened = ALERTS.read_text().replace("> 0.05", "> 0.5")
    assert weakened != ALERTS.read_text()
    (tmp_path / "alerts.yml").write_text(weakened)
    (tmp_path / "alerts.test.yml").write_text(ALERT_TESTS.read_text())
    result = run(promtool, "test", "rules", str(tmp_path / "alerts.test.yml"))
    assert result.returncode != 0
    assert "QieHighErrorRate" in result.stdout + result.stderr


def test_the_alerts_cover_what_operators_must_hear_about() -> None:
    exprs = {rule["alert"]: rule["expr"] for rule in alerts()}
    assert re.search(r'status=~"5\.\."', exprs["QieHighErrorRate"])  # error rate
    assert "histogram_quantile(0.95" in exprs["QieSlowEdits"]  # p95 latency
    assert "deriv(qie_queue_depth" in exprs["QieQueueGrowing"]  # a growing queue
    assert "qie_model_ready" in exprs["QieModelNotReady"]  # a model not ready
    assert "nv_gpu_memory_used_bytes" in exprs["QieGpuMemoryNearlyFull"]  # GPU memory
    stalled = exprs["QieEditsStalled"]  # no success while jobs wait
    assert "qie_last_success_timestamp_seconds" in stalled
    assert "qie_queue_depth" in stalled


def test_every_alert_has_a_severity_and_readable_annotations() -> None:
    for rule in alerts():
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["description"], rule["alert"]


def test_every_alert_is_tested_firing_and_tested_quiet() -> None:
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in load(ALERT_TESTS)["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alerts()}
    assert names - fired == set(), "alerts never seen firing in a test"
    assert names - quiet == set(), "alerts never seen staying quiet in a test"


# --- Grafana ---------------------------------------------------------------------------------


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def test_dashboard_queries_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    # promtool parses PromQL in rule files, so each query becomes a recording rule. Grafana's
    # variables are replaced by what they expand to.
    rules = [
        {
            "record": f"dashboard:query_{i}",
            "expr": expr.replace("$__rate_interval", "1m").replace("$model", ".*"),
        }
        for i, expr in enumerate(dashboard_expressions(dashboard()))
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_does_reject_a_broken_query(promtool: str, tmp_path: Path) -> None:
    path = tmp_path / "broken.yml"
    broken = {"record": "dashboard:broken", "expr": "sum(rate(qie_jobs_total[5m])"}
    path.write_text(yaml.safe_dump({"groups": [{"name": "broken", "rules": [broken]}]}))
    assert run(promtool, "check", "rules", str(path)).returncode != 0


def test_dashboard_shows_what_the_operators_asked_for() -> None:
    exprs = {p["title"]: " ".join(t["expr"] for t in p["targets"]) for p in panels()}
    assert "histogram_quantile(0.95" in exprs["Processing time percentiles"]
    assert 'status="completed"' in exprs["Success rate"]
    assert "qie_queue_depth" in exprs["Queue depth and edits in flight"]
    assert "qie_queue_wait_seconds_bucket" in exprs["Queue wait"]
    assert "nv_gpu_utilization" in exprs["GPU utilisation"]
    assert "nv_gpu_memory_used_bytes" in exprs["GPU memory"]
    assert "qie_jobs_active" in exprs["Jobs by state"]


def test_dashboard_panels_use_the_provisioned_datasource() -> None:
    (source,) = load(DATASOURCES)["datasources"]
    assert source["url"] == "http://prometheus:9090"  # the compose service
    for panel in panels():
        for target in [panel, *panel["targets"]]:
            assert target["datasource"] == {"type": "prometheus", "uid": source["uid"]}


def test_dashboard_layout_is_sound() -> None:
    ids = [p["id"] for p in dashboard()["panels"]]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    for panel in dashboard()["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, f"panel {panel['title']} overflows the row"
    for panel in panels():
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), f"duplicate refId in {panel['title']}"


def test_grafana_loads_the_dashboards_from_where_compose_mounts_them() -> None:
    (provider,) = load(PROVIDERS)["providers"]
    compose = load(ROOT / "docker-compose.yaml")
    # "source:target[:ro]"; none of these paths holds a colon.
    mounts = dict(volume.split(":")[:2] for volume in compose["services"]["grafana"]["volumes"])
    assert mounts["./monitoring/grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./monitoring/grafana/provisioning"] == "/etc/grafana/provisioning"
