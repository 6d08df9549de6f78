"""API keys and the per-key rate limit (the `limits` library, shared through Redis if set)."""

from __future__ import annotations

import hashlib
import hmac
import time

from limits import parse
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string
from redis.exceptions import RedisError
from starlette.requests import Request

from gateway.errors import ApiError, ErrorCode, StoreUnavailable

ANONYMOUS = "anonymous"


def owner_id(api_key: str) -> str:
    """A stable, non-reversible id for a key: jobs store this, never the key."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:32]


def presented_key(request: Request) -> str | None:
    """The key from `Authorization: Bearer <key>` or `X-API-Key`; a malformed header is none."""
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip() or " " in token.strip():
            return None
        return token.strip()
    key = request.headers.get("x-api-key")
    return key.strip() if key and key.strip() else None


class Authenticator:
    def __init__(self, api_keys: list[str], disabled: bool) -> None:
        self.keys = [k.encode() for k in api_keys]
        self.disabled = disabled

    def owner(self, request: Request) -> str:
        if self.disabled:
            return ANONYMOUS
        key = presented_key(request)
        # compare_digest on every key keeps the check's timing independent of the key.
        if key is None or not any(hmac.compare_digest(key.encode(), k) for k in self.keys):
            raise ApiError(
                ErrorCode.UNAUTHORIZED,
                "a valid API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return owner_id(key)


class RateLimiter:
    def __init__(self, rate: str, redis_url: str | None) -> None:
        self.item = parse(rate)
        uri = f"async+{redis_url}" if redis_url else "async+memory://"
        options = {"implementation": "redispy"} if redis_url else {}
        self.storage = storage_from_string(uri, **options)
        self.limiter = MovingWindowRateLimiter(self.storage)

    async def check_batch(self, owner: str, edits: int) -> None:
        """A batch of N edits costs N: its request counted one already (on the way in), this
        counts the others, or none of them when they don't all fit."""
        if edits > self.item.amount:
            raise ApiError(
                ErrorCode.RATE_LIMITED,
                f"a batch of {edits} edits is over the rate limit of {self.item}; "
                f"send at most {self.item.amount} images at once",
                retry_after_s=self.item.get_expiry(),
            )
        await self.check(owner, cost=edits - 1)

    async def check(self, owner: str, cost: int = 1) -> None:
        """Count `cost` requests against the key's rate; a refused check counts nothing."""
        if cost <= 0:
            return
        try:
            allowed = await self.limiter.hit(self.item, owner, cost=cost)
            if allowed:
                return
            stats = await self.limiter.get_window_stats(self.item, owner)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable("rate limits") from exc
        retry_after = max(1, int(stats.reset_time - time.time()) + 1)
        raise ApiError(
            ErrorCode.RATE_LIMITED,
            f"rate limit of {self.item} exceeded; retry in {retry_after}s",
            retry_after_s=retry_after,
        )
