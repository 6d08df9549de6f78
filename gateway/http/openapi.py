"""The OpenAPI document, stating exactly what validation enforces.

FastAPI's generated schema describes form fields only as text. This fills in the rules that
forms.py applies, derived from the same models and settings (so the two cannot disagree):
required parts, prompt lengths, option bounds and enums, the callback allowlist, batch sizes;
the image parts' media types; the one error shape; the security schemes; and links from an
accepted job (or batch) to its routes.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from gateway.http.batch_forms import MIN_BATCH_IMAGES
from gateway.http.forms import (
    IMAGE_ID,
    IMAGE_ID_RULE,
    MAX_CALLBACK_URL_CHARS,
    PLAIN_FIELDS,
    REGION_PATTERN,
)
from gateway.http.schemas import RequestOptions
from gateway.settings import Settings
from qie_engine.image_codec import ALLOWED_FORMATS, MIME_TYPES

IMAGE_TYPES = [MIME_TYPES[f] for f in ALLOWED_FORMATS]
PORT = r"(6553[0-5]|655[0-2]\d|65[0-4]\d\d|6[0-4]\d{3}|[1-5]\d{4}|[1-9]\d{0,3})"
PUBLIC_PATHS = {"/health", "/health/live"}
JOB_LINKS = {
    "GetJob": ("get", "/jobs/{job_id}"),
    "GetResult": ("get", "/jobs/{job_id}/result"),
    "CancelJob": ("post", "/jobs/{job_id}/cancel"),
    "GetEvents": ("get", "/jobs/{job_id}/events"),
}
BATCH_LINKS = {
    "GetBatch": ("get", "/batches/{batch_id}"),
    "GetBatchResult": ("get", "/batches/{batch_id}/result"),
    "CancelBatch": ("post", "/batches/{batch_id}/cancel"),
    "GetBatchEvents": ("get", "/batches/{batch_id}/events"),
}
ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """An optional field's schema without its `null` branch: a form field is never null."""
    branches = [b for b in schema.get("anyOf", []) if b.get("type") != "null"]
    if len(branches) == 1:
        rest = {k: v for k, v in schema.items() if k not in ("anyOf", "default", "title")}
        return {**branches[0], **rest}
    return {k: v for k, v in schema.items() if k not in ("default", "title")}


def _refs_to_components(schema: Any) -> Any:
    """Pydantic's local `$defs` references, pointed at the document's components."""
    return json.loads(json.dumps(schema).replace("#/$defs/", "#/components/schemas/"))


def callback_url_schema(settings: Settings) -> dict[str, Any]:
    """The callback URL's rule. The allowlist itself stays out of a public document: it names
    hosts of the operator's network."""
    if not settings.webhook_allowed_hosts:
        return {
            "type": "string",
            "maxLength": 0,
            "description": "Off: this gateway allows no callback hosts (WEBHOOK_ALLOWED_HOSTS).",
        }
    return {
        "type": "string",
        "format": "uri",
        "maxLength": MAX_CALLBACK_URL_CHARS,
        "pattern": rf"^https?://[^/?#\s]+(:{PORT})?([/?#][\x21-\x7e]*)?$",
        "description": "Webhook called when the job ends: http or https, to a host and port the "
        "operator allows (WEBHOOK_ALLOWED_HOSTS; not listed here), else 422 "
        "callback_not_allowed.",
    }


def _edit_fields(settings: Settings, generated: dict[str, Any]) -> dict[str, Any]:
    """The fields every edit form shares (forms.EditForm), as forms.py enforces them."""
    options = RequestOptions.model_json_schema()
    props = copy.deepcopy(generated["properties"])
    text = settings.max_prompt_chars
    props["prompt"] = {
        **props["prompt"],
        "type": "string",
        "minLength": 1,
        "maxLength": text,
        "pattern": r"\S",
    }
    props["negative_prompt"] = {"type": "string", "maxLength": text}
    props["model"] = {"type": "string", "description": props["model"].get("description", "")}
    props["options"] = {"$ref": "#/components/schemas/RequestOptions"}
    for name in PLAIN_FIELDS:
        props[name] = _refs_to_components(_without_null(options["properties"][name]))
    props["region"] = {
        "type": "string",
        "pattern": REGION_PATTERN,
        "description": f"{props['region']['description']} As a form field: x,y,width,height.",
    }
    props["mask"] = {
        "type": "string",
        "format": "binary",
        "description": generated["properties"]["mask"].get("description", ""),
    }
    return props


def _files(description: str, low: int, high: int) -> dict[str, Any]:
    return {
        "type": "array",
        "items": {"type": "string", "format": "binary"},
        "minItems": low,
        "maxItems": high,
        "description": description,
    }


def form_schema(settings: Settings, generated: dict[str, Any]) -> dict[str, Any]:
    """The /process form, field by field, as forms.py enforces it."""
    props = _edit_fields(settings, generated)
    props["image"] = _files(generated["properties"]["image"].get("description", ""), 1, 3)
    props["callback_url"] = callback_url_schema(settings)
    props["image_id"] = {
        "type": "string",
        "pattern": f"^{IMAGE_ID.pattern}$",
        "maxLength": 128,
        "description": f"Your id for the image, echoed back: {IMAGE_ID_RULE}",
    }
    props["async"] = {
        "type": "boolean",
        "default": False,
        "description": "Same as Prefer: respond-async",
    }
    return {
        "type": "object",
        "properties": props,
        "required": ["image", "prompt"],
        "not": {"required": ["mask", "region"]},  # a region is a rectangle mask: one or the other
        "title": "ProcessForm",
    }


def batch_form_schema(settings: Settings, generated: dict[str, Any]) -> dict[str, Any]:
    """The /batches form, as batch_forms.py enforces it."""
    props = _edit_fields(settings, generated)
    most = settings.max_batch_images
    props["images"] = _files(generated["properties"]["images"].get("description", ""), 1, most)
    props["variations"] = {
        "type": "integer",
        "minimum": MIN_BATCH_IMAGES,
        "maximum": most,
        "description": generated["properties"]["variations"].get("description", "")
        + " (exactly 1 image; models with presets only)",
    }
    return {
        "type": "object",
        "properties": props,
        "required": ["images", "prompt"],
        # Several images, or one image and `variations` (whether a model takes variations is its
        # own fact: GET /models, `presets`).
        # A mask or region goes with one image's variations only.
        "anyOf": [
            {
                "properties": {"images": {"minItems": MIN_BATCH_IMAGES}},
                "not": {"anyOf": [{"required": ["mask"]}, {"required": ["region"]}]},
            },
            {"properties": {"images": {"maxItems": 1}}, "required": ["variations"]},
        ],
        "title": "BatchForm",
    }


def _request_options_components(schema: dict[str, Any]) -> None:
    options = RequestOptions.model_json_schema()
    components = schema["components"]["schemas"]
    for name, definition in options.pop("$defs", {}).items():
        components[name] = definition
    properties = {
        k: _refs_to_components(_without_null(v)) for k, v in options["properties"].items()
    }
    components["RequestOptions"] = {**options, "properties": properties}


def _errors_use_one_shape(schema: dict[str, Any]) -> None:
    """Every error in the one shape. FastAPI's own 422 goes where a route declared none: its
    path parameters are plain text, so nothing there can be malformed."""
    for path in schema["paths"].values():
        for operation in path.values():
            responses = operation.get("responses", {})
            unprompted = responses.get("422", {}).get("content", {}).get("application/json", {})
            if unprompted.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
                del responses["422"]
            for status, response in responses.items():
                if status in ("429", "503") and operation.get("security"):
                    response["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}
    for name in ("HTTPValidationError", "ValidationError"):
        schema["components"]["schemas"].pop(name, None)


def _security(schema: dict[str, Any]) -> None:
    schema["components"]["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "description": "An API key"},
        "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    }
    for path, item in schema["paths"].items():
        for operation in item.values():
            if path not in PUBLIC_PATHS:
                operation["security"] = [{"bearer": []}, {"apiKey": []}]
                operation["responses"].setdefault(
                    "401",
                    {
                        "description": "No valid API key",
                        "content": {"application/json": {"schema": dict(ERROR_REF)}},
                    },
                )


def _file_part(name: str, filename: str) -> dict[str, Any]:
    """A file part: it carries a file name (any name; the bytes decide the type)."""
    return {
        "contentType": ", ".join(IMAGE_TYPES),
        "headers": {
            "Content-Disposition": {
                "schema": {"type": "string"},
                "example": f'form-data; name="{name}"; filename="{filename}"',
            }
        },
    }


def _multipart(form: str, files: str) -> dict[str, Any]:
    return {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {"$ref": f"#/components/schemas/{form}"},
                "encoding": {
                    files: _file_part(files, "photo.png"),
                    "mask": _file_part("mask", "mask.png"),
                    "options": {"contentType": "application/json"},
                },
            }
        },
    }


def _accepted(
    schema: dict[str, Any], operation: dict[str, Any], links: dict[str, tuple[str, str]], key: str
) -> None:
    """The 202 answer: its Location, and links from its id to the routes that take it."""
    accepted = operation["responses"]["202"]
    accepted["headers"] = {"Location": {"schema": {"type": "string"}, "description": "Its URL"}}
    accepted["links"] = {
        name: {
            "operationId": schema["paths"][path][method]["operationId"],
            "parameters": {key: f"$response.body#/{key}"},
        }
        for name, (method, path) in links.items()
    }


def _binary(response: dict[str, Any], *mimes: str) -> None:
    for mime in mimes:
        response["content"][mime] = {"schema": {"type": "string", "format": "binary"}}


def _process_operation(schema: dict[str, Any], settings: Settings) -> None:
    operation = schema["paths"]["/process"]["post"]
    generated = schema["components"]["schemas"].pop("ProcessForm")
    schema["components"]["schemas"]["ProcessForm"] = form_schema(settings, generated)
    operation["requestBody"] = _multipart("ProcessForm", "image")
    _binary(operation["responses"]["200"], *IMAGE_TYPES)
    _accepted(schema, operation, JOB_LINKS, "job_id")
    _binary(schema["paths"]["/jobs/{job_id}/result"]["get"]["responses"]["200"], *IMAGE_TYPES)


def _batch_operations(schema: dict[str, Any], settings: Settings) -> None:
    operation = schema["paths"]["/batches"]["post"]
    generated = schema["components"]["schemas"].pop("BatchForm")
    schema["components"]["schemas"]["BatchForm"] = batch_form_schema(settings, generated)
    operation["requestBody"] = _multipart("BatchForm", "images")
    operation["responses"].pop("200", None)  # 202 only
    _accepted(schema, operation, BATCH_LINKS, "batch_id")
    result = schema["paths"]["/batches/{batch_id}/result"]["get"]["responses"]["200"]
    result["content"] = {}
    _binary(result, "application/zip")


def build_openapi(app: FastAPI, settings: Settings) -> dict[str, Any]:
    schema = get_openapi(
        title=app.title, version=app.version, summary=app.summary, routes=app.routes
    )
    _request_options_components(schema)
    _process_operation(schema, settings)
    _batch_operations(schema, settings)
    _security(schema)
    _errors_use_one_shape(schema)
    return schema
