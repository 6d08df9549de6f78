"""The batch routes: submit, status, the server-sent event stream, cancel and the zip.

Calls: BatchFormReader (the form; a batch of N costs N of the rate, before any image is
decoded), BatchService (submit, status, cancel, zip), BatchEvents (events).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Form, Header
from fastapi.responses import JSONResponse, Response
from sse_starlette.sse import EventSourceResponse, ServerSentEvent

from gateway.http.batch_forms import BatchForm
from gateway.http.batch_views import batch_accepted, batch_view
from gateway.http.deps import CallerDep, IdentityDep, OwnerDep, ServicesDep
from gateway.http.routes.jobs import SSE_PING_S
from gateway.http.schemas import BatchAccepted, BatchView, error_responses

router = APIRouter(prefix="/batches")
READ_ERRORS = error_responses(401, 404, 429, 503)
CANCEL_ERRORS = error_responses(401, 404, 409, 429, 503)
RESULT_ERRORS = error_responses(401, 404, 409, 410, 429, 503)


@router.post(
    "",
    status_code=202,
    response_model=BatchAccepted,
    responses=error_responses(400, 401, 404, 413, 422, 429, 503),
    summary="Edit several images with one prompt (or one image with several seeds)",
)
async def submit_batch(
    form: Annotated[BatchForm, Form()], caller: CallerDep, services: ServicesDep
) -> JSONResponse:
    submission = await services.batch_forms.read(form, caller)
    body = batch_accepted(await services.batches.submit(submission)).model_dump()
    return JSONResponse(body, status_code=202, headers={"Location": body["status_url"]})


@router.get(
    "/{batch_id}", response_model=BatchView, responses=READ_ERRORS, summary="A batch's status"
)
async def get_batch(batch_id: str, services: ServicesDep, owner: OwnerDep) -> BatchView:
    return batch_view(await services.batches.get(batch_id, owner))


@router.post(
    "/{batch_id}/cancel",
    response_model=BatchView,
    responses=CANCEL_ERRORS,
    summary="Cancel every edit of the batch still unfinished",
)
async def cancel_batch(batch_id: str, services: ServicesDep, owner: OwnerDep) -> BatchView:
    return batch_view(await services.batches.cancel(batch_id, owner))


@router.get(
    "/{batch_id}/result",
    responses={**RESULT_ERRORS, 200: {"content": {"application/zip": {}}}},
    summary="A zip of the finished images, named after their inputs",
)
async def get_batch_result(batch_id: str, services: ServicesDep, owner: OwnerDep) -> Response:
    archive = await services.batches.archive(batch_id, owner)
    headers = {
        "Content-Disposition": f'attachment; filename="batch-{archive.state.batch.id}.zip"',
        "X-Batch-Status": archive.state.tally.status,
        "X-Batch-Entries": str(archive.entries),
    }
    return Response(archive.data, media_type="application/zip", headers=headers)


@router.get(
    "/{batch_id}/events",
    responses={**READ_ERRORS, 200: {"content": {"text/event-stream": {}}}},
    summary="Server-sent events: each job's events, tagged, and a `batch` summary as jobs end",
)
async def batch_events(
    batch_id: str,
    services: ServicesDep,
    identity: IdentityDep,
    last_event_id: Annotated[str | None, Header()] = None,
) -> EventSourceResponse:
    followed = await services.batch_events.events(batch_id, identity.owner, last_event_id)
    events = services.streams.held(identity.bucket, followed)

    async def stream() -> AsyncIterator[ServerSentEvent]:
        async for item in events:
            yield ServerSentEvent(data=json.dumps(item.data), event=item.event, id=item.id or None)

    return EventSourceResponse(stream(), ping=SSE_PING_S)
