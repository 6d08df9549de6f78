"""One process's batch records, in memory."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from gateway.store.batch_models import Batch


class MemoryBatchStore:
    """Batch records of one process; each is forgotten at its own expiry, the oldest first when
    more than `max_batches` are kept."""

    def __init__(
        self, *, max_batches: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_batches = max_batches
        self._clock = clock
        self._batches: OrderedDict[str, tuple[Batch, float]] = OrderedDict()

    def __len__(self) -> int:
        self._sweep()
        return len(self._batches)

    async def create(self, batch: Batch, ttl_s: int) -> tuple[Batch, bool]:
        self._sweep()
        kept = self._batches.get(batch.id)
        if kept is not None:
            return kept[0].model_copy(deep=True), False
        self._batches[batch.id] = (batch.model_copy(deep=True), self._clock() + ttl_s)
        while len(self._batches) > self.max_batches:
            self._batches.popitem(last=False)
        return batch.model_copy(deep=True), True

    async def get(self, batch_id: str) -> Batch | None:
        self._sweep()
        kept = self._batches.get(batch_id)
        return kept[0].model_copy(deep=True) if kept else None

    def _sweep(self) -> None:
        now = self._clock()
        for batch_id in [b for b, (_, expires) in self._batches.items() if expires <= now]:
            del self._batches[batch_id]
