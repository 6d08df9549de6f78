"""A small typed client for the gateway's HTTP API (sync calls, jobs, batches, SSE progress)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
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
    # A local edit: a mask of the (first) image's size (white edits, black keeps), or a
    # rectangle (x, y, width, height) in its pixels. Only that part changes, at full resolution.
    mask: ImageInput | None
    region: Sequence[int] | None


class BatchFields(TypedDict, total=False):
    """The optional parts of a batch, as keywords: sent as form fields, as POST /process takes
    them (options as a JSON object, the others as plain fields on top of it)."""

    model: str | None
    negative_prompt: str | None
    options: dict[str, Any] | None
    preset: str | None
    steps: int | None
    true_cfg_scale: float | None
    seed: int | None
    output_format: str | None
    width: int | None
    height: int | None
    timeout: float | None
    # Variations of one image as a local edit: its mask, or a region (x, y, width, height).
    mask: ImageInput | None
    region: Sequence[int] | None


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
    # A local edit: crop (x, y, width, height), working_size, padding and feather.
    local: dict[str, Any] | None = None


@dataclass
class Event:
    id: int
    event: str
    data: dict[str, Any]


@dataclass
class BatchEvent:
    """One event of a batch's stream: a `batch` summary, one of its jobs' events (data with
    job_id and index), or an `error` about one job. `id` is the cursor to resume after it."""

    id: str
    event: str
    data: dict[str, Any]

    @property
    def index(self) -> int | None:
        """The item this event concerns; None for a batch summary."""
        index = self.data.get("index")
        return int(index) if index is not None else None

    @property
    def final(self) -> bool:
        """The batch's last summary: every job has ended, and the stream ends."""
        return self.event == "batch" and bool(self.data.get("final"))


TERMINAL_EVENTS = ("completed", "failed", "cancelled")
# What a stream's closing `error` event would have been as an HTTP answer.
STREAM_ERROR_STATUS = {"store_unavailable": 503}


def _read(image: ImageInput) -> tuple[str, bytes]:
    if isinstance(image, bytes):
        return "image", image
    path = Path(image)
    return path.name, path.read_bytes()


def _local_parts(fields: dict[str, Any]) -> list[tuple[str, tuple[str, bytes]]]:
    """Take a local edit's mask (a file part) and region (an "x,y,w,h" field) out of `fields`."""
    mask: ImageInput | None = fields.pop("mask", None)
    region: Sequence[int] | None = fields.pop("region", None)
    if region is not None:
        fields["region"] = ",".join(str(int(n)) for n in region)
    return [("mask", _read(mask))] if mask is not None else []


def _form_data(prompt: str, fields: Mapping[str, Any]) -> dict[str, str]:
    """The text parts of a form: options as JSON, the others as text; None and empty are left
    out (a seed of 0 is kept)."""
    data = {"prompt": prompt}
    for name, value in fields.items():
        if value is None or value in ("", {}):
            continue
        data[name] = json.dumps(value) if name == "options" else str(value)
    return data


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
        text: dict[str, Any] = dict(fields)
        files = [("image", _read(img)) for img in many] + _local_parts(text)
        return {"files": files, "data": _form_data(prompt, text)}

    def edit(
        self, images: ImageInput | Sequence[ImageInput], prompt: str, **fields: Unpack[EditFields]
    ) -> EditResult:
        """One blocking POST /process; returns the edited image and its metadata.

        Asks for the raw image (metadata in X-* headers), which spares both sides the base64 and
        JSON of the seed's response format. Keywords: model, negative_prompt, options, and for
        a local edit mask or region.
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
            local=json.loads(h["X-Local-Edit"]) if h.get("X-Local-Edit") else None,
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

    def _get_json(self, path: str) -> dict[str, Any]:
        response = self.http.get(path)
        _raise_for_error(response)
        body: dict[str, Any] = response.json()
        return body

    def job(self, job_id: str) -> dict[str, Any]:
        return self._get_json(f"/jobs/{job_id}")

    def cancel(self, job_id: str) -> dict[str, Any]:
        response = self.http.post(f"/jobs/{job_id}/cancel")
        _raise_for_error(response)
        body: dict[str, Any] = response.json()
        return body

    def result(self, job_id: str) -> bytes:
        response = self.http.get(f"/jobs/{job_id}/result")
        _raise_for_error(response)
        return response.content

    def _stream(
        self, path: str, last_event_id: str | None
    ) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """(id, event, data) of a server-sent event stream, keep-alive comments left out.

        An `error` event about the stream itself (no job_id: the job expired, the store is
        unreachable) ends it with QieError; one about a single job of a batch is yielded.
        """
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        with connect_sse(self.http, "GET", path, headers=headers) as source:
            if source.response.status_code >= 400:
                source.response.read()
                _raise_for_error(source.response)
            for sse in source.iter_sse():
                if not sse.data:  # a keep-alive comment: nothing happened
                    continue
                data = json.loads(sse.data)
                if sse.event == "error" and "job_id" not in data:
                    status = STREAM_ERROR_STATUS.get(data["code"], 410)
                    raise QieError(status, data["code"], data["message"])
                yield sse.id, sse.event, data

    def events(self, job_id: str, last_event_id: int | None = None) -> Iterator[Event]:
        """The job's server-sent events, until a final one (completed, failed, cancelled).

        A job that expires while it is followed ends the stream with QieError (410).
        """
        cursor = str(last_event_id) if last_event_id else None
        for sse_id, name, data in self._stream(f"/jobs/{job_id}/events", cursor):
            yield Event(id=int(sse_id or 0), event=name, data=data)
            if name in TERMINAL_EVENTS:
                return

    def submit_batch(
        self,
        images: Sequence[ImageInput],
        prompt: str,
        *,
        variations: int | None = None,
        idempotency_key: str | None = None,
        **fields: Unpack[BatchFields],
    ) -> dict[str, Any]:
        """Start a batch (POST /batches): one prompt over 2 or more images, or over one image
        with `variations` seeds. Returns the 202 answer: batch_id, job_ids, status, total and
        the batch's URLs. Each path's file name names its entry in the result zip.

        An image the gateway cannot read fails its own item only (see batch()).
        """
        text: dict[str, Any] = {**fields, "variations": variations}
        files = [("images", _read(image)) for image in images] + _local_parts(text)
        data = _form_data(prompt, text)
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        response = self.http.post("/batches", headers=headers, files=files, data=data)
        _raise_for_error(response)
        body: dict[str, Any] = response.json()
        return body

    def batch(self, batch_id: str) -> dict[str, Any]:
        """The batch's state (BatchView): its counts, status and every item's job."""
        return self._get_json(f"/batches/{batch_id}")

    def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        """Cancel every unfinished job of the batch; returns its state (BatchView)."""
        response = self.http.post(f"/batches/{batch_id}/cancel")
        _raise_for_error(response)
        body: dict[str, Any] = response.json()
        return body

    def batch_result(self, batch_id: str) -> bytes:
        """A zip of the images completed so far, named after the inputs."""
        response = self.http.get(f"/batches/{batch_id}/result")
        _raise_for_error(response)
        return response.content

    def batch_events(self, batch_id: str, last_event_id: str | None = None) -> Iterator[BatchEvent]:
        """The batch's server-sent events, until its final `batch` summary.

        `last_event_id` is a previous event's id: the stream resumes after it.
        """
        path = f"/batches/{batch_id}/events"
        for sse_id, name, data in self._stream(path, last_event_id):
            event = BatchEvent(id=sse_id, event=name, data=data)
            yield event
            if event.final:
                return

    def run_batch(
        self,
        images: Sequence[ImageInput],
        prompt: str,
        *,
        variations: int | None = None,
        on_event: Callable[[BatchEvent], None] | None = None,
        **fields: Unpack[BatchFields],
    ) -> dict[str, Any]:
        """Submit a batch, follow it to its end (each event to `on_event`), and return its
        final state (BatchView); batch_result() then gives the zip."""
        accepted = self.submit_batch(images, prompt, variations=variations, **fields)
        batch_id: str = accepted["batch_id"]
        for event in self.batch_events(batch_id):
            if on_event is not None:
                on_event(event)
        return self.batch(batch_id)

    def health(self) -> dict[str, Any]:
        body: dict[str, Any] = self.http.get("/health").json()
        return body

    def models(self) -> dict[str, Any]:
        return self._get_json("/models")
