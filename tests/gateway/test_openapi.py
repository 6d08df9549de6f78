"""The committed docs/openapi.json is the contract Serverpod codes against: it must not drift."""

from __future__ import annotations

import json
import re

import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.settings import Settings
from qie_engine.contract import Preset
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
        "/batches",
        "/batches/{batch_id}",
        "/batches/{batch_id}/result",
        "/batches/{batch_id}/cancel",
        "/batches/{batch_id}/events",
    }
    error = schema["components"]["schemas"]["ErrorBody"]
    assert set(error["properties"]) == {"code", "message", "detail"}
    form = schema["components"]["schemas"]["ProcessForm"]
    assert {"image", "prompt", "model", "options", "callback_url", "image_id"} <= set(
        form["properties"]
    )
    assert form["required"] == ["image", "prompt"]


def test_the_spec_states_the_rules_validation_enforces() -> None:
    """Derived from the same models and settings as forms.py: they cannot disagree."""
    schema = current_openapi()
    form = schema["components"]["schemas"]["ProcessForm"]["properties"]
    settings = Settings.model_validate({"GATEWAY_AUTH_DISABLED": True})
    assert form["prompt"]["minLength"] == 1 and form["prompt"]["pattern"] == r"\S"
    assert form["prompt"]["maxLength"] == settings.max_prompt_chars
    assert (form["steps"]["minimum"], form["steps"]["maximum"]) == (1, 100)
    assert form["seed"]["maximum"] == 2**32 - 1
    enums = schema["components"]["schemas"]
    assert enums["OutputFormat"]["enum"] == ["png", "webp", "jpeg"]
    assert enums["Preset"]["enum"] == [p.value for p in Preset]
    assert form["options"] == {"$ref": "#/components/schemas/RequestOptions"}
    body = schema["paths"]["/process"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert body["encoding"]["image"]["contentType"] == "image/jpeg, image/png, image/webp"
    # The committed document is the compose stack's (callbacks to `serverpod`), which it names
    # nowhere: the allowlist stays with the operator.
    assert re.fullmatch(form["callback_url"]["pattern"], "http://serverpod:8080/hooks/edit")
    assert not re.fullmatch(form["callback_url"]["pattern"], "ftp://serverpod/x")
    assert form["callback_url"]["maxLength"] == 2048
    assert "serverpod" not in OPENAPI_PATH.read_text()
    assert form["image_id"]["pattern"] == "^[A-Za-z0-9._:-]{1,128}$"


def test_without_an_allowlist_the_spec_admits_no_callback_url() -> None:
    app = create_app(Settings.model_validate({"GATEWAY_AUTH_DISABLED": True}))
    form = app.openapi()["components"]["schemas"]["ProcessForm"]["properties"]
    assert form["callback_url"]["maxLength"] == 0
    assert "WEBHOOK_ALLOWED_HOSTS" in form["callback_url"]["description"]


@pytest.mark.parametrize(
    ("path", "prefix", "key"),
    [("/process", "/jobs/", "job_id"), ("/batches", "/batches/", "batch_id")],
)
def test_an_accepted_job_or_batch_links_to_each_of_its_routes(
    path: str, prefix: str, key: str
) -> None:
    schema = current_openapi()
    links = schema["paths"][path]["post"]["responses"]["202"]["links"]
    ids = {
        op["operationId"]
        for route, item in schema["paths"].items()
        if route.startswith(prefix)
        for op in item.values()
    }
    assert len(ids) == 4 and {link["operationId"] for link in links.values()} == ids
    assert all(link["parameters"] == {key: f"$response.body#/{key}"} for link in links.values())


def test_the_batch_form_states_the_batch_limits_of_the_settings() -> None:
    app = create_app(
        Settings.model_validate({"GATEWAY_AUTH_DISABLED": True, "MAX_BATCH_IMAGES": 5})
    )
    schema = app.openapi()
    form = schema["components"]["schemas"]["BatchForm"]
    assert form["required"] == ["images", "prompt"]
    assert form["properties"]["images"]["maxItems"] == 5
    assert (
        form["properties"]["variations"]["minimum"],
        form["properties"]["variations"]["maximum"],
    ) == (2, 5)
    process = schema["components"]["schemas"]["ProcessForm"]["properties"]
    for shared in ("prompt", "negative_prompt", "options", "steps", "seed", "timeout"):
        assert form["properties"][shared] == process[shared]
    body = schema["paths"]["/batches"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert body["encoding"]["images"]["contentType"] == "image/jpeg, image/png, image/webp"
    result = schema["paths"]["/batches/{batch_id}/result"]["get"]["responses"]["200"]
    assert list(result["content"]) == ["application/zip"]


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/process", "POST"),
        ("DELETE", "/jobs/abc", "GET"),
        ("GET", "/jobs/x/cancel", "POST"),
        ("GET", "/batches", "POST"),
        ("DELETE", "/batches/abc", "GET"),
    ],
)
def test_a_method_not_allowed_is_405_with_allow(method: str, path: str, allow: str) -> None:
    client = TestClient(create_app(Settings.model_validate({"GATEWAY_AUTH_DISABLED": True})))
    response = client.request(method, path)
    assert response.status_code == 405
    assert response.headers["Allow"] == allow
    assert response.json()["code"] == "method_not_allowed"
