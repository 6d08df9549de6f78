"""create_app(settings): every service of the gateway built once, each handed its collaborators,
and the FastAPI app that serves them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI

from gateway.batches.events import BatchEvents
from gateway.batches.service import BatchReader, BatchService
from gateway.errors import ErrorCode
from gateway.http.batch_forms import BatchFormReader
from gateway.http.deps import Services
from gateway.http.error_handlers import install_error_handlers
from gateway.http.forms import FormReader
from gateway.http.middleware import BodySizeLimit, RequestObserver, Utf8FormsOnly
from gateway.http.openapi import build_openapi
from gateway.http.routes import ROUTERS
from gateway.http.security import AccessGate, Authenticator, RateLimiter
from gateway.http.stream_limit import StreamLimit
from gateway.jobs.admission import JobAdmission
from gateway.jobs.cancelling import JobCanceller
from gateway.jobs.execution import JobExecution
from gateway.jobs.following import JobFollower
from gateway.jobs.lifecycle import JobLifecycle
from gateway.jobs.lookup import JobLookup
from gateway.jobs.queue_monitor import QueueMonitor
from gateway.jobs.runner import JobRunner
from gateway.jobs.waiting import JobWaiter
from gateway.metrics import Metrics
from gateway.settings import Settings
from gateway.store import Backend, StoreOptions, open_backend
from gateway.store.redis_connection import connect
from gateway.triton.client import TritonPool
from gateway.triton.registry import ModelRegistry
from gateway.webhooks.sender import WebhookSender
from gateway.webhooks.targets import CallbackPolicy, backend_hosts

log = logging.getLogger("gateway")


@dataclass(frozen=True)
class Background:
    """What runs beside the routes, started and stopped with the app."""

    pool: TritonPool
    backend: Backend
    webhooks: WebhookSender
    runner: JobRunner


def store_options(settings: Settings) -> StoreOptions:
    return StoreOptions(
        ttl_s=settings.job_ttl_s,
        result_ttl_s=min(settings.result_ttl_s, settings.job_ttl_s),
        replica=settings.replica_id,
        lease_s=settings.job_lease_s,
        pool_size=settings.redis_pool_size,
        pool_wait_s=settings.redis_pool_wait_s,
    )


def rate_pool(settings: Settings) -> Any:
    """The rate limits' Redis connections: bounded, blocking briefly, like the store's."""
    if not settings.redis_url:
        return None
    client = connect(
        settings.redis_url,
        max_connections=settings.redis_pool_size,
        wait_s=settings.redis_pool_wait_s,
    )
    return client.connection_pool


def _webhooks(settings: Settings) -> tuple[CallbackPolicy, WebhookSender]:
    policy = CallbackPolicy(
        settings.webhook_allowed_hosts,
        settings.webhook_allow_loopback,
        # No callback may reach these, whatever the allowlist says (a model unload is one POST).
        backend_hosts=backend_hosts([*settings.triton_urls, settings.redis_url]),
    )
    sender = WebhookSender(
        settings.webhook_secret,
        policy,
        max_attempts=settings.webhook_max_attempts,
        backoff_s=settings.webhook_backoff_s,
    )
    return policy, sender


def build(settings: Settings, backend: Backend | None = None) -> tuple[Services, Background]:
    """Every service, each handed what it uses; nothing is looked up behind its back. The
    backend comes from the settings unless one is given (a test's, with its own clock)."""
    metrics = Metrics()
    pool = TritonPool(settings.triton_urls)
    registry = ModelRegistry(
        pool, metrics, settings.default_model, settings.max_concurrent_requests
    )
    backend = backend or open_backend(settings.redis_url, store_options(settings))
    store, queue, limit = backend.store, backend.queue, registry.inflight_limit
    policy, webhooks = _webhooks(settings)
    lifecycle = JobLifecycle(store, metrics, webhooks)
    lookup = JobLookup(store, queue, limit)
    canceller = JobCanceller(store, queue, lifecycle, lookup)
    execution = JobExecution(store, pool, lifecycle)
    runner = JobRunner(
        store, queue, execution, lifecycle, limit=limit, lease_s=settings.job_lease_s
    )
    registry.on_ready = runner.serve
    monitor = QueueMonitor(store, queue, runner, metrics, limit)
    admission = JobAdmission(
        store,
        queue,
        metrics,
        limit=limit,
        max_depth=settings.max_queue_depth,
        replica=settings.replica_id,
        store_full=monitor.store_full,
    )
    follower = JobFollower(store)
    forms = FormReader(settings, policy, registry.models)
    limiter = RateLimiter(
        settings.rate_limit,
        settings.failed_auth_rate,
        settings.redis_url,
        rate_pool(settings),
    )
    batch_reader = BatchReader(backend.batches, lookup)
    services = Services(
        settings=settings,
        metrics=metrics,
        registry=registry,
        auth=Authenticator(settings.api_keys, settings.auth_disabled),
        rate_limiter=limiter,
        forms=forms,
        batch_forms=BatchFormReader(forms, limiter),
        admission=admission,
        lookup=lookup,
        follower=follower,
        waiter=JobWaiter(store, lookup, canceller),
        canceller=canceller,
        queues=monitor,
        batches=BatchService(
            batch_reader, backend.batches, admission, canceller, lookup, ttl_s=settings.job_ttl_s
        ),
        batch_events=BatchEvents(batch_reader, follower),
        streams=StreamLimit(settings.max_streams_per_key),
    )
    return services, Background(pool, backend, webhooks, runner)


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
    services, background = build(settings)
    registry, interval = services.registry, settings.poll_interval_s

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.loop = asyncio.get_running_loop()
        registry.start(interval)
        services.queues.start(interval)
        await registry.wait_first_refresh(timeout=5.0)
        _log_start(settings, registry)
        yield
        services.queues.stop()
        await background.runner.shutdown(settings.shutdown_grace_s)
        await registry.stop()
        await background.webhooks.close()
        await background.pool.close()
        await background.backend.store.close()

    app = FastAPI(
        title="qwen-image-edit gateway",
        version="0.1.0",
        summary="Edit images from text instructions: Qwen-Image-Edit on NVIDIA Triton.",
        lifespan=lifespan,
        # OPENAPI_DOCS=false closes the interactive docs and the document (404).
        docs_url="/docs" if settings.docs_enabled else None,
        redoc_url=None,
        openapi_url="/openapi.json" if settings.docs_enabled else None,
    )
    state: Any = app.state
    state.services = services
    state.store = background.backend.store  # read by nothing in here: the tests count what it holds
    for router in ROUTERS:
        app.include_router(router)

    def count_reject(code: ErrorCode) -> None:
        services.metrics.rejects.labels(reason=code.value).inc()

    install_error_handlers(app, count_reject)
    schema: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        if not schema:
            schema.update(build_openapi(app, settings))
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(
        AccessGate, auth=services.auth, limiter=services.rate_limiter, on_reject=count_reject
    )
    app.add_middleware(Utf8FormsOnly, on_reject=lambda: count_reject(ErrorCode.VALIDATION_ERROR))
    app.add_middleware(RequestObserver, metrics=services.metrics)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_upload_bytes,
        path_caps={"/batches": settings.max_batch_upload_bytes},
        on_reject=lambda: services.metrics.rejects.labels(reason="payload_too_large").inc(),
    )
    return app
