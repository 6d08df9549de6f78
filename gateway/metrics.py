"""Prometheus metrics of the gateway, on a registry owned by the app (one per create_app)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._http()
        self._jobs()
        self._service()
        for status in ("pending", "processing"):
            self.jobs_active.labels(status=status).set(0)

    def _http(self) -> None:
        r = self.registry
        self.requests = Counter(
            "qie_http_requests",
            "HTTP requests by route and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.request_duration = Histogram(
            "qie_http_request_duration_seconds",
            "HTTP request latency",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.rejects = Counter("qie_rejects", "Requests refused, by reason", ["reason"], registry=r)

    def _jobs(self) -> None:
        r = self.registry
        self.queue_depth = Gauge(
            "qie_queue_depth", "Jobs waiting for a Triton slot", ["model"], registry=r
        )
        self.queue_wait = Histogram(
            "qie_queue_wait_seconds",
            "Time a job waited for a Triton slot",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inflight = Gauge(
            "qie_inflight_requests", "Edits running in Triton", ["model"], registry=r
        )
        self.jobs = Counter(
            "qie_jobs", "Finished jobs by final status", ["model", "status"], registry=r
        )
        self.jobs_active = Gauge(
            "qie_jobs_active", "Jobs not finished, by status", ["status"], registry=r
        )
        self.edit_duration = Histogram(
            "qie_edit_duration_seconds",
            "Processing time of an edit in Triton",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.last_success = Gauge(
            "qie_last_success_timestamp_seconds",
            "Unix time of the last completed edit",
            ["model"],
            registry=r,
        )

    def _service(self) -> None:
        r = self.registry
        self.model_ready = Gauge(
            "qie_model_ready", "1 when Triton reports the model ready", ["model"], registry=r
        )
        self.triton_up = Gauge(
            "qie_triton_up", "1 when the Triton endpoint answers", ["url"], registry=r
        )
        self.store_fullness = Gauge(
            "qie_store_fullness", "Share of the job store's memory bound in use", registry=r
        )
        self.runner_errors = Counter(
            "qie_runner_errors",
            "Errors of a runner loop (taking jobs, renewing leases), each retried with backoff",
            ["loop"],
            registry=r,
        )
