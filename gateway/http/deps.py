"""What routes may call, as Annotated dependencies: the services create_app builds and hands to
the app in one `Services` record, the caller's identity, and the settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request

from gateway.batches.events import BatchEvents
from gateway.batches.service import BatchService
from gateway.http.batch_forms import BatchFormReader
from gateway.http.forms import Caller, FormReader
from gateway.http.security import Authenticator, RateLimiter
from gateway.jobs.admission import JobAdmission
from gateway.jobs.cancelling import JobCanceller
from gateway.jobs.following import JobFollower
from gateway.jobs.lookup import JobLookup
from gateway.jobs.queue_monitor import QueueMonitor
from gateway.jobs.waiting import JobWaiter
from gateway.metrics import Metrics
from gateway.settings import Settings
from gateway.triton.registry import ModelRegistry


@dataclass(frozen=True)
class Services:
    """Everything the routes use, built once by create_app."""

    settings: Settings
    metrics: Metrics
    registry: ModelRegistry
    auth: Authenticator
    rate_limiter: RateLimiter
    forms: FormReader
    batch_forms: BatchFormReader
    admission: JobAdmission
    lookup: JobLookup
    follower: JobFollower
    waiter: JobWaiter
    canceller: JobCanceller
    queues: QueueMonitor
    batches: BatchService
    batch_events: BatchEvents


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(_services)]


async def _owner(request: Request, services: ServicesDep) -> str:
    """Authenticate, then count the request against the key's rate limit."""
    owner = services.auth.owner(request)
    await services.rate_limiter.check(owner)
    return owner


OwnerDep = Annotated[str, Depends(_owner)]


def _caller(
    request: Request,
    owner: OwnerDep,
    prefer: Annotated[str | None, Header()] = None,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> Caller:
    return Caller(owner, request.state.request_id, prefer, idempotency_key)


CallerDep = Annotated[Caller, Depends(_caller)]
