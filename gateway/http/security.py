"""API keys, the rate limits (the `limits` library, shared through Redis if set), and the gate
that applies both from a request's head, before a byte of its body is read."""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItem, parse
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string
from redis.exceptions import OutOfMemoryError, RedisError
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import ApiError, ErrorCode, StoreUnavailable
from gateway.http.error_handlers import json_response

log = logging.getLogger("gateway")

ANONYMOUS = "anonymous"
# Routes that need a key; the page, /health, /metrics and the docs do not, and an unknown path
# answers 404 as it is.
KEYED_PATHS = frozenset({"/process", "/batches", "/models"})
KEYED_PREFIXES = ("/jobs/", "/batches/")


def owner_id(api_key: str) -> str:
    """A stable, non-reversible id for a key: jobs store this, never the key."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:32]


def presented_key(request: HTTPConnection) -> str | None:
    """The key from `Authorization: Bearer <key>` or `X-API-Key`; a malformed header is none."""
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip() or " " in token.strip():
            return None
        return token.strip()
    key = request.headers.get("x-api-key")
    return key.strip() if key and key.strip() else None


def client_address(request: HTTPConnection) -> str:
    return request.client.host if request.client else "unknown"


@dataclass(frozen=True)
class Identity:
    """Who sent a request: the owner its jobs belong to, and the bucket its rate is counted in
    (the key's; with auth off, one per client address, so no client can 429 the others)."""

    owner: str
    bucket: str


class Authenticator:
    def __init__(self, api_keys: list[str], disabled: bool) -> None:
        self.keys = [k.encode() for k in api_keys]
        self.disabled = disabled

    def identify(self, request: HTTPConnection) -> Identity:
        if self.disabled:
            return Identity(ANONYMOUS, f"address:{client_address(request)}")
        key = presented_key(request)
        # compare_digest on every key keeps the check's timing independent of the key.
        if key is None or not any(hmac.compare_digest(key.encode(), k) for k in self.keys):
            raise ApiError(
                ErrorCode.UNAUTHORIZED,
                "a valid API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        owner = owner_id(key)
        return Identity(owner, owner)

    def knows(self, request: HTTPConnection) -> bool:
        """Whether the request carries a valid key (always, with auth off)."""
        try:
            self.identify(request)
        except ApiError:
            return False
        return True


class RateLimiter:
    def __init__(
        self, rate: str, failed_auth_rate: str, redis_url: str | None = None, pool: Any = None
    ) -> None:
        """With Redis, the counts are shared by every replica, through `pool`, a bounded one
        (the library's own would fail at once past 100 connections); else this process's."""
        self.item = parse(rate)
        self.failed_auth = parse(failed_auth_rate)
        if redis_url:
            options = {"implementation": "redispy", "connection_pool": pool} if pool else {}
            self.storage = storage_from_string(f"async+{redis_url}", **options)
        else:
            self.storage = storage_from_string("async+memory://")
        self.limiter = MovingWindowRateLimiter(self.storage)

    def batch_fits(self, edits: int) -> None:
        """A batch of N edits costs N; one over the whole rate can never pass: 429 at once."""
        if edits > self.item.amount:
            raise ApiError(
                ErrorCode.RATE_LIMITED,
                f"a batch of {edits} edits is over the rate limit of {self.item}; "
                f"send at most {self.item.amount} images at once",
                retry_after_s=self.item.get_expiry(),
            )

    async def check_batch(self, bucket: str, edits: int) -> None:
        """Its request counted one already (at the gate); this counts the others, or none of
        them when they don't all fit."""
        self.batch_fits(edits)
        await self.check(bucket, cost=edits - 1)

    async def check(self, bucket: str, cost: int = 1) -> None:
        """Count `cost` requests against the bucket's rate; a refused check counts nothing."""
        await self._hit(self.item, bucket, cost, "rate limit of {item} exceeded")

    async def failed_authentication(self, address: str) -> None:
        """Count a request with no valid key from this address; 429 once there are too many."""
        why = "too many requests without a valid API key from this address ({item})"
        await self._hit(self.failed_auth, f"unauthenticated:{address}", 1, why)

    async def _hit(self, item: RateLimitItem, bucket: str, cost: int, why: str) -> None:
        if cost <= 0:
            return
        try:
            if await self.limiter.hit(item, bucket, cost=cost):
                return
            stats = await self.limiter.get_window_stats(item, bucket)
        except OutOfMemoryError:
            # Redis is full with nothing left to evict: new work is refused (store_full) anyway;
            # status, results and cancels must still pass, uncounted.
            log.warning("Redis is at its maxmemory: a request passes its rate limit uncounted")
            return
        except (RedisError, OSError) as exc:
            raise StoreUnavailable("rate limits") from exc
        retry_after = max(1, int(stats.reset_time - time.time()) + 1)
        raise ApiError(
            ErrorCode.RATE_LIMITED,
            f"{why.format(item=item)}; retry in {retry_after}s",
            retry_after_s=retry_after,
        )


def needs_key(path: str) -> bool:
    return path.rstrip("/") in KEYED_PATHS or path.startswith(KEYED_PREFIXES)


class AccessGate:
    """Plain ASGI: the key and the rate of every keyed route, from the request's head. A refusal
    (401, 429, 503) is answered at once and the connection closed, with no byte of the body read:
    a client that sent `Expect: 100-continue` gets it before it sends the body at all."""

    def __init__(
        self,
        app: ASGIApp,
        auth: Authenticator,
        limiter: RateLimiter,
        on_reject: Callable[[ErrorCode], None],
    ) -> None:
        self.app = app
        self.auth = auth
        self.limiter = limiter
        self.on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not needs_key(scope["path"]):
            await self.app(scope, receive, send)
            return
        request = HTTPConnection(scope)
        try:
            identity = await self._admit(request)
        except ApiError as refusal:
            self.on_reject(refusal.code)
            refusal.headers["Connection"] = "close"
            await json_response(refusal)(scope, receive, send)
            return
        scope.setdefault("state", {})["identity"] = identity
        await self.app(scope, receive, send)

    async def _admit(self, request: HTTPConnection) -> Identity:
        try:
            identity = self.auth.identify(request)
        except ApiError:
            await self.limiter.failed_authentication(client_address(request))
            raise
        await self.limiter.check(identity.bucket)
        return identity
