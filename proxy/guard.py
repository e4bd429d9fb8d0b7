"""Connection-level guards that aiohttp's server does not have: a deadline on the first request's
headers (slowloris), and JSON bodies for the errors its HTTP parser answers by itself.

aiohttp has no timeout for a request whose headers trickle in: a client that sends one header byte
a minute holds a connection (and a file descriptor) forever. Strategy: the listening socket's
protocol factory wraps each aiohttp protocol in :class:`HeaderDeadline`, which forwards every call
and arms one timer at ``connection_made``; the blank line that ends the first request's headers
disarms it. If the timer fires first, the client gets ``408`` with a JSON error and the connection
is closed. Later requests on a kept-alive connection are bounded by ``keepalive_timeout``.

A request line or header over aiohttp's limits, or a request that is not HTTP, is answered by its
parser before any middleware runs, in plain text; our protocol class makes that answer
``{"error": {...}}`` like every other one (414 for a request line too long, 431 for headers).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Final

import orjson
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong

__all__ = ["HeaderDeadline"]

_END_OF_HEADERS: Final = b"\r\n\r\n"
_TARGET_TOO_LONG: Final = re.compile(r"reading: (?:bytearray\()?b'(?:/|[a-zA-Z][a-zA-Z0-9+.-]*://)")

_BODY: Final = orjson.dumps(
    {"error": {"code": "request_timeout", "message": "the request headers took too long"}}
)
_TIMEOUT_RESPONSE: Final = (
    b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_BODY), _BODY)
)


class HeaderDeadline(asyncio.Protocol):
    def __init__(self, inner: asyncio.Protocol, seconds: float) -> None:
        self._inner = inner
        self._seconds = seconds
        self._timer: asyncio.TimerHandle | None = None
        self._tail = b""

    @classmethod
    def factory(
        cls, server: web.Server, seconds: float, keepalive_timeout: float
    ) -> Callable[[], asyncio.Protocol]:
        """The protocol factory for the listening socket of ``server`` (a runner's)."""
        loop = asyncio.get_running_loop()

        def make() -> asyncio.Protocol:
            handler = _JsonErrorsRequestHandler(
                server,
                loop=loop,
                keepalive_timeout=keepalive_timeout,
                access_log=None,  # type: ignore[arg-type]  # None turns it off, as AppRunner does
            )
            return cls(handler, seconds)

        return make

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._seconds, self._expire, transport)

    def data_received(self, data: bytes) -> None:
        if self._timer is not None:
            # Only until the first request's headers are whole: then the deadline is met.
            seen = self._tail + data
            if _END_OF_HEADERS in seen:
                self._timer.cancel()
                self._timer = None
                self._tail = b""
            else:
                self._tail = seen[-3:]
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
        if transport.is_closing():
            return
        if isinstance(transport, asyncio.WriteTransport):
            transport.write(_TIMEOUT_RESPONSE)
        transport.close()


class _JsonErrorsRequestHandler(web.RequestHandler):
    """aiohttp's protocol, answering its parser's errors with our JSON error body."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # its logging and sent-head check
        status, code, text = _describe(status, exc)
        response = web.json_response({"error": {"code": code, "message": text}}, status=status)
        response.force_close()
        return response


def _describe(status: int, exc: BaseException | None) -> tuple[int, str, str]:
    if isinstance(exc, LineTooLong):
        # aiohttp's text quotes what was too long: a target (/path, or absolute) is the URI.
        if _TARGET_TOO_LONG.search(str(exc)):
            return 414, "uri_too_long", "the request target is too long"
        return 431, "header_fields_too_large", "a request header is too long"
    if isinstance(exc, BadHttpMessage) and "too many headers" in str(exc).lower():
        return 431, "header_fields_too_large", "the request has too many headers"
    if status == 400:
        return 400, "bad_request", "the request is not valid HTTP/1.1"
    return status, "internal_error", "the gateway failed to handle the request"
