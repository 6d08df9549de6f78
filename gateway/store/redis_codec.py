"""Jobs, their events and their edits as the Redis store writes them (keys: redis_connection.py)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
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


BLOB = "blob:"


def request_items(request: EditInputs) -> tuple[list[bytes | str], dict[str, bytes]]:
    """The edit as a request hash's field, value, ... (each file as a reference to its blob),
    and the blobs by their digest: a file several jobs share is stored once."""
    items: list[bytes | str] = [
        "model", request.model,
        "prompt", request.prompt,
        "negative_prompt", request.negative_prompt or "",
        "options_json", request.options_json,
        "request_id", request.request_id,
    ]  # fmt: skip
    blobs: dict[str, bytes] = {}
    files = [(f"image:{i}", image) for i, image in enumerate(request.images)]
    if request.mask is not None:
        files.append(("mask", request.mask))
    for name, data in files:
        digest = hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        items += [name, BLOB + digest]
    return items, blobs


def blob_digests(values: Mapping[bytes, bytes]) -> list[str]:
    """The blobs a stored request refers to."""
    return [text(v).removeprefix(BLOB) for v in values.values() if v.startswith(BLOB.encode())]


def decode_request(
    values: Mapping[bytes, bytes], blobs: Mapping[str, bytes | None]
) -> EditInputs | None:
    """The edit, its files read from their blobs; None when a blob is gone (expired)."""

    def file(value: bytes) -> bytes | None:
        return blobs.get(text(value).removeprefix(BLOB))

    images = sorted((k for k in values if k.startswith(b"image:")), key=lambda k: int(k[6:]))
    contents = [file(values[k]) for k in images]
    mask = file(values[b"mask"]) if b"mask" in values else None
    if any(c is None for c in contents) or (b"mask" in values and mask is None):
        return None
    return EditInputs(
        model=text(values[b"model"]),
        images=[c for c in contents if c is not None],
        prompt=text(values[b"prompt"]),
        negative_prompt=text(values[b"negative_prompt"]) or None,
        options_json=text(values[b"options_json"]),
        request_id=text(values[b"request_id"]),
        mask=mask,
    )
