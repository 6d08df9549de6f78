"""Write the gateway's OpenAPI document to docs/openapi.json (a test fails when they drift).

The document states the rules of the settings it is built with; this one is the compose stack's
as docs/serverpod.md sets it up (defaults, plus WEBHOOK_ALLOWED_HOSTS=serverpod).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gateway.app import create_app
from gateway.settings import Settings

OPENAPI_PATH = Path(__file__).resolve().parent.parent / "docs" / "openapi.json"


def current_openapi() -> dict[str, Any]:
    settings = Settings.model_validate(
        {"GATEWAY_AUTH_DISABLED": True, "WEBHOOK_ALLOWED_HOSTS": "serverpod"}
    )
    schema: dict[str, Any] = create_app(settings).openapi()
    return schema


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    OPENAPI_PATH.write_text(render(current_openapi()))
    print(f"wrote {OPENAPI_PATH}")
