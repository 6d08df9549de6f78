"""Recorders for the engine tests: progress events with a cancel switch, and call spies."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from qie_engine.contract import ProgressEvent


class ProgressLog:
    """Collects progress events; `cancel_after(n)` turns is_cancelled() true once n arrived.

    `on_event` runs inside the progress callback, i.e. while the pipeline is mid-run.
    """

    def __init__(self, on_event: Callable[[ProgressEvent], None] | None = None) -> None:
        self.events: list[ProgressEvent] = []
        self.cancel_at: int | None = None
        self.on_event = on_event

    def __call__(self, event: ProgressEvent) -> None:
        self.events.append(event)
        if self.on_event is not None:
            self.on_event(event)

    def cancel_after(self, count: int) -> ProgressLog:
        self.cancel_at = count
        return self

    def is_cancelled(self) -> bool:
        return self.cancel_at is not None and len(self.events) >= self.cancel_at

    @property
    def steps(self) -> list[int]:
        return [event.step for event in self.events]


@dataclass
class Calls:
    """What a spied callable was called with, in order."""

    args: list[tuple[Any, ...]] = field(default_factory=list)
    kwargs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.kwargs)


def spy(
    monkeypatch: pytest.MonkeyPatch,
    owner: Any,
    name: str,
    *,
    replacement: Callable[..., Any] | None = None,
) -> Calls:
    """Record every call of owner.name (a class or an instance attribute), then call through.

    With `replacement`, call that instead of the original (e.g. to skip real compilation).
    """
    original = getattr(owner, name)
    calls = Calls()
    target = replacement or original

    if isinstance(owner, type):

        def method(self: Any, *args: Any, **kwargs: Any) -> Any:
            calls.args.append(args)
            calls.kwargs.append(kwargs)
            return target(self, *args, **kwargs)

        monkeypatch.setattr(owner, name, method)
    else:

        def function(*args: Any, **kwargs: Any) -> Any:
            calls.args.append(args)
            calls.kwargs.append(kwargs)
            return target(*args, **kwargs)

        monkeypatch.setattr(owner, name, function)
    return calls
