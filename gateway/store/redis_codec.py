"""Jobs, their events and their edits as the Redis store writes them (keys: redis_connection.py)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from gateway.store.job_models import EditInputs, Job, JobEvent
from gateway.store.redis_connection import text


def decode_job(flat: Sequence[bytes | str]) -> Job:
    """A job from HGETALL's field, value, ... (values are JSON; `_` fields are the store's)."""
    values = {
        text(flat[i]): json.loads(flat[i + 1])
        for i in range(0, len(flat), 2)
        if not text(flat[i]).startswith("_")
    }
    return Job.model_validate(values)


def decode_events(entries: Sequence[Any]) -> list[JobEvent]:
    """Events from stream entries: (b"<n>-0", {b"event": ..., b"data": <JSON>})."""
    return [
        JobEvent(
            id=int(text(entry_id).split("-")[0]),
            event=text(fields[b"event"]),
            data=json.loads(fields[b"data"]),
        )
        for entry_id, fields in entries
    ]


def request_items(request: EditInputs) -> list[bytes | str]:
    items: list[bytes | str] = [
        "model", request.model,
        "prompt", request.prompt,
        "negative_prompt", request.negative_prompt or "",
        "options_json", request.options_json,
        "request_id", request.request_id,
    ]  # fmt: skip
    for index, image in enumerate(request.images):
        items += [f"image:{index}", image]
    return items


def decode_request(values: dict[bytes, bytes]) -> EditInputs:
    images = sorted((k for k in values if k.startswith(b"image:")), key=lambda k: int(k[6:]))
    return EditInputs(
        model=text(values[b"model"]),
        images=[values[k] for k in images],
        prompt=text(values[b"prompt"]),
        negative_prompt=text(values[b"negative_prompt"]) or None,
        options_json=text(values[b"options_json"]),
        request_id=text(values[b"request_id"]),
    )
