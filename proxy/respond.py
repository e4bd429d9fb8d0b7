"""Writing to the client, shared by the plain relay and the resumable one: the event-stream
headers, a response that counts what it sent, a write that turns a vanished client into
:class:`ClientGone`, and the ``code``/``message`` of a failure told in-band."""

from __future__ import annotations

import asyncio
from typing import Final

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from .config import RouteConfig
from .errors import StreamError
from .streams import shutting_down

__all__ = [
    "SSE_HEADERS",
    "ClientGone",
    "CountingResponse",
    "read_chunk",
    "send",
    "stream_failure",
    "upstream_gone",
]

# Set together, always: the type EventSource requires, no caching, and no proxy buffering (nginx
# honours X-Accel-Buffering). The stream is never compressed: compression buffers.
SSE_HEADERS: Final = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


class ClientGone(Exception):
    """The client closed its connection (or would not read); nothing more can be told to it."""

    def __init__(self, reason: str = "client_gone") -> None:
        super().__init__(reason)
        self.reason = reason


class CountingResponse(web.StreamResponse):
    """A stream response that counts the body bytes written (aiohttp's ``body_length`` is known
    only after the handler returns) and gives up on a client that stops reading: a write that
    stays blocked for ``write_timeout`` seconds cuts the connection (:class:`ClientGone`), so a
    client that never reads holds neither a handler nor an upstream request for long."""

    sent = 0

    def __init__(self, *, headers: dict[str, str], write_timeout: float | None) -> None:
        super().__init__(headers=headers)
        self._write_timeout = write_timeout
        self._client: asyncio.Transport | None = None

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        transport = request.transport
        self._client = transport if isinstance(transport, asyncio.Transport) else None
        return await super().prepare(request)

    def may_block(self) -> bool:
        """A write now might wait for the client: bytes are still queued for it."""
        client = self._client
        return client is not None and bool(client.get_write_buffer_size())

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        client = self._client
        # Only a write that finds bytes still queued can block: the deadline is armed then.
        if self._write_timeout is None or client is None or not self.may_block():
            await super().write(data)
        else:
            try:
                async with asyncio.timeout(self._write_timeout):
                    await super().write(data)
            except TimeoutError:
                client.abort()
                raise ClientGone("write_timeout") from None
        self.sent += len(data)


async def read_chunk(content: aiohttp.StreamReader) -> bytes:
    """The next chunk of an upstream body (``b""`` at its end). aiohttp raises a bare
    ``RuntimeError("Connection closed.")`` for a read after the connection went away while an
    earlier read was cancelled (our heartbeat does that): it is the upstream closing."""
    try:
        return await content.readany()
    except RuntimeError as exc:
        if str(exc) != "Connection closed.":
            raise
        raise aiohttp.ClientPayloadError("the upstream connection closed") from exc


def upstream_gone(upstream: aiohttp.ClientResponse) -> bool:
    """The upstream connection closed before the body ended, without waking a pending read."""
    connection = upstream.connection
    return not upstream.content.is_eof() and (connection is None or connection.transport is None)


async def send(response: web.StreamResponse, data: bytes) -> None:
    if not data:
        return
    try:
        await response.write(data)
    except ConnectionResetError as exc:
        raise ClientGone from exc


def stream_failure(
    exc: BaseException, route: RouteConfig, *, draining: bool, out_of_time: bool
) -> tuple[str, str]:
    """The ``code`` and ``message`` of the error event for a failure after the stream started."""
    if draining:  # the drain closed the upstream: that is the reason, not the error
        return shutting_down().code, shutting_down().message
    if out_of_time:
        return "max_duration", f"the stream reached its maximum of {route.limits.max_duration} s"
    if isinstance(exc, StreamError):
        return exc.code, str(exc)
    if isinstance(exc, TimeoutError):
        return "upstream_timeout", f"the upstream sent nothing for {route.timeouts.read} s"
    if isinstance(exc, aiohttp.ClientPayloadError):
        # aiohttp's text ("Response payload is not completed: <TransferEncodingError: 400, ...")
        # shows a parser status that looks like an HTTP one; say what happened instead.
        return "upstream_closed", "the upstream connection closed before the body was complete"
    return "upstream_error", f"the upstream failed mid-stream: {exc or type(exc).__name__}"
