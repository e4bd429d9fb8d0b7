"""The client's side of a stream: the event-stream headers, and a response that counts what it
sent, turns a vanished client into :class:`ClientGone` and gives up on one that does not read."""

from __future__ import annotations

import asyncio
from typing import Final

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

__all__ = ["SSE_HEADERS", "ClientGone", "CountingResponse"]

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
    client that never reads holds neither a handler nor an upstream request for long. It is the
    relay's sink for a client."""

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
        if not data:
            return
        client = self._client
        try:
            # Only a write that finds bytes still queued can block: the deadline is armed then.
            if self._write_timeout is None or client is None or not self.may_block():
                await super().write(data)
            else:
                async with asyncio.timeout(self._write_timeout):
                    await super().write(data)
        except TimeoutError:
            assert client is not None
            client.abort()
            raise ClientGone("write_timeout") from None
        except ConnectionResetError as exc:
            raise ClientGone from exc
        self.sent += len(data)

    def push(self, data: bytes, chunk: bytes) -> bool:
        """Write now, without waiting: ``data`` framed as ``chunk`` (its chunked transfer coding,
        made once by the caller for many responses) when the response is chunked. False when
        the client's buffer still holds bytes or nothing went out the usual way yet (the head may
        still be waiting for the first body bytes); :class:`ClientGone` when the client closed.
        A stream shared by thousands of readers is written this way: a task's wake-up and
        aiohttp's write path per reader and event cost more than the write itself."""
        client, writer = self._client, self._payload_writer
        if client is None or writer is None or not self.sent:
            return False
        if client.is_closing():
            raise ClientGone
        if client.get_write_buffer_size():
            return False
        # aiohttp turns chunking on in its writer, not in ``self.chunked``, when a HTTP/1.1
        # response has no length.
        client.write(chunk if getattr(writer, "chunked", False) else data)
        self.sent += len(data)
        return True

    async def write_last(self, data: bytes) -> None:
        """The stream's last bytes (its end or error event); the handler then returns."""
        await self.write(data)
