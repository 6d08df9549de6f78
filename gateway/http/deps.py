"""Annotated dependencies, so routes stay short."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Header, Request

from gateway.batches.service import BatchService
from gateway.http.batch_forms import BatchReader
from gateway.http.forms import Caller, SubmissionReader
from gateway.http.security import RateLimiter
from gateway.jobs.service import JobService
from gateway.metrics import Metrics
from gateway.settings import Settings
from gateway.triton.registry import ModelRegistry


def _state(request: Request) -> Any:
    return request.app.state


def _settings(request: Request) -> Settings:
    settings: Settings = _state(request).settings
    return settings


def _registry(request: Request) -> ModelRegistry:
    registry: ModelRegistry = _state(request).registry
    return registry


def _service(request: Request) -> JobService:
    service: JobService = _state(request).service
    return service


def _metrics(request: Request) -> Metrics:
    metrics: Metrics = _state(request).metrics
    return metrics


def _reader(request: Request) -> SubmissionReader:
    reader: SubmissionReader = _state(request).reader
    return reader


def _batches(request: Request) -> BatchService:
    batches: BatchService = _state(request).batches
    return batches


def _batch_reader(request: Request) -> BatchReader:
    reader: BatchReader = _state(request).batch_reader
    return reader


def _rate_limiter(request: Request) -> RateLimiter:
    limiter: RateLimiter = _state(request).rate_limiter
    return limiter


async def _owner(request: Request) -> str:
    """Authenticate, then count the request against the key's rate limit."""
    state = _state(request)
    owner: str = state.auth.owner(request)
    await state.rate_limiter.check(owner)
    return owner


OwnerDep = Annotated[str, Depends(_owner)]


def _caller(
    request: Request,
    owner: OwnerDep,
    prefer: Annotated[str | None, Header()] = None,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> Caller:
    return Caller(owner, request.state.request_id, prefer, idempotency_key)


SettingsDep = Annotated[Settings, Depends(_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(_registry)]
JobServiceDep = Annotated[JobService, Depends(_service)]
MetricsDep = Annotated[Metrics, Depends(_metrics)]
ReaderDep = Annotated[SubmissionReader, Depends(_reader)]
CallerDep = Annotated[Caller, Depends(_caller)]
BatchServiceDep = Annotated[BatchService, Depends(_batches)]
BatchReaderDep = Annotated[BatchReader, Depends(_batch_reader)]
RateLimiterDep = Annotated[RateLimiter, Depends(_rate_limiter)]
