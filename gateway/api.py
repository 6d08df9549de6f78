"""HTTP routes: they adapt requests to the job service and nothing more."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Header, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from sse_starlette.sse import EventSourceResponse, ServerSentEvent

from gateway.deps import JobServiceDep, OwnerDep, RegistryDep, SettingsDep, StoreDep
from gateway.errors import (
    ApiError,
    Conflict,
    Gone,
    NotFound,
    ServiceUnavailable,
    Unprocessable,
    from_engine_code,
)
from gateway.job_service import Outcome, Submission, outcome_error
from gateway.jobs import TERMINAL_STATUSES, Job, JobStatus
from gateway.schemas import (
    ErrorBody,
    HealthView,
    JobAccepted,
    JobProgress,
    JobView,
    ModelsView,
    ProcessResponse,
    RequestOptions,
)
from gateway.triton_client import EditCall
from gateway.webhooks import check_callback_url
from qie_engine.contract import describe_validation_error
from qie_engine.edit_request import check_image_count, check_prompt
from qie_engine.errors import InvalidInput
from qie_engine.image_codec import ImageLimits, check_image

router = APIRouter()
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody} for status in (400, 401, 404, 409, 413, 415, 422, 429, 503, 504)
}
DISCONNECT_POLL_S = 0.25


def _job_view(job: Job, service: Any) -> JobView:
    error = None
    if job.error_code:
        error = ErrorBody(code=job.error_code, message=job.error_message or "")
    return JobView(
        job_id=job.id,
        status=job.status.value,
        model=job.model,
        image_id=job.image_id,
        progress=JobProgress(step=job.progress_step, total=job.progress_total),
        queue_position=service.position(job),
        eta_s=service.eta_s(job),
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        error=error,
        result=job.result_meta,
    )


async def _owned_job(store: Any, job_id: str, owner: str) -> Job:
    """Another key's job is reported exactly like a missing one."""
    job = await store.get(job_id) if len(job_id) <= 64 else None
    if job is None or job.owner != owner:
        raise NotFound(f"no job {job_id[:64]}", code="job_not_found")
    return job


def _parse_options(options: str | None, fields: dict[str, Any]) -> RequestOptions:
    data: dict[str, Any] = {}
    if options:
        try:
            data = json.loads(options)
        except json.JSONDecodeError as exc:
            raise Unprocessable(
                f"options is not valid JSON: {exc.msg}",
                code="invalid_options",
                detail={"field": "options"},
            ) from None
        if not isinstance(data, dict):
            raise Unprocessable("options must be a JSON object", code="invalid_options")
    data.update({k: v for k, v in fields.items() if v is not None})
    try:
        return RequestOptions.model_validate(data)
    except ValidationError as exc:
        raise Unprocessable(
            describe_validation_error(exc),
            code="invalid_options",
            detail=[
                {"field": ".".join(map(str, e["loc"])), "message": e["msg"]} for e in exc.errors()
            ],
        ) from None


def _request_hash(
    model: str, prompt: str, negative: str | None, options: str, images: list[bytes]
) -> str:
    digest = hashlib.sha256()
    for part in (
        model,
        prompt,
        negative or "",
        options,
        *(hashlib.sha256(i).hexdigest() for i in images),
    ):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()


def _result_headers(job: Job) -> dict[str, str]:
    meta = job.result_meta or {}
    headers = {
        "X-Job-Id": job.id,
        "X-Model": job.model,
        "X-Steps": str(meta.get("steps", "")),
        "X-Width": str(meta.get("width", "")),
        "X-Height": str(meta.get("height", "")),
        "X-Seed": "" if meta.get("seed") is None else str(meta["seed"]),
        "X-Random-Weights": str(bool(meta.get("random_weights"))).lower(),
        "X-Operations": json.dumps(meta.get("operations", [])),  # ASCII: json escapes the rest
    }
    if job.image_id:
        headers["X-Image-Id"] = job.image_id[:200].encode("ascii", "replace").decode()
    if job.started_at and job.finished_at:
        headers["X-Processing-Time"] = f"{job.finished_at - job.created_at:.3f}"
    return headers


def _process_response(outcome: Outcome) -> ProcessResponse:
    job, meta = outcome.job, outcome.job.result_meta or {}
    assert outcome.image is not None
    return ProcessResponse(
        success=True,
        processed_image=base64.b64encode(outcome.image).decode(),
        processing_time=round((job.finished_at or time.time()) - job.created_at, 3),
        model_used=job.model,
        message="Image processed successfully",
        job_id=job.id,
        image_id=job.image_id,
        seed=meta.get("seed"),
        steps=meta.get("steps", 0),
        width=meta.get("width", 0),
        height=meta.get("height", 0),
        format=meta.get("format", "png"),
        mime_type=job.result_mime or "image/png",
        random_weights=bool(meta.get("random_weights")),
        operations=meta.get("operations", []),
    )


async def _watch_disconnect(request: Request) -> None:
    while not await request.is_disconnected():
        await asyncio.sleep(DISCONNECT_POLL_S)


@router.post(
    "/process",
    response_model=ProcessResponse,
    responses={**ERRORS, 202: {"model": JobAccepted}, 200: {"content": {"image/png": {}}}},
    summary="Edit an image from a text instruction (sync, or a job with Prefer: respond-async)",
)
async def process(
    request: Request,
    settings: SettingsDep,
    registry: RegistryDep,
    service: JobServiceDep,
    owner: OwnerDep,
    image: Annotated[
        list[UploadFile], File(description="1 image (1-3 for Plus models): JPEG, PNG or WebP")
    ],
    prompt: Annotated[str, Form(description="The edit instruction")],
    negative_prompt: Annotated[str | None, Form()] = None,
    model: Annotated[str | None, Form(description="Model name; default from DEFAULT_MODEL")] = None,
    options: Annotated[
        str | None, Form(description="JSON object of options (see fields below)")
    ] = None,
    preset: Annotated[str | None, Form(description="fast or quality")] = None,
    steps: Annotated[str | None, Form(description="1-100")] = None,
    true_cfg_scale: Annotated[str | None, Form(description="1-20; 1 disables true CFG")] = None,
    seed: Annotated[str | None, Form(description="0 to 2^32-1")] = None,
    output_format: Annotated[str | None, Form(description="png, webp or jpeg")] = None,
    width: Annotated[str | None, Form()] = None,
    height: Annotated[str | None, Form()] = None,
    timeout: Annotated[str | None, Form(description="Deadline in seconds")] = None,
    run_async: Annotated[
        bool, Form(alias="async", description="Same as Prefer: respond-async")
    ] = False,
    callback_url: Annotated[
        str | None, Form(description="Webhook called when the job ends")
    ] = None,
    image_id: Annotated[str | None, Form(description="Your id for the image; echoed back")] = None,
    prefer: Annotated[str | None, Header()] = None,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> Any:
    model_name = settings.resolve_model(model)
    info = registry.models.get(model_name)
    if info is None:
        raise NotFound(
            f"unknown model {model_name!r}",
            code="model_not_found",
            detail={"models": sorted(registry.models)},
        )
    if not info.ready:
        raise ServiceUnavailable(
            f"model {model_name} is not ready (loading or failed); retry shortly",
            code="model_unavailable",
            headers={"Retry-After": "10"},
        )
    plain = {
        "preset": preset,
        "steps": steps,
        "true_cfg_scale": true_cfg_scale,
        "seed": seed,
        "output_format": output_format,
        "width": width,
        "height": height,
        "timeout": timeout,
    }
    parsed = _parse_options(options, {k: _number(v) for k, v in plain.items()})
    if callback_url:
        check_callback_url(callback_url)
    limits = ImageLimits(max_bytes=settings.max_image_bytes, max_pixels=settings.max_pixels)
    uploads = [await part.read() for part in image]
    try:
        check_image_count(len(uploads), info.max_images)
        prompt_text = check_prompt(prompt, settings.max_prompt_chars)
        negative = (
            check_prompt(negative_prompt, settings.max_prompt_chars, name="negative_prompt")
            if (negative_prompt and negative_prompt.strip())
            else None
        )
        for data in uploads:
            # Type and pixels from the header, then an integrity check: off the event loop.
            await asyncio.to_thread(check_image, data, limits)
    except InvalidInput as exc:
        raise from_engine_code(exc.code, str(exc)) from None
    options_json = parsed.edit_options().model_dump_json(exclude_none=True)
    request_id = request.state.request_id
    submission = Submission(
        owner=owner,
        call=EditCall(model_name, uploads, prompt_text, negative, options_json, request_id),
        deadline_s=parsed.timeout or settings.request_timeout_s,
        idempotency_key=idempotency_key,
        request_hash=_request_hash(model_name, prompt_text, negative, options_json, uploads)
        if idempotency_key
        else None,
        callback_url=callback_url,
        image_id=image_id,
    )
    job = await service.submit(submission)
    if run_async or (prefer and "respond-async" in prefer.lower()):
        accepted = JobAccepted(
            job_id=job.id,
            status=job.status.value,
            status_url=f"/jobs/{job.id}",
            events_url=f"/jobs/{job.id}/events",
            result_url=f"/jobs/{job.id}/result",
            cancel_url=f"/jobs/{job.id}/cancel",
        )
        return JSONResponse(
            accepted.model_dump(), status_code=202, headers={"Location": f"/jobs/{job.id}"}
        )
    outcome = await _await_sync(request, service, job)
    if outcome.job.status is not JobStatus.COMPLETED or outcome.image is None:
        raise outcome_error(outcome.job)
    if "image/" in request.headers.get("accept", ""):
        return Response(
            outcome.image, media_type=outcome.job.result_mime, headers=_result_headers(outcome.job)
        )
    return _process_response(outcome)


def _number(value: str | None) -> Any:
    """Form fields arrive as text; numbers are parsed so that "8" is 8 and "8.5" stays invalid."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            continue
    return text


async def _await_sync(request: Request, service: Any, job: Job) -> Outcome:
    """Wait for the job; a client that hangs up cancels it (and so the Triton request)."""
    if not service.runs(job.id):  # an idempotent replay of a job already finished or elsewhere
        return await service.stored_outcome(job)
    result = asyncio.ensure_future(service.wait(job.id))
    watcher = asyncio.ensure_future(_watch_disconnect(request))
    done, _ = await asyncio.wait({result, watcher}, return_when=asyncio.FIRST_COMPLETED)
    if result in done:
        watcher.cancel()
        return result.result()
    await service.cancel(job)
    return await result


@router.get("/jobs/{job_id}", response_model=JobView, responses=ERRORS, summary="A job's status")
async def get_job(job_id: str, store: StoreDep, service: JobServiceDep, owner: OwnerDep) -> JobView:
    return _job_view(await _owned_job(store, job_id, owner), service)


@router.get(
    "/jobs/{job_id}/result",
    responses={**ERRORS, 200: {"content": {"image/png": {}, "application/json": {}}}},
    summary="The edited image: 409 until the job is done",
)
async def get_result(request: Request, job_id: str, store: StoreDep, owner: OwnerDep) -> Response:
    job = await _owned_job(store, job_id, owner)
    if job.status is JobStatus.CANCELLED:
        raise Gone(f"job {job_id} was cancelled; it has no result", code="job_cancelled")
    if job.status is JobStatus.FAILED:
        raise Conflict(
            f"job {job_id} failed: {job.error_message}",
            code="job_failed",
            detail={"error": {"code": job.error_code, "message": job.error_message}},
        )
    if job.status is not JobStatus.COMPLETED:
        raise Conflict(
            f"job {job_id} is {job.status.value}; wait for it to complete", code="job_not_ready"
        )
    data = await store.get_result(job_id)
    if data is None:
        raise Gone(f"the result of job {job_id} has expired", code="result_expired")
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse(_process_response(Outcome(job=job, image=data)).model_dump())
    return Response(data, media_type=job.result_mime, headers=_result_headers(job))


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=JobView,
    responses=ERRORS,
    summary="Cancel a job (idempotent)",
)
async def cancel_job(
    job_id: str, store: StoreDep, service: JobServiceDep, owner: OwnerDep
) -> JobView:
    job = await _owned_job(store, job_id, owner)
    return _job_view(await service.cancel(job), service)


@router.get(
    "/jobs/{job_id}/events",
    responses={**ERRORS, 200: {"content": {"text/event-stream": {}}}},
    summary="Server-sent events: queued, started, progress, then completed, failed or cancelled",
)
async def job_events(
    job_id: str,
    store: StoreDep,
    owner: OwnerDep,
    last_event_id: Annotated[str | None, Header()] = None,
) -> EventSourceResponse:
    await _owned_job(store, job_id, owner)
    start = int(last_event_id) if last_event_id and last_event_id.isdigit() else 0

    async def stream() -> AsyncIterator[ServerSentEvent]:
        last = start
        while True:
            events = await store.wait_events(job_id, last, timeout=15.0)
            for event in events:
                last = event.id
                yield ServerSentEvent(
                    data=json.dumps(event.data), event=event.event, id=str(event.id)
                )
                if event.event in {s.value for s in TERMINAL_STATUSES}:
                    return

    return EventSourceResponse(stream(), ping=15)


@router.get(
    "/health", response_model=HealthView, summary="Liveness and readiness (Cog-like states)"
)
async def health(registry: RegistryDep, settings: SettingsDep) -> JSONResponse:
    state = registry.health()
    body = HealthView(
        status=state.value,
        models={name: info.ready for name, info in registry.models.items()},
        triton={e.url: e.up for e in registry.pool.endpoints},
        queues={
            name: {"waiting": q.depth, "running": q.inflight, "max_running": q.max_inflight}
            for name, q in registry.admission.queues.items()
        },
        auth=not settings.auth_disabled,
    )
    code = 200 if state.value in ("READY", "BUSY") else 503
    return JSONResponse(body.model_dump(), status_code=code)


@router.get("/health/live", summary="The process is up")
async def live() -> dict[str, str]:
    return {"status": "alive"}


@router.get(
    "/models",
    response_model=ModelsView,
    responses=ERRORS,
    summary="Models, their options and limits",
)
async def models(registry: RegistryDep, settings: SettingsDep, owner: OwnerDep) -> ModelsView:
    limits = {
        "max_upload_bytes": settings.max_upload_bytes,
        "max_image_bytes": settings.max_image_bytes,
        "max_pixels": settings.max_pixels,
        "max_prompt_chars": settings.max_prompt_chars,
    }
    return ModelsView(
        default_model=settings.default_model,
        aliases=settings.model_aliases,
        models=[info.public(limits) for info in registry.models.values()],
        tensor_contract=TENSOR_CONTRACT,
    )


TENSOR_CONTRACT: dict[str, Any] = {
    "doc": "docs/tensor-contract.md",
    "inputs": {
        "IMAGES": "BYTES [-1]: encoded JPEG/PNG/WebP images",
        "PROMPT": "BYTES [1]: UTF-8 instruction",
        "NEGATIVE_PROMPT": "BYTES [1], optional",
        "OPTIONS": "BYTES [1], optional: JSON EditOptions (preset, steps, seed, ...)",
        "DESCRIBE": "BOOL [1], optional: answer with the model's facts only",
    },
    "outputs": {
        "EVENT": "BYTES [1]: JSON progress {step, total, elapsed_s} or result metadata",
        "IMAGE": "BYTES [1]: the encoded result, in the final response only",
    },
    "errors": "Triton errors whose message starts with [code]",
}


def new_request_id() -> str:
    return uuid.uuid4().hex


def api_error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)
