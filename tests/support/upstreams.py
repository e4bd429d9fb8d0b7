"""Fake upstreams on aiohttp: a line streamer, and a log of what an upstream got.

Strategy: an upstream is an aiohttp handler, served by the ``start_upstream`` fixture. Two parts
cover what most tests need: :func:`ndjson_handler` streams lines, each written (and flushed) on its
own, with an optional pause after each and a chosen ending (the chunked end, a close, an abort),
and :func:`recorded` wraps any handler so that every request it gets is appended to a list as a
:class:`Seen` before the handler runs, and marked ``closed`` when the gateway went away before the
answer was over. "Refused before the upstream", "no reconnect" and "the upstream request was
closed" are then things the upstream itself reports. The fakes of real services (``services``)
are built from these two parts; byte-level faults that aiohttp cannot write live in
``raw_upstream``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

__all__ = ["Handler", "Seen", "json_body", "ndjson_handler", "recorded", "stamped_handler"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Ending = Literal["eof", "close", "abort"]


@dataclass
class Seen:
    """One request as the upstream got it."""

    method: str
    raw_path: str
    """The path exactly as it arrived, percent-escapes kept."""
    raw_query: str
    headers: CIMultiDict[str]
    raw_body: bytes
    at: float
    """``time.monotonic()`` when the whole request had arrived."""
    closed: bool = False
    """The gateway closed the connection (or the handler was cancelled) before the answer ended."""

    @classmethod
    async def of(cls, request: web.Request) -> Seen:
        raw_body = await request.read()  # cached: the handler may read it again
        return cls(
            request.method,
            request.rel_url.raw_path,
            request.rel_url.raw_query_string,
            CIMultiDict(request.headers),
            raw_body,
            time.monotonic(),
        )

    @property
    def path(self) -> str:
        """The path, percent-escapes decoded (``request.path``)."""
        return self._url.path

    @property
    def query(self) -> list[tuple[str, str]]:
        """The query's pairs, decoded, in order."""
        return list(self._url.query.items())

    @property
    def body(self) -> Any:
        """The body parsed as JSON, or None for an empty one."""
        return orjson.loads(self.raw_body) if self.raw_body else None

    @property
    def _url(self) -> URL:
        return URL.build(path=self.raw_path, query_string=self.raw_query, encoded=True)


def recorded(handler: Handler, seen: list[Seen]) -> Handler:
    """``handler``, with every request it gets appended to ``seen`` first."""

    async def record(request: web.Request) -> web.StreamResponse:
        request_seen = await Seen.of(request)
        seen.append(request_seen)
        try:
            return await handler(request)
        except (asyncio.CancelledError, ConnectionResetError):
            request_seen.closed = True
            raise

    return record


async def json_body(request: web.Request) -> Any:
    """The request's body parsed as JSON, or None for an empty one."""
    raw = await request.read()
    return orjson.loads(raw) if raw else None


async def _write_eof(request: web.Request, response: web.StreamResponse) -> None:
    await response.write_eof()


async def _close(request: web.Request, response: web.StreamResponse) -> None:
    # Unlike abort(), close() sends what is still buffered first; the chunked body never ends.
    assert request.transport is not None
    request.transport.close()


async def _abort(request: web.Request, response: web.StreamResponse) -> None:
    await asyncio.sleep(0.05)  # let the written lines reach the gateway first
    assert request.transport is not None
    request.transport.abort()  # the chunked body is never terminated


ENDINGS: dict[Ending, Callable[[web.Request, web.StreamResponse], Awaitable[None]]] = {
    "eof": _write_eof,
    "close": _close,
    "abort": _abort,
}


def ndjson_handler(
    lines: Sequence[bytes],
    content_type: str = "application/x-ndjson",
    *,
    pause: float | Sequence[float] = 0,
    end: Ending = "eof",
    first_after: float = 0,
) -> Handler:
    """An upstream that streams ``lines`` (each written and drained on its own, with ``pause``
    seconds after each, or ``pause[i]`` after line ``i``, so they travel as separate TCP
    segments) and then ends the body: with its chunked end (``"eof"``), by closing the connection
    after what was written (``"close"``), or by aborting it a moment later (``"abort"``), the way
    a server that died mid-body does. ``first_after`` seconds pass before the first line (a
    model's time to first token)."""
    pauses = [pause] * len(lines) if isinstance(pause, int | float) else list(pause)
    assert len(pauses) == len(lines), "one pause per line"

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": content_type})
        await response.prepare(request)
        if first_after:
            await asyncio.sleep(first_after)
        for line, after in zip(lines, pauses, strict=True):
            await response.write(line)
            if after:
                await asyncio.sleep(after)
        await ENDINGS[end](request, response)
        return response

    return handler


def stamped_handler(interval: float, count: int) -> Handler:
    """An upstream that writes ``count`` lines ``{"n": 1, "sent_ms": ...}``, one every
    ``interval`` seconds, each stamped with the wall-clock time (``time.time()`` in ms, the clock
    a page's ``Date.now()`` reads) at which it was written; then ends the body. A client that
    leaves ends it early."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        try:
            for n in range(1, count + 1):
                await response.write(orjson.dumps({"n": n, "sent_ms": time.time() * 1000}) + b"\n")
                await asyncio.sleep(interval)
        except ConnectionResetError:  # the gateway closed the request: the client left
            return response
        await response.write_eof()
        return response

    return handler
