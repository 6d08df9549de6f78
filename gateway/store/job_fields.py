"""A job's fields as both backends write them: checked before a write, JSON-encoded, compared."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from typing import Any

from pydantic import TypeAdapter
from pydantic_core import to_jsonable_python

from gateway.store.job_models import Job, JobEvent, NewEvent

FIELD_TYPES = {
    name: TypeAdapter(info.annotation)
    for name, info in Job.model_fields.items()
    if info.annotation is not None
}


def checked_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a partial update before anything is written."""
    unknown = sorted(set(fields) - set(FIELD_TYPES))
    if unknown:
        raise ValueError(f"unknown job field(s): {', '.join(unknown)}")
    if "id" in fields:
        raise ValueError("a job's id never changes")
    return {name: FIELD_TYPES[name].validate_python(value) for name, value in fields.items()}


def encode(value: Any) -> str:
    return json.dumps(to_jsonable_python(value), separators=(",", ":"))


def event_copy(event: NewEvent, event_id: int) -> JobEvent:
    """A JSON copy: what a reader gets back, never shared with the caller."""
    return JobEvent(id=event_id, event=event.event, data=json.loads(encode(event.data)))


def holds(job: Job, expect: Mapping[str, Collection[Any]] | None) -> bool:
    """Whether every expected field holds one of its allowed values."""
    for name, allowed in (expect or {}).items():
        current = getattr(job, name)
        if not any(current == checked_fields({name: value})[name] for value in allowed):
            return False
    return True
