"""The committed docs/openapi.json is the contract Serverpod codes against: it must not drift."""

from __future__ import annotations

import json

from scripts.export_openapi import OPENAPI_PATH, current_openapi, render


def test_committed_openapi_matches_the_app() -> None:
    committed = OPENAPI_PATH.read_text()
    assert committed == render(current_openapi()), (
        "docs/openapi.json is stale: run `.venv/bin/python scripts/export_openapi.py`"
    )


def test_openapi_documents_every_public_route_and_the_error_shape() -> None:
    schema = json.loads(OPENAPI_PATH.read_text())
    assert set(schema["paths"]) >= {
        "/process",
        "/jobs/{job_id}",
        "/jobs/{job_id}/result",
        "/jobs/{job_id}/cancel",
        "/jobs/{job_id}/events",
        "/health",
        "/health/live",
        "/models",
    }
    error = schema["components"]["schemas"]["ErrorBody"]
    assert set(error["properties"]) == {"code", "message", "detail"}
    form = schema["components"]["schemas"]["Body_process_process_post"]["properties"]
    assert {"image", "prompt", "model", "options", "callback_url", "image_id"} <= set(form)
