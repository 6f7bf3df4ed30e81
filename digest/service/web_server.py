"""Running the link server (`digest web`): uvicorn, with limits on what clients can hold.

Every reader holds links, so the server faces the open internet (behind a proxy, see deploy/).
A client that opens connections and sends nothing, or trickles its request headers, must not
be able to use up the process's file descriptors:

- a request's headers must be complete within `[web] header_timeout` seconds of the connection
  (or of the previous response on a kept-alive connection), else the connection is closed;
- at most `[web] max_connections` are open; a new one beyond that closes the oldest connection
  still waiting for its headers;
- uvicorn's `limit_concurrency` (which counts open connections too, so it sits just above
  max_connections) answers 503 when even that is exceeded;
- an error the event loop logs for every accept (EMFILE) is logged at most once a minute.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Any, ClassVar

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from digest.config import Config
from digest.store.papers import Store

KEEP_ALIVE_SECONDS = 5


class _Guarded(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request's headers."""

    # Connections of this process awaiting headers, by when they began (one server per process).
    waiting: ClassVar[dict[_Guarded, float]] = {}
    header_seconds: ClassVar[float] = 10.0
    max_connections: ClassVar[int] = 512

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections and self.waiting:
            oldest = min(self.waiting, key=self.waiting.__getitem__)
            oldest.transport.close()
            self.waiting.pop(oldest, None)
        self._await_headers()

    def _await_headers(self) -> None:
        self._seen = self.cycle
        self.waiting[self] = time.monotonic()
        self._timer = self.loop.call_later(self.header_seconds, self._too_slow)

    def _too_slow(self) -> None:
        if self.cycle is self._seen:  # no new request began: drop the connection
            self.transport.close()
        self.waiting.pop(self, None)

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not self._seen:  # headers are in: the request runs under its own limits
            self._timer.cancel()
            self.waiting.pop(self, None)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._await_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._timer.cancel()
        self.waiting.pop(self, None)
        super().connection_lost(exc)


class OncePerMinute(logging.Filter):
    """Lets each message template through at most once a minute: an error repeated for every
    accept would otherwise write megabytes a second."""

    def __init__(self) -> None:
        super().__init__()
        self.last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        key = str(record.msg)
        if now - self.last.get(key, -60.0) < 60.0:
            return False
        self.last[key] = now
        return True


def uvicorn_config(cfg: Config, store: Store, **where: Any) -> uvicorn.Config:
    """The link app on uvicorn with the limits above; ``where`` is host/port (or nothing, for
    sockets handed to `Server.run`)."""
    from digest.service.web import create_app

    _Guarded.header_seconds = cfg.web.header_timeout
    _Guarded.max_connections = cfg.web.max_connections
    quiet = OncePerMinute()
    for name in ("asyncio", "uvicorn.error"):
        logging.getLogger(name).addFilter(quiet)
    return uvicorn.Config(
        create_app(cfg, store),
        http=_Guarded,
        log_level="warning",
        access_log=False,
        limit_concurrency=cfg.web.max_connections + 16,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        h11_max_incomplete_event_size=16 * 1024,
        backlog=256,
        **where,
    )


def serve_web(cfg: Config, store: Store, sock: socket.socket) -> None:
    """Serve the links on an already bound socket until SIGINT or SIGTERM."""
    uvicorn.Server(uvicorn_config(cfg, store)).run(sockets=[sock])
