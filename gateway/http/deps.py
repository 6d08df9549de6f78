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
from gateway.http.security import Authenticator, Identity, RateLimiter
from gateway.http.stream_limit import StreamLimit
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
    streams: StreamLimit


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(_services)]


def _identity(request: Request) -> Identity:
    """Who sent the request: the access gate checked its key and counted its rate already."""
    identity: Identity = request.state.identity
    return identity


def _owner(identity: Annotated[Identity, Depends(_identity)]) -> str:
    return identity.owner


OwnerDep = Annotated[str, Depends(_owner)]
IdentityDep = Annotated[Identity, Depends(_identity)]


def _caller(
    request: Request,
    identity: Annotated[Identity, Depends(_identity)],
    prefer: Annotated[str | None, Header()] = None,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> Caller:
    return Caller(
        identity.owner, request.state.request_id, prefer, idempotency_key, identity.bucket
    )


CallerDep = Annotated[Caller, Depends(_caller)]
