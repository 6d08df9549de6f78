"""`python -m gateway`: serve the API with uvicorn, settings from the environment."""

from __future__ import annotations

import sys

import uvicorn
from pydantic import ValidationError

from gateway.app import create_app
from gateway.http.server import uvicorn_config
from gateway.settings import Settings
from qie_engine import json_logging


def main() -> None:
    try:
        settings = Settings()
    except ValidationError as exc:
        messages = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        sys.exit(f"gateway: bad configuration: {messages}")
    json_logging.configure(settings.log_level)
    uvicorn.Server(uvicorn_config(create_app(settings), settings)).run()


if __name__ == "__main__":
    main()
