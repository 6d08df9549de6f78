"""Every metric the alerts and dashboards use is emitted by a live Triton and a live gateway."""

from __future__ import annotations

import re

import httpx
import pytest

from dev_stack.triton import TritonServer
from qie_client.client import QieError
from tests import images
from tests.deploy.metric_names import GPU_ONLY_METRICS, used_metric_names
from tests.gateway_server import GatewayServer

pytestmark = pytest.mark.integration
TYPE_LINE = re.compile(r"^# TYPE (\S+) \S+$", re.MULTILINE)


def scraped_families(url: str) -> set[str]:
    return set(TYPE_LINE.findall(httpx.get(url, timeout=10).text))


def test_alerts_and_dashboards_use_only_metrics_that_a_live_scrape_shows(
    gateway: GatewayServer, triton_server: TritonServer
) -> None:
    with gateway.client() as client:
        # Completed, failed and cancelled jobs, and a reject, so every labelled family has series.
        client.edit(images.png_bytes(), "invert", model="classic_edit")
        client.edit(images.png_bytes(), "x", options={"steps": 2})
        failing = client.submit(images.png_bytes(), "x", options={"steps": 50, "timeout": 1})
        list(client.events(failing))
        running = client.submit(images.png_bytes(), "x", options={"steps": 50})
        client.cancel(running)
        with pytest.raises(QieError):
            client.edit(images.png_bytes(), "", model="classic_edit")
    live = scraped_families(f"{gateway.url}/metrics") | scraped_families(triton_server.metrics_url)
    missing = used_metric_names() - live - GPU_ONLY_METRICS
    assert not missing, f"used in monitoring/ but absent from a live scrape: {sorted(missing)}"
    assert {"qie_jobs_total", "nv_inference_request_success"} <= live
