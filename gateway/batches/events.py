"""A batch's server-sent events: each job's events, tagged with its job and index, a `batch`
summary at the start and whenever a job ends, and a last summary with `final: true`. The event
id is a cursor (the last event id seen of each job) to resume from."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.batches.service import BatchReader, BatchState
from gateway.errors import StoreUnavailable
from gateway.jobs.following import JobFollower, StreamError
from gateway.store.batch_models import Batch


@dataclass(frozen=True)
class BatchEvent:
    """One server-sent event of a batch stream; `id` is the cursor to resume after it."""

    event: str
    data: dict[str, Any]
    id: str


def encode_cursor(cursor: Sequence[int]) -> str:
    """The last event id seen of each job, in item order: "4.2.0" (a Last-Event-ID)."""
    return ".".join(str(n) for n in cursor)


def parse_cursor(text: str | None, size: int) -> list[int]:
    """A Last-Event-ID of this batch's stream; anything else starts from the beginning."""
    parts = (text or "").strip().split(".")
    if len(parts) != size or not all(p.isascii() and p.isdigit() and len(p) <= 9 for p in parts):
        return [0] * size
    return [int(p) for p in parts]


def _error(item: StreamError, **tag: Any) -> dict[str, Any]:
    return {**tag, "code": item.code.value, "message": item.message}


class BatchEvents:
    def __init__(self, reader: BatchReader, follower: JobFollower) -> None:
        self._reader = reader
        self._follower = follower

    async def events(
        self, batch_id: str, owner: str, last_event_id: str | None
    ) -> AsyncIterator[BatchEvent]:
        """Checks the owner now; the iterator then yields the events after the cursor."""
        batch = await self._reader.owned(batch_id, owner)
        return self._stream(batch, parse_cursor(last_event_id, len(batch.items)))

    async def _stream(self, batch: Batch, cursor: list[int]) -> AsyncIterator[BatchEvent]:
        index = {job_id: i for i, job_id in enumerate(batch.job_ids)}
        try:
            opening = await self._reader.state(batch)
        except StoreUnavailable as exc:
            yield BatchEvent("error", _error(StreamError(exc.code, exc.message)), "")
            return
        if not opening.tally.final:
            yield _summary(opening, cursor, final=False)
        cursors = dict(zip(batch.job_ids, cursor, strict=True))
        async for followed in self._follower.follow(cursors):
            item = followed.item
            if followed.job_id is None:  # the store is unreachable: following stops here
                assert isinstance(item, StreamError)
                yield BatchEvent("error", _error(item), "")
                return
            i = index[followed.job_id]
            tag = {"job_id": followed.job_id, "index": i}
            if isinstance(item, StreamError):
                yield BatchEvent("error", _error(item, **tag), encode_cursor(cursor))
            else:
                cursor[i] = item.id
                yield BatchEvent(item.event, {**tag, **item.data}, encode_cursor(cursor))
            if followed.closes and followed.still_open:
                # Live, a summary as each job ends; a replay of an ended batch has just the last.
                state = await self._reader.state(batch)
                if not state.tally.final:
                    yield _summary(state, cursor, final=False)
        yield _summary(await self._reader.state(batch), cursor, final=True)


def _summary(state: BatchState, cursor: Sequence[int], *, final: bool) -> BatchEvent:
    t = state.tally
    data = {
        "batch_id": state.batch.id,
        "status": t.status,
        "total": t.total,
        "pending": t.pending,
        "processing": t.processing,
        "completed": t.completed,
        "failed": t.failed,
        "cancelled": t.cancelled,
        "final": final,
    }
    return BatchEvent("batch", data, encode_cursor(cursor))
