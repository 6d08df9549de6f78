"""Open event streams per key, on one replica: MAX_STREAMS_PER_KEY, then 429."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

from gateway.errors import ApiError, ErrorCode

T = TypeVar("T")


class StreamLimit:
    def __init__(self, per_key: int) -> None:
        self.per_key = per_key
        self.open: Counter[str] = Counter()

    def claim(self, bucket: str) -> Callable[[], None]:
        """Hold one of the bucket's streams; call what this returns to give it back."""
        if self.open[bucket] >= self.per_key:
            raise ApiError(
                ErrorCode.RATE_LIMITED,
                f"{self.per_key} event streams are open for this key already; close one, or "
                "poll GET /jobs/{id} instead",
                retry_after_s=5,
            )
        self.open[bucket] += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.open[bucket] -= 1
                if not self.open[bucket]:
                    del self.open[bucket]

        return release

    def held(self, bucket: str, items: AsyncIterator[T]) -> AsyncIterator[T]:
        """The items, while one of the bucket's streams is held (claimed now, before the first)."""
        return _releasing(items, self.claim(bucket))


async def _releasing(items: AsyncIterator[T], release: Callable[[], None]) -> AsyncIterator[T]:
    try:
        async for item in items:
            yield item
    finally:
        release()
