"""The memory the image checks of one replica may hold at once (MAX_DECODE_MB).

A check reserves what it will cost at its peak (qie_engine.image_codec.check_cost_bytes, from
the image's header) before it decodes anything; while the reservations would pass the budget,
it waits for others to finish. One check larger than the whole budget runs alone. Written by
hand: asyncio has no weighted semaphore, and none of our dependencies offers one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class DecodeBudget:
    def __init__(self, total_bytes: int) -> None:
        self.total = total_bytes
        self.held = 0
        self._changed = asyncio.Condition()

    @asynccontextmanager
    async def reserve(self, cost: int) -> AsyncIterator[None]:
        cost = min(cost, self.total)
        async with self._changed:
            await self._changed.wait_for(lambda: self.held + cost <= self.total)
            self.held += cost
        try:
            yield
        finally:
            async with self._changed:
                self.held -= cost
                self._changed.notify_all()
