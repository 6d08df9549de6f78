"""Every knob of the gateway, read from the environment (pydantic-settings)."""

from __future__ import annotations

import socket
from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from qie_engine import limits
from qie_engine.image_header import ImageLimits

DEFAULT_MODEL_ALIASES = {
    # The seed's Serverpod plan names these; they reach the Qwen model unchanged.
    "qwen2-vl-7b-instruct": "qwen_image_edit",
    "qwen-image-edit": "qwen_image_edit",
    "Qwen/Qwen-Image-Edit": "qwen_image_edit",
}


def _split(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", populate_by_name=True)

    # This machine only, unless told otherwise; the image sets 0.0.0.0 (its port is published).
    host: str = Field("127.0.0.1", alias="GATEWAY_HOST")
    port: int = Field(8000, alias="GATEWAY_PORT")
    triton_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["localhost:8001"], alias="TRITON_URLS"
    )
    redis_url: str | None = Field(None, alias="REDIS_URL")
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list, alias="GATEWAY_API_KEYS")
    auth_disabled: bool = Field(False, alias="GATEWAY_AUTH_DISABLED")
    default_model: str = Field("qwen_image_edit", alias="DEFAULT_MODEL")
    model_aliases: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_MODEL_ALIASES), alias="MODEL_ALIASES"
    )
    max_upload_bytes: int = Field(25 * 1024 * 1024, alias="MAX_UPLOAD_BYTES", gt=0)
    max_image_bytes: int = Field(limits.MAX_IMAGE_BYTES, alias="MAX_IMAGE_BYTES", gt=0)
    max_pixels: int = Field(limits.MAX_PIXELS, alias="MAX_PIXELS", gt=0)
    max_prompt_chars: int = Field(limits.MAX_PROMPT_CHARS, alias="MAX_PROMPT_CHARS", gt=0)
    max_jpeg_scans: int = Field(limits.MAX_JPEG_SCANS, alias="MAX_JPEG_SCANS", gt=0)
    max_image_metadata_bytes: int = Field(
        limits.MAX_IMAGE_METADATA_BYTES, alias="MAX_IMAGE_METADATA_BYTES", ge=0
    )
    max_image_frames: int = Field(limits.MAX_IMAGE_FRAMES, alias="MAX_IMAGE_FRAMES", gt=0)
    max_image_chunks: int = Field(limits.MAX_IMAGE_CHUNKS, alias="MAX_IMAGE_CHUNKS", gt=0)
    # Memory the image checks may hold at once; a check waits while others use it up.
    max_decode_mb: int = Field(256, alias="MAX_DECODE_MB", gt=0)
    # A batch: 2 to this many images (or variations), one job each; its whole body's cap.
    max_batch_images: int = Field(16, alias="MAX_BATCH_IMAGES", ge=2)
    max_batch_upload_bytes: int = Field(100 * 1024 * 1024, alias="MAX_BATCH_UPLOAD_BYTES", gt=0)
    max_queue_depth: int = Field(32, alias="MAX_QUEUE_DEPTH", ge=0)
    max_concurrent_requests: int | None = Field(None, alias="MAX_CONCURRENT_REQUESTS", gt=0)
    rate_limit: str = Field("120/minute", alias="RATE_LIMIT")
    # Requests with no valid key, per client address, before they get 429 instead of 401.
    failed_auth_rate: str = Field("30/minute", alias="FAILED_AUTH_RATE")
    # Open event streams (SSE) of one key on one replica; one more gets 429. Serverpod follows
    # all its users' jobs with one key, so the default leaves room for a thousand.
    max_streams_per_key: int = Field(1000, alias="MAX_STREAMS_PER_KEY", gt=0)
    # Connections uvicorn serves at once; past it, new ones get 503 at once.
    max_connections: int = Field(4096, alias="GATEWAY_MAX_CONNECTIONS", gt=0)
    # /docs and /openapi.json; false closes them (a deployment that publishes no spec).
    docs_enabled: bool = Field(True, alias="OPENAPI_DOCS")
    request_timeout_s: float = Field(300.0, alias="REQUEST_TIMEOUT_S", gt=0)
    job_ttl_s: int = Field(86400, alias="JOB_TTL_S", gt=0)
    # A result is kept this long after its job ends (then 410 result_expired); the job's status
    # stays for JOB_TTL_S. Shorter, so that results (the bulk of the store) cannot fill it.
    result_ttl_s: int = Field(3600, alias="RESULT_TTL_S", gt=0)
    # Redis connections of one replica's requests; one that finds them all busy waits up to
    # REDIS_POOL_WAIT_S, then answers 503 store_unavailable. Leases have connections of their own.
    redis_pool_size: int = Field(64, alias="REDIS_POOL_SIZE", ge=4)
    redis_pool_wait_s: float = Field(2.0, alias="REDIS_POOL_WAIT_S", gt=0)
    webhook_secret: str = Field("", alias="WEBHOOK_SECRET")
    webhook_max_attempts: int = Field(5, alias="WEBHOOK_MAX_ATTEMPTS", ge=1)
    webhook_backoff_s: float = Field(1.0, alias="WEBHOOK_BACKOFF_S", ge=0)
    # Callback hosts: exact names (their addresses may be private, e.g. a compose service), or
    # ".example.com" for any subdomain (public addresses only). Empty: no callbacks at all.
    webhook_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, alias="WEBHOOK_ALLOWED_HOSTS"
    )
    # Local development only: lets an allowlisted host resolve to a loopback address.
    webhook_allow_loopback: bool = Field(False, alias="WEBHOOK_ALLOW_LOOPBACK")
    # A running job's claim on its queue slot; a replica that dies loses it after this long.
    job_lease_s: float = Field(15.0, alias="JOB_LEASE_S", gt=0)
    replica_id: str = Field(default_factory=socket.gethostname, alias="GATEWAY_REPLICA_ID")
    shutdown_grace_s: float = Field(20.0, alias="SHUTDOWN_GRACE_S", ge=0)
    poll_interval_s: float = Field(2.0, alias="TRITON_POLL_INTERVAL_S", gt=0)
    log_level: str = Field("INFO", alias="LOG_LEVEL")

    @field_validator("triton_urls", "api_keys", "webhook_allowed_hosts", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        return _split(value)

    @field_validator("redis_url", "max_concurrent_requests", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return value or None

    @model_validator(mode="after")
    def _auth_is_explicit(self) -> Settings:
        if not self.api_keys and not self.auth_disabled:
            raise ValueError(
                "GATEWAY_API_KEYS is empty: set API keys (comma-separated), "
                "or GATEWAY_AUTH_DISABLED=true for a local, trusted network"
            )
        if not self.triton_urls:
            raise ValueError("TRITON_URLS is empty: give at least one Triton gRPC host:port")
        return self

    def image_limits(self) -> ImageLimits:
        """The shared image limits, as this gateway is configured."""
        return ImageLimits(
            **{field: getattr(self, name.lower()) for name, field in limits.IMAGE_LIMITS.items()}
        )

    def resolve_model(self, name: str | None) -> str:
        name = (name or "").strip() or self.default_model
        return self.model_aliases.get(name, name)
