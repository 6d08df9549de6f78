"""create_app(settings): the FastAPI app with its store, Triton pool, queue and metrics."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.admission import Admission
from gateway.api import api_error_response, new_request_id, router
from gateway.body_limit import BodySizeLimit, BodyTooLarge, error_body
from gateway.errors import ApiError, ServiceUnavailable
from gateway.job_service import JobService
from gateway.jobs import StoreUnavailable, create_job_store
from gateway.metrics import Metrics
from gateway.model_registry import ModelRegistry
from gateway.playground import router as playground_router
from gateway.security import Authenticator, RateLimiter
from gateway.settings import Settings
from gateway.triton_client import TritonPool
from gateway.webhooks import WebhookSender

log = logging.getLogger("gateway")
HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
}


class RequestObserver:
    """Request id in and out, and per-route metrics; plain ASGI, so disconnects reach routes."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = Headers(scope=scope).get("x-request-id", "")[:64]
        request_id = incoming or new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(path, scope["method"], str(status)).inc()
            self.metrics.request_duration.labels(path, scope["method"]).observe(
                time.perf_counter() - started
            )


def create_app(settings: Settings) -> FastAPI:
    metrics = Metrics()
    pool = TritonPool(settings.triton_urls)
    admission = Admission(settings.max_queue_depth)
    registry = ModelRegistry(
        pool, admission, metrics, settings.default_model, settings.max_concurrent_requests
    )
    store = create_job_store(settings.redis_url, settings.job_ttl_s)
    webhooks = WebhookSender(
        settings.webhook_secret, settings.webhook_max_attempts, settings.webhook_backoff_s
    )
    service = JobService(
        store, pool, admission, metrics, webhooks, settings.replica_id, registry.inflight_limit
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.loop = asyncio.get_running_loop()
        try:
            await service.recover()
        except StoreUnavailable:
            log.error("the job store is unreachable at start; jobs answer 503 until it is back")
        registry.start(settings.poll_interval_s)
        await registry.wait_first_refresh(timeout=5.0)
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
        yield
        await service.shutdown(settings.shutdown_grace_s)
        await registry.stop()
        await webhooks.close()
        await pool.close()
        await store.close()

    app = FastAPI(
        title="qwen-image-edit gateway",
        version="0.1.0",
        summary="Edit images from text instructions: Qwen-Image-Edit on NVIDIA Triton.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.registry = registry
    app.state.service = service
    app.state.auth = Authenticator(settings.api_keys, settings.auth_disabled)
    app.state.rate_limiter = RateLimiter(settings.rate_limit, settings.redis_url)
    app.include_router(router)
    app.include_router(playground_router)

    @app.get("/metrics", include_in_schema=False)
    async def metrics_endpoint() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(ApiError)
    async def on_api_error(_request: Request, exc: ApiError) -> JSONResponse:
        metrics.rejects.labels(reason=exc.code).inc()
        return api_error_response(exc)

    @app.exception_handler(StoreUnavailable)
    async def on_store_down(_request: Request, _exc: StoreUnavailable) -> JSONResponse:
        metrics.rejects.labels(reason="store_unavailable").inc()
        return api_error_response(
            ServiceUnavailable(
                "the job store (Redis) is unreachable; retry shortly",
                code="store_unavailable",
                headers={"Retry-After": "2"},
            )
        )

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = [
            {
                "field": ".".join(str(p) for p in e["loc"] if p not in ("body", "query", "header")),
                "message": e["msg"],
            }
            for e in exc.errors()
        ]
        message = "invalid request: " + "; ".join(f"{f['field']}: {f['message']}" for f in fields)
        metrics.rejects.labels(reason="validation_error").inc()
        return api_error_response(
            ApiError(message, code="validation_error", status=422, detail=fields)
        )

    @app.exception_handler(BodyTooLarge)
    async def on_body_too_large(_request: Request, exc: BodyTooLarge) -> Response:
        metrics.rejects.labels(reason="payload_too_large").inc()
        # The rest of the body is never read, so the connection cannot be reused.
        return Response(
            error_body(exc.limit),
            status_code=413,
            media_type="application/json",
            headers={"Connection": "close"},
        )

    @app.exception_handler(HTTPException)
    async def on_http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        code = HTTP_CODES.get(exc.status_code, "http_error")
        message = str(exc.detail)
        if message == "There was an error parsing the body":
            message = "the request body could not be parsed; send valid multipart/form-data"
        metrics.rejects.labels(reason=code).inc()
        return api_error_response(ApiError(message, code=code, status=exc.status_code))

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception(
            "unhandled error", extra={"request_id": getattr(request.state, "request_id", None)}
        )
        return api_error_response(
            ApiError("internal error; see the gateway log", code="internal_error")
        )

    app.add_middleware(RequestObserver, metrics=metrics)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_upload_bytes,
        on_reject=lambda: metrics.rejects.labels(reason="payload_too_large").inc(),
    )
    return app
