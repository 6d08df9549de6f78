"""What the service is and how it is doing: /health, /health/live, /models and /metrics.

Calls: ModelRegistry (models, Triton), QueueMonitor (queues as last sampled), Metrics.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.http.deps import OwnerDep, Services, ServicesDep
from gateway.http.schemas import TENSOR_CONTRACT, HealthView, ModelsView, error_responses
from gateway.triton.registry import Health

router = APIRouter()


def _triton_view(request: Request, services: Services) -> dict[str, bool]:
    """Each Triton's reachability: named by its address for a caller with a key, else only by
    its place in TRITON_URLS (the internal hosts are not for anyone who can reach the port)."""
    status = services.registry.triton_status()
    if services.auth.knows(request):
        return status
    return {f"triton-{i}": up for i, up in enumerate(status.values(), start=1)}


@router.get(
    "/health",
    response_model=HealthView,
    responses={503: {"model": HealthView, "description": "STARTING or UNHEALTHY"}},
    summary="Liveness and readiness",
)
async def health(request: Request, services: ServicesDep) -> JSONResponse:
    settings, registry = services.settings, services.registry
    state = registry.health(services.queues.saturated(settings.default_model))
    trouble = services.queues.trouble()
    if trouble:
        state = Health.UNHEALTHY  # jobs are accepted but no runner can take them now
    body = HealthView(
        status=state.value,
        trouble=trouble,
        models={name: info.ready for name, info in registry.models.items()},
        triton=_triton_view(request, services),
        queues=services.queues.queues(),
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
    responses=error_responses(401, 429),
    summary="Models, their options and limits",
)
async def models(services: ServicesDep, owner: OwnerDep) -> ModelsView:
    settings = services.settings
    limits = {
        "max_upload_bytes": settings.max_upload_bytes,
        "max_image_bytes": settings.max_image_bytes,
        "max_pixels": settings.max_pixels,
        "max_prompt_chars": settings.max_prompt_chars,
    }
    return ModelsView(
        default_model=settings.default_model,
        aliases=settings.model_aliases,
        models=[info.public(limits) for info in services.registry.models.values()],
        tensor_contract=TENSOR_CONTRACT,
    )


@router.get("/metrics", include_in_schema=False)
async def metrics(services: ServicesDep) -> Response:
    return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)
