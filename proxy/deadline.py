"""A deadline on a connection's first request headers, against slowloris clients.

aiohttp's server has no timeout for a request whose headers trickle in: a client that sends one
header byte a minute holds a connection (and a file descriptor) forever. Strategy: the listening
socket's protocol factory wraps each aiohttp protocol in :class:`HeaderDeadline`, which forwards
every call and arms one timer at ``connection_made``. The server marks a connection as started
when its first request reaches a handler (its headers are whole by then); if the timer fires
first, the client gets ``408`` with a JSON error and the connection is closed. Later requests on
a kept-alive connection are bounded by aiohttp's ``keepalive_timeout``.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Final

import orjson

__all__ = ["HeaderDeadline", "StartedConnections"]

StartedConnections = weakref.WeakSet[asyncio.BaseTransport]

_BODY: Final = orjson.dumps(
    {"error": {"code": "request_timeout", "message": "the request headers took too long"}}
)
_TIMEOUT_RESPONSE: Final = (
    b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_BODY), _BODY)
)


class HeaderDeadline(asyncio.Protocol):
    def __init__(
        self, inner: asyncio.Protocol, seconds: float, started: StartedConnections
    ) -> None:
        self._inner = inner
        self._seconds = seconds
        self._started = started
        self._timer: asyncio.TimerHandle | None = None

    @classmethod
    def factory(
        cls, inner: Callable[[], asyncio.Protocol], seconds: float, started: StartedConnections
    ) -> Callable[[], asyncio.Protocol]:
        return lambda: cls(inner(), seconds, started)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._seconds, self._expire, transport)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def _expire(self, transport: asyncio.BaseTransport) -> None:
        self._timer = None
        if transport in self._started or transport.is_closing():
            return
        if isinstance(transport, asyncio.WriteTransport):
            transport.write(_TIMEOUT_RESPONSE)
        transport.close()
