"""The metric-name extractor that the live-scrape test relies on, and what it finds today."""

from __future__ import annotations

# By its top-level name, as `mypy tests/deploy` maps the file; pytest puts this folder on
# sys.path. Tests elsewhere import it as tests.deploy.metric_names.
from metric_names import (
    GPU_ONLY_METRICS,
    base_metric_names,
    dashboard_expressions,
    metric_names_in,
    used_metric_names,
)
from prometheus_client import generate_latest

from gateway.metrics import Metrics


def test_extractor_finds_the_metrics_and_skips_functions_labels_and_keywords() -> None:
    expr = """
      sum by (model, le) (rate(qie_edit_duration_seconds_bucket{model=~"qwen.*", le!="+Inf"}[5m]))
        / on (model) group_left
      sum without (instance) (increase(nv_inference_request_success[1h] offset 5m))
        > 1e3 and bool qie_model_ready == 1
      or absent(qie_queue_depth) unless {__name__="qie_triton_up"}
    """
    assert metric_names_in(expr) == {
        "qie_edit_duration_seconds_bucket",
        "nv_inference_request_success",
        "qie_model_ready",
        "qie_queue_depth",
        "qie_triton_up",
    }


def test_grafana_variables_and_quoted_text_are_not_metric_names() -> None:
    expr = (
        'label_replace(rate(qie_jobs_total{model=~"$model"}[$__rate_interval]),'
        ' "x", "$1", "status", "(fake_metric)")'
    )
    assert metric_names_in(expr) == {"qie_jobs_total"}


def test_histogram_series_fold_into_their_family_but_a_counter_named_count_stays() -> None:
    raw = {
        "qie_edit_duration_seconds_bucket",
        "qie_edit_duration_seconds_sum",
        "qie_queue_wait_seconds_count",  # a unit before _count: a histogram's count series
        "nv_inference_count",  # Triton's counter of inferences, not a histogram's
        "qie_jobs_total",
    }
    assert base_metric_names(raw) == {
        "qie_edit_duration_seconds",
        "qie_queue_wait_seconds",
        "nv_inference_count",
        "qie_jobs_total",
    }


def test_label_values_variables_contribute_only_their_selector() -> None:
    dashboard = {
        "panels": [],
        "templating": {
            "list": [{"type": "query", "query": {"query": "label_values(qie_model_ready, model)"}}]
        },
    }
    (expr,) = dashboard_expressions(dashboard)
    assert metric_names_in(expr) == {"qie_model_ready"}


def test_used_names_are_exporter_families_from_both_alerts_and_dashboard() -> None:
    used = used_metric_names()
    assert {
        "qie_http_requests_total",  # alerts
        "qie_edit_duration_seconds",  # alerts and dashboard, via its _bucket series
        "qie_queue_wait_seconds",  # dashboard only
        "nv_inference_pending_request_count",  # dashboard, from Triton
        "nv_gpu_memory_used_bytes",
    } <= used
    assert "up" not in used  # Prometheus makes it, no exporter does
    assert not any(name.endswith("_bucket") for name in used)


def test_every_gpu_metric_in_use_is_listed_as_gpu_only() -> None:
    gpu_metrics = {name for name in used_metric_names() if name.startswith("nv_gpu_")}
    assert gpu_metrics
    assert gpu_metrics <= GPU_ONLY_METRICS
    assert all(name.startswith("nv_") for name in GPU_ONLY_METRICS)


def test_the_gateway_declares_every_qie_metric_the_monitoring_uses() -> None:
    exposition = generate_latest(Metrics().registry).decode()
    declared = {line.split()[2] for line in exposition.splitlines() if line.startswith("# TYPE ")}
    used = {name for name in used_metric_names() if name.startswith("qie_")}
    assert used - declared == set()
