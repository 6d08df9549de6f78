"""How uvicorn serves the app: a bound on connections, short keep-alive, a bounded head size, and
a deadline for a request's head, which uvicorn itself does not have (a client that sends its
headers a byte at a time would otherwise hold a connection for ever)."""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from gateway.settings import Settings

HEAD_TIMEOUT_S = 10.0  # from the first byte of a request to the end of its head
KEEP_ALIVE_S = 5  # an idle connection between requests
MAX_HEAD_BYTES = 64 * 1024  # request line and headers


class HeadTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request head does not arrive in time."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self.cycle is None or self.cycle.response_complete:
            self._arm()  # the first bytes of the next request on a kept-alive connection
        cycle = self.cycle
        super().data_received(data)
        if self.cycle is not cycle:  # a whole head arrived: a request started
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(HEAD_TIMEOUT_S, self._too_slow)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _too_slow(self) -> None:
        self._head_timer = None
        if self.cycle is None or self.cycle.response_complete:
            self.transport.close()


def uvicorn_config(app: Any, settings: Settings, **overrides: Any) -> uvicorn.Config:
    values: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "http": HeadTimeoutProtocol,
        "limit_concurrency": settings.max_connections,
        "timeout_keep_alive": KEEP_ALIVE_S,
        "h11_max_incomplete_event_size": MAX_HEAD_BYTES,
        "log_config": None,
        "access_log": False,
        "timeout_graceful_shutdown": 10,
        **overrides,
    }
    return uvicorn.Config(app, **values)
