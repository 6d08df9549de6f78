"""POST /process: a synchronous edit, or a job with Prefer: respond-async.

Calls: FormReader (the form), JobAdmission (the job), JobWaiter (a synchronous edit's end).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import JSONResponse, Response

from gateway.http.deps import CallerDep, ServicesDep
from gateway.http.forms import ProcessForm
from gateway.http.job_views import accepted, process_response, result_headers
from gateway.http.schemas import JobAccepted, ProcessResponse, error_responses
from gateway.jobs.waiting import outcome_error

router = APIRouter()
ERRORS = error_responses(400, 401, 404, 410, 413, 415, 422, 429, 499, 502, 503, 504)


async def client_gone(request: Request) -> None:
    """Return when the client hangs up (the body is read, so only a disconnect can come)."""
    while (await request.receive())["type"] != "http.disconnect":
        continue


@router.post(
    "/process",
    response_model=ProcessResponse,
    responses={**ERRORS, 202: {"model": JobAccepted}, 200: {"content": {"image/png": {}}}},
    summary="Edit an image from a text instruction (sync, or a job with Prefer: respond-async)",
)
async def process(
    request: Request,
    form: Annotated[ProcessForm, Form()],
    caller: CallerDep,
    services: ServicesDep,
) -> Any:
    submission = await services.forms.read(form, caller)
    job = await services.admission.submit(submission)
    if submission.respond_async:
        body = accepted(job).model_dump()
        return JSONResponse(body, status_code=202, headers={"Location": body["status_url"]})
    outcome = await services.waiter.outcome(job, client_gone(request))
    if outcome.image is None:
        raise outcome_error(outcome.job)
    if "image/" in request.headers.get("accept", ""):
        headers = result_headers(outcome.job)
        return Response(outcome.image, media_type=outcome.job.result_mime, headers=headers)
    return process_response(outcome)
