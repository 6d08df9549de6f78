"""The job routes: status, result, cancel and the server-sent event stream.

Calls: JobLookup (status, result), JobCanceller (cancel), JobFollower (events).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, Response
from sse_starlette.sse import EventSourceResponse, ServerSentEvent

from gateway.http.deps import IdentityDep, OwnerDep, ServicesDep
from gateway.http.job_views import job_view, process_response, result_headers
from gateway.http.schemas import JobView, error_responses
from gateway.jobs.following import StreamError
from gateway.store.job_models import JobEvent

router = APIRouter(prefix="/jobs/{job_id}")
# What each route can answer besides success: 401 no key, 404 no such job (or another key's),
# 409 not ready or finished, 410 cancelled or expired, 429 rate, 503 the store is down.
READ_ERRORS = error_responses(401, 404, 429, 503)
RESULT_ERRORS = error_responses(401, 404, 409, 410, 429, 503)
SSE_PING_S = 15
MAX_EVENT_ID_DIGITS = 18


@router.get("", response_model=JobView, responses=READ_ERRORS, summary="A job's status")
async def get_job(job_id: str, services: ServicesDep, owner: OwnerDep) -> JobView:
    return job_view(await services.lookup.get(job_id, owner))


@router.get(
    "/result",
    responses={**RESULT_ERRORS, 200: {"content": {"image/png": {}, "application/json": {}}}},
    summary="The edited image: 409 until the job is done",
)
async def get_result(
    request: Request, job_id: str, services: ServicesDep, owner: OwnerDep
) -> Response:
    outcome = await services.lookup.result(job_id, owner)
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse(process_response(outcome).model_dump())
    headers = result_headers(outcome.job)
    return Response(outcome.image, media_type=outcome.job.result_mime, headers=headers)


@router.post("/cancel", response_model=JobView, responses=RESULT_ERRORS, summary="Cancel a job")
async def cancel_job(job_id: str, services: ServicesDep, owner: OwnerDep) -> JobView:
    return job_view(await services.canceller.cancel(job_id, owner))


def event_cursor(text: str | None) -> int:
    """A Last-Event-ID: ASCII digits, else the beginning; an id longer than any event's stands
    for "after the end" (it is never turned into a number of thousands of digits)."""
    text = (text or "").strip()
    if not (text.isascii() and text.isdigit()):
        return 0
    return int(text) if len(text) <= MAX_EVENT_ID_DIGITS else 10**MAX_EVENT_ID_DIGITS


def _sse(item: JobEvent | StreamError) -> ServerSentEvent:
    if isinstance(item, StreamError):
        data = {"code": item.code.value, "message": item.message}
        return ServerSentEvent(data=json.dumps(data), event="error")
    return ServerSentEvent(data=json.dumps(item.data), event=item.event, id=str(item.id))


@router.get(
    "/events",
    responses={**READ_ERRORS, 200: {"content": {"text/event-stream": {}}}},
    summary="Server-sent events: queued, started, progress, then completed, failed or cancelled",
)
async def job_events(
    job_id: str,
    services: ServicesDep,
    identity: IdentityDep,
    last_event_id: Annotated[str | None, Header()] = None,
) -> EventSourceResponse:
    start = event_cursor(last_event_id)
    job = await services.lookup.owned(job_id, identity.owner)
    events = services.streams.held(identity.bucket, services.follower.events(job, start))

    async def stream() -> AsyncIterator[ServerSentEvent]:
        async for item in events:
            yield _sse(item)

    return EventSourceResponse(stream(), ping=SSE_PING_S)
