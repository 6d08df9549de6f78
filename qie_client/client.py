"""A small typed client for the gateway's HTTP API (sync calls, jobs, SSE progress)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import httpx
from httpx_sse import connect_sse
from typing_extensions import Unpack

ImageInput = bytes | str | Path


class EditFields(TypedDict, total=False):
    """The optional parts of an edit, as keywords."""

    model: str | None
    negative_prompt: str | None
    options: dict[str, Any] | None
    callback_url: str | None


class QieError(Exception):
    """An error answer from the gateway: {code, message, detail} plus the HTTP status."""

    def __init__(self, status: int, code: str, message: str, detail: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail


@dataclass
class EditResult:
    image: bytes
    job_id: str
    model: str
    seed: int | None
    steps: int
    width: int
    height: int
    format: str
    processing_time: float
    random_weights: bool
    operations: list[str] = field(default_factory=list)


@dataclass
class Event:
    id: int
    event: str
    data: dict[str, Any]


TERMINAL_EVENTS = ("completed", "failed", "cancelled")


def _read(image: ImageInput) -> tuple[str, bytes]:
    if isinstance(image, bytes):
        return "image", image
    path = Path(image)
    return path.name, path.read_bytes()


def _raise_for_error(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        body = response.json()
        raise QieError(response.status_code, body["code"], body["message"], body.get("detail"))
    except (ValueError, KeyError, TypeError):
        raise QieError(response.status_code, "http_error", response.text[:200]) from None


class QieClient:
    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        timeout: float = 300.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(
            base_url=base_url, headers=headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> QieClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _form(
        self, images: ImageInput | Sequence[ImageInput], prompt: str, fields: EditFields
    ) -> dict[str, Any]:
        many: Sequence[ImageInput] = (
            images if isinstance(images, (list, tuple)) else [images]  # type: ignore[list-item]
        )
        files = [("image", _read(img)) for img in many]
        data: dict[str, str] = {"prompt": prompt}
        for name in ("model", "negative_prompt", "callback_url"):
            value = fields.get(name)
            if value:
                data[name] = str(value)
        if fields.get("options"):
            data["options"] = json.dumps(fields["options"])
        return {"files": files, "data": data}

    def edit(
        self, images: ImageInput | Sequence[ImageInput], prompt: str, **fields: Unpack[EditFields]
    ) -> EditResult:
        """One blocking POST /process; returns the edited image and its metadata.

        Asks for the raw image (metadata in X-* headers), which spares both sides the base64 and
        JSON of the seed's response format. Keywords: model, negative_prompt, options.
        """
        form = self._form(images, prompt, fields)
        response = self.http.post("/process", headers={"Accept": "image/*"}, **form)
        _raise_for_error(response)
        h = response.headers
        return EditResult(
            image=response.content,
            job_id=h["X-Job-Id"],
            model=h["X-Model"],
            seed=int(h["X-Seed"]) if h.get("X-Seed") else None,
            steps=int(h["X-Steps"]),
            width=int(h["X-Width"]),
            height=int(h["X-Height"]),
            format=h["Content-Type"].removeprefix("image/"),
            processing_time=float(h.get("X-Processing-Time", "0")),
            random_weights=h["X-Random-Weights"] == "true",
            operations=json.loads(h.get("X-Operations", "[]")),
        )

    def submit(
        self,
        images: ImageInput | Sequence[ImageInput],
        prompt: str,
        *,
        idempotency_key: str | None = None,
        **fields: Unpack[EditFields],
    ) -> str:
        """Start a job (Prefer: respond-async); returns its id. Keywords: model,
        negative_prompt, options, callback_url, and an Idempotency-Key."""
        form = self._form(images, prompt, fields)
        headers = {"Prefer": "respond-async"}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        response = self.http.post("/process", headers=headers, **form)
        _raise_for_error(response)
        job_id: str = response.json()["job_id"]
        return job_id

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.http.get(f"/jobs/{job_id}")
        _raise_for_error(response)
        body: dict[str, Any] = response.json()
        return body

    def cancel(self, job_id: str) -> dict[str, Any]:
        response = self.http.post(f"/jobs/{job_id}/cancel")
        _raise_for_error(response)
        body: dict[str, Any] = response.json()
        return body

    def result(self, job_id: str) -> bytes:
        response = self.http.get(f"/jobs/{job_id}/result")
        _raise_for_error(response)
        return response.content

    def events(self, job_id: str, last_event_id: int | None = None) -> Iterator[Event]:
        """The job's server-sent events, until a final one (completed, failed, cancelled).

        A job that expires while it is followed ends the stream with QieError (410).
        """
        headers = {"Last-Event-ID": str(last_event_id)} if last_event_id else {}
        with connect_sse(self.http, "GET", f"/jobs/{job_id}/events", headers=headers) as source:
            if source.response.status_code >= 400:
                source.response.read()
                _raise_for_error(source.response)
            for sse in source.iter_sse():
                if not sse.data:  # a keep-alive comment: nothing happened
                    continue
                data = json.loads(sse.data)
                if sse.event == "error":
                    raise QieError(410, data["code"], data["message"])
                yield Event(id=int(sse.id or 0), event=sse.event, data=data)
                if sse.event in TERMINAL_EVENTS:
                    return

    def health(self) -> dict[str, Any]:
        body: dict[str, Any] = self.http.get("/health").json()
        return body

    def models(self) -> dict[str, Any]:
        response = self.http.get("/models")
        _raise_for_error(response)
        body: dict[str, Any] = response.json()
        return body
