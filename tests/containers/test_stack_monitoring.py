"""The monitoring profile's Prometheus (the Debian-based stand-in) in the running stack.

Asked through its published 127.0.0.1 port: it scrapes the gateway and Triton, and it has loaded
every alert rule of monitoring/alerts.yml. Grafana has no package here to build an image from;
its dashboard is checked statically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from dev_stack.containers import RunningStack
from tests.gateway_server import wait_for

pytestmark = [pytest.mark.containers, pytest.mark.timeout(1800)]
ALERTS = Path(__file__).resolve().parents[2] / "monitoring" / "alerts.yml"
# scrape_interval is 15 s: two rounds and some slack.
SCRAPE_WAIT_S = 60


def api(stack: RunningStack, path: str, **params: str) -> Any:
    response = httpx.get(f"{stack.prometheus_url}/api/v1/{path}", params=params, timeout=10)
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success"
    return body["data"]


def target_health(stack: RunningStack) -> dict[str, str]:
    return {t["labels"]["job"]: t["health"] for t in api(stack, "targets")["activeTargets"]}


def test_prometheus_scrapes_the_gateway_and_triton(stack: RunningStack) -> None:
    wanted = {"qwen-image-edit": "up", "triton": "up"}
    wait_for(lambda: target_health(stack) == wanted, timeout=SCRAPE_WAIT_S, interval=1)
    # What it scraped is the stack's own: the gateway's view of Triton, and Triton's own count
    # of inferences per model (series appear once a scrape has seen them).
    for query in (
        'qie_triton_up{job="qwen-image-edit", url="triton:8001"}',
        'nv_inference_count{job="triton", model="classic_edit"}',
    ):
        wait_for(
            lambda q=query: api(stack, "query", query=q)["result"],
            timeout=SCRAPE_WAIT_S,
            interval=1,
        )


def test_prometheus_loaded_every_alert_rule(stack: RunningStack) -> None:
    expected = {
        rule["alert"]
        for group in yaml.safe_load(ALERTS.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }

    def loaded() -> dict[str, Any]:
        groups = api(stack, "rules")["groups"]
        return {rule["name"]: rule for group in groups for rule in group["rules"]}

    assert set(loaded()) == expected
    # "unknown" until the first evaluation, then "ok" unless the expression fails to run.
    wait_for(
        lambda: all(rule["health"] == "ok" for rule in loaded().values()),
        timeout=SCRAPE_WAIT_S,
        interval=1,
    )
