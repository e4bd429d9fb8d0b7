"""The relay's sources that read an upstream response: its body through a decoder into events
(:class:`DecodedSource`), or passed through untouched to a client that asked for NDJSON
(:class:`PassthroughSource`).

Strategy: :class:`UpstreamReader` is the one place that reads an upstream body. It takes what
aiohttp has buffered without a timer (``read_nowait``: the busy stream's case) and otherwise
waits until the relay's ``until``, or until ``timeouts.read`` seconds of upstream silence, the
earlier. aiohttp's failures become :class:`~proxy.errors.StreamError` with the codes a client
sees (``upstream_closed``, ``upstream_timeout``, ``upstream_error``), so the relay knows nothing
of aiohttp's client. When the upstream breaks its chunked framing after the head, aiohttp closes
the connection without waking a pending read, so every wake-up also looks at the connection.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Collection
from typing import Final

import aiohttp
import orjson

from .convert import StreamConverter
from .decoders import BodyDecoder
from .errors import StreamError
from .redaction import redact
from .respond import SSE_HEADERS
from .streams import StopReason
from .usage import UsageTally

__all__ = ["DecodedSource", "PassthroughSource", "UpstreamReader"]

log = logging.getLogger("proxy")

_CLOSED: Final = "the upstream connection closed before the body was complete"


class UpstreamReader:
    __slots__ = ("_alarm", "_closed", "_last_read", "_loop", "_read_timeout", "_upstream")

    def __init__(self, upstream: aiohttp.ClientResponse, read_timeout: float | None) -> None:
        self._upstream = upstream
        self._read_timeout = read_timeout
        self._loop = asyncio.get_running_loop()
        self._last_read = self._loop.time()
        self._closed = False
        self._alarm = _Alarm(self._loop)

    def close(self) -> None:
        self._closed = True
        self._alarm.disarm()
        self._upstream.close()

    async def next_chunk(self, until: float) -> bytes | None:
        """The next chunk (``b""`` at the body's end), or None if nothing came by ``until``."""
        content = self._upstream.content
        try:
            chunk = content.read_nowait()
            if not chunk and not content.at_eof():
                deadline = until
                if self._read_timeout:
                    deadline = min(until, self._last_read + self._read_timeout)
                try:
                    chunk = await self._alarm.interrupting(content.readany(), deadline)
                except _Rang:
                    self._check_woken()
                    return None
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._alarm.disarm()
            if buffered := _still_buffered(content):
                return buffered  # the next read raises the failure again, with nothing left
            raise self._failure(exc) from exc
        except RuntimeError as exc:
            self._alarm.disarm()
            # aiohttp's bare RuntimeError("Connection closed.") for a read after the connection
            # went away while an earlier read was cancelled: the upstream closing.
            if str(exc) != "Connection closed.":
                raise
            raise StreamError(_CLOSED, code="upstream_closed") from exc
        if self._closed:
            raise StreamError("the upstream request was closed", code="upstream_closed")
        if not chunk:
            self._alarm.disarm()  # the body's end: no more waits
        self._last_read = self._loop.time()
        return chunk

    def _check_woken(self) -> None:
        """Our timer fired: the upstream is still there and has not been silent too long."""
        if self._closed or self._gone():
            raise StreamError(_CLOSED, code="upstream_closed")
        silent = self._loop.time() + 0.001 - self._last_read
        if self._read_timeout and silent >= self._read_timeout:
            raise _timed_out(self._read_timeout)

    def _gone(self) -> bool:
        """The connection closed before the body ended, without waking a pending read."""
        upstream = self._upstream
        connection = upstream.connection
        return not upstream.content.is_eof() and (
            connection is None or connection.transport is None
        )

    def _failure(self, exc: aiohttp.ClientError | TimeoutError) -> StreamError:
        if isinstance(exc, TimeoutError):
            return _timed_out(self._read_timeout)
        if isinstance(exc, aiohttp.ClientPayloadError):
            # Its text shows a parser status that looks like an HTTP one: say what happened.
            return StreamError(_CLOSED, code="upstream_closed")
        return StreamError(
            f"the upstream failed mid-stream: {exc or type(exc).__name__}", code="upstream_error"
        )


def _still_buffered(content: aiohttp.StreamReader) -> bytes:
    """What the upstream sent before it failed and no read has taken yet. aiohttp's reads raise a
    stored failure before they look at the buffer, so a line that arrived together with the
    break (or before a reader that started late, such as a resumable stream's producer) would be
    lost; its private ``_read_nowait`` is the one way to take it (pinned by a test)."""
    if not content._buffer:
        return b""
    return content._read_nowait(-1)


class _Rang(Exception):
    """The alarm interrupted a wait: time to look at the clock."""


class _Alarm:
    """One timer for many waits. ``asyncio.timeout`` costs a timer per wait (about 7 µs here: a
    busy stream waits once per few lines); this one stays armed for the earliest deadline asked
    and is moved only when a wait needs an earlier one. When it rings it interrupts the wait in
    progress, if any (a wait whose deadline is later just comes back early, and the caller asks
    again). The cancellation is told apart from any other as ``asyncio.timeout`` does it: by the
    task's count of pending cancellation requests."""

    __slots__ = ("_at", "_handle", "_loop", "_rang", "_waiting")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._handle: asyncio.TimerHandle | None = None
        self._at = math.inf
        self._waiting: asyncio.Task[object] | None = None
        self._rang = False

    async def interrupting(self, waited: Awaitable[bytes], until: float) -> bytes:
        """``waited``'s result, or :class:`_Rang` once ``until`` (or an earlier alarm) came."""
        if until < self._at:
            self.disarm()
            self._handle = self._loop.call_at(until, self._ring)
            self._at = until
        task = asyncio.current_task()
        assert task is not None
        self._waiting, self._rang = task, False
        cancelling = task.cancelling()
        try:
            return await waited
        except asyncio.CancelledError:
            if self._rang and task.uncancel() <= cancelling:
                raise _Rang from None
            raise
        finally:
            self._waiting = None

    def disarm(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._at = math.inf

    def _ring(self) -> None:
        self._handle = None
        self._at = math.inf
        if self._waiting is not None:
            self._rang = True
            self._waiting.cancel()


def _timed_out(read_timeout: float | None) -> StreamError:
    return StreamError(f"the upstream sent nothing for {read_timeout} s", code="upstream_timeout")


DOCUMENT_HINT_AFTER: Final = 5.0
"""Seconds a guessed document may stay unfinished before the log says how to fix the route."""


def document_hint(route: str) -> Callable[[], None]:
    """The warning for a route whose upstream body ``framing: auto`` read as one JSON document
    that has not ended after :data:`DOCUMENT_HINT_AFTER` seconds: its client sees only
    heartbeats, and loses everything if the upstream dies."""

    def hint() -> None:
        log.warning(
            "route %s: the upstream's JSON body is still being read as one document after %g s"
            " (its first line is no whole JSON value); if it streams one JSON value per line,"
            " set 'framing: ndjson' on the route",
            route,
            DOCUMENT_HINT_AFTER,
        )

    return hint


class DecodedSource:
    """An upstream body through a decoder: the route's events."""

    __slots__ = (
        "_converter",
        "_decoder",
        "_document_since",
        "_ended",
        "_first_sequence",
        "_hint",
        "_reader",
    )

    headers = SSE_HEADERS

    def __init__(
        self,
        reader: UpstreamReader,
        decoder: BodyDecoder,
        converter: StreamConverter,
        hint: Callable[[], None] | None = None,
    ) -> None:
        self._reader = reader
        self._decoder = decoder
        self._converter = converter
        self._first_sequence = converter.sequence
        self._ended = False
        self._hint = hint  # told once when a guessed document stays unfinished
        self._document_since: float | None = None

    @property
    def events(self) -> int:
        return self._converter.sequence - self._first_sequence

    @property
    def usage(self) -> UsageTally | None:
        return self._converter.usage

    @property
    def ended(self) -> bool:
        return self._ended and self._decoder.failure is None

    def opening(self) -> bytes:
        return self._converter.start()

    async def read(self, until: float) -> bytes | None:
        decoder = self._decoder
        if decoder.failure is not None:
            raise decoder.failure  # after the output that came before it went out
        if self._ended:
            return None
        chunk = await self._reader.next_chunk(until)
        if self._hint is not None and decoder.holding_document:
            self._check_document()
        if chunk is None:
            return b""
        if chunk:
            output = decoder.feed(chunk)
        else:
            self._ended = True
            output = decoder.flush()
        if not output and decoder.failure is not None:
            raise decoder.failure
        return None if self._ended and not output else output

    def _check_document(self) -> None:
        now = asyncio.get_running_loop().time()
        if self._document_since is None:
            self._document_since = now
        elif now - self._document_since >= DOCUMENT_HINT_AFTER and self._hint is not None:
            self._hint()
            self._hint = None

    def heartbeat(self) -> bytes:
        return self._converter.heartbeat()

    def failure(self, reason: StopReason) -> bytes:
        return self._converter.error(reason.code, reason.message)

    def close(self) -> None:
        self._reader.close()


class PassthroughSource:
    """The upstream's NDJSON bytes untouched; a failure is told the NDJSON way (as Ollama does):
    a last line ``{"error": {...}}``."""

    __slots__ = ("_ended", "_last_byte", "_reader", "_secrets", "headers")

    events = 0
    usage = None

    def __init__(
        self, reader: UpstreamReader, content_type: str | None, secrets: Collection[str]
    ) -> None:
        self._reader = reader
        self._secrets = secrets
        self._last_byte = b"\n"
        self._ended = False
        self.headers = {**SSE_HEADERS, "Content-Type": content_type or "application/x-ndjson"}

    @property
    def ended(self) -> bool:
        return self._ended

    def opening(self) -> bytes:
        return b""

    async def read(self, until: float) -> bytes | None:
        if self._ended:
            return None
        chunk = await self._reader.next_chunk(until)
        if chunk is None:
            return b""
        if not chunk:
            self._ended = True
            return None
        self._last_byte = chunk[-1:]
        return chunk

    def heartbeat(self) -> bytes:
        return b""

    def failure(self, reason: StopReason) -> bytes:
        message = redact(reason.message, self._secrets)
        line = orjson.dumps({"error": {"code": reason.code, "message": message}}) + b"\n"
        return line if self._last_byte == b"\n" else b"\n" + line

    def close(self) -> None:
        self._reader.close()
