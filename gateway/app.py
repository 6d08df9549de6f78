"""create_app(settings): the FastAPI app with its store, queue, Triton pool and metrics."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from gateway.batches.service import BatchService
from gateway.errors import install_error_handlers
from gateway.http.batch_forms import BatchReader
from gateway.http.forms import SubmissionReader
from gateway.http.middleware import BodySizeLimit, RequestObserver
from gateway.http.openapi import build_openapi
from gateway.http.routes import ROUTERS
from gateway.http.security import Authenticator, RateLimiter
from gateway.jobs.service import JobService
from gateway.metrics import Metrics
from gateway.settings import Settings
from gateway.store import open_backend
from gateway.triton.client import TritonPool
from gateway.triton.registry import ModelRegistry
from gateway.webhooks.sender import WebhookSender
from gateway.webhooks.targets import CallbackPolicy

log = logging.getLogger("gateway")


def _log_start(settings: Settings, registry: ModelRegistry) -> None:
    log.info(
        "gateway listening on http://%s:%d (Triton %s, %s store, auth %s); models ready: %s",
        settings.host,
        settings.port,
        ",".join(settings.triton_urls),
        "redis" if settings.redis_url else "in-memory",
        "OFF" if settings.auth_disabled else "on",
        ", ".join(sorted(n for n, m in registry.models.items() if m.ready)) or "none yet",
    )
    if settings.auth_disabled:
        log.warning("API key auth is DISABLED: anyone who reaches this port can use it")
    if settings.webhook_allow_loopback:
        log.warning(
            "WEBHOOK_ALLOW_LOOPBACK is on: callbacks may reach this machine's own ports "
            "(local development only)"
        )


def create_app(settings: Settings) -> FastAPI:
    metrics = Metrics()
    pool = TritonPool(settings.triton_urls)
    registry = ModelRegistry(
        pool, metrics, settings.default_model, settings.max_concurrent_requests
    )
    backend = open_backend(
        settings.redis_url,
        ttl_s=settings.job_ttl_s,
        replica=settings.replica_id,
        lease_s=settings.job_lease_s,
    )
    policy = CallbackPolicy(settings.webhook_allowed_hosts, settings.webhook_allow_loopback)
    webhooks = WebhookSender(
        settings.webhook_secret,
        policy,
        max_attempts=settings.webhook_max_attempts,
        backoff_s=settings.webhook_backoff_s,
    )
    service = JobService(backend, pool, registry, webhooks, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.loop = asyncio.get_running_loop()
        registry.start(settings.poll_interval_s)
        service.start(settings.poll_interval_s)
        await registry.wait_first_refresh(timeout=5.0)
        _log_start(settings, registry)
        yield
        await service.shutdown(settings.shutdown_grace_s)
        await registry.stop()
        await webhooks.close()
        await pool.close()
        await backend.store.close()

    app = FastAPI(
        title="qwen-image-edit gateway",
        version="0.1.0",
        summary="Edit images from text instructions: Qwen-Image-Edit on NVIDIA Triton.",
        lifespan=lifespan,
    )
    state: Any = app.state
    state.settings, state.metrics, state.registry, state.service = (
        settings,
        metrics,
        registry,
        service,
    )
    state.store = backend.store  # read by nothing in here: the tests count what it holds
    state.reader = SubmissionReader(settings, policy, registry.models)
    state.batches = BatchService(service, backend.batches, settings.job_ttl_s)
    state.batch_reader = BatchReader(state.reader)
    state.auth = Authenticator(settings.api_keys, settings.auth_disabled)
    state.rate_limiter = RateLimiter(settings.rate_limit, settings.redis_url)
    for router in ROUTERS:
        app.include_router(router)
    install_error_handlers(app, lambda code: metrics.rejects.labels(reason=code).inc())
    schema: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        if not schema:
            schema.update(build_openapi(app, settings))
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(RequestObserver, metrics=metrics)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_upload_bytes,
        path_caps={"/batches": settings.max_batch_upload_bytes},
        on_reject=lambda: metrics.rejects.labels(reason="payload_too_large").inc(),
    )
    return app
