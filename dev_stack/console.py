"""What the launchers print as they work: one line per step, prefixed with the tool's name."""

from __future__ import annotations


class Voice:
    """Progress lines of one tool, e.g. `[make run] gateway ready`, flushed at once."""

    def __init__(self, name: str) -> None:
        self.prefix = f"[{name}]"

    def __call__(self, message: str) -> None:
        print(f"{self.prefix} {message}", flush=True)
