"""Annotated dependencies, so routes stay short."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from gateway.job_service import JobService
from gateway.jobs import JobStore
from gateway.model_registry import ModelRegistry
from gateway.settings import Settings


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _registry(request: Request) -> ModelRegistry:
    registry: ModelRegistry = request.app.state.registry
    return registry


def _service(request: Request) -> JobService:
    service: JobService = request.app.state.service
    return service


def _store(request: Request) -> JobStore:
    store: JobStore = request.app.state.service.store
    return store


async def _owner(request: Request) -> str:
    """Authenticate, then count the request against the key's rate limit."""
    state: Any = request.app.state
    owner: str = state.auth.owner(request)
    await state.rate_limiter.check(owner)
    return owner


SettingsDep = Annotated[Settings, Depends(_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(_registry)]
JobServiceDep = Annotated[JobService, Depends(_service)]
StoreDep = Annotated[JobStore, Depends(_store)]
OwnerDep = Annotated[str, Depends(_owner)]
