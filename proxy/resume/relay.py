"""Resumable streams: one producer reads the upstream into the replay store, and each client
request is a reader of the store.

Strategy: a route with ``resume`` decouples the upstream from the client. The first request opens
the upstream (so its failures are still plain HTTP errors) and hands it to a producer task that
outlives the request: it converts each chunk into events and appends them to the store, then the
end (or error) event, marked finished. Events are stored without ids; a reader stamps each with
``id: <stream key>-<n>`` as it writes, so a browser's ``Last-Event-ID`` names both the stream and
the place in it. A reconnect with such an id reads on from the store (in Redis: on any replica)
without a second upstream request; one whose id is the last of a finished stream gets
``204 No Content``, which tells an ``EventSource`` to stop reconnecting.

A client that goes away no longer stops the upstream at once: the producer keeps reading while
some reader has touched the stream within ``resume.linger`` seconds, then closes the upstream
request and finishes the stream with an ``abandoned`` error event.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import time
from typing import Final

import aiohttp
from aiohttp import web

from proxy.config import RouteConfig
from proxy.convert import BodyDecoder, StreamConverter
from proxy.errors import StreamError
from proxy.logs import StreamRecord
from proxy.respond import (
    SSE_HEADERS,
    ClientGone,
    CountingResponse,
    read_chunk,
    send,
    stream_failure,
)
from proxy.streams import OpenStream

from .store import ReplayStore

__all__ = ["Producer", "new_stream_key", "parse_resume_id", "read_stream"]

_RESUME_ID: Final = re.compile(r"([A-Za-z0-9_-]{16})-([0-9]{1,18})")
_READ_WAIT: Final = 1.0
"""Longest wait on the store per loop: how soon a reader notices a drain or a lost producer."""
_PRODUCER_LEASE: Final = 5.0


def new_stream_key() -> str:
    return secrets.token_urlsafe(12)  # 16 URL-safe characters, 96 random bits


def parse_resume_id(last_event_id: str | None) -> tuple[str, int] | None:
    """``(stream key, n)`` from a ``Last-Event-ID`` this gateway gave, else None."""
    match = _RESUME_ID.fullmatch(last_event_id or "")
    return (match.group(1), int(match.group(2))) if match else None


def split_events(output: bytes) -> list[bytes]:
    """A converter's output as its events, each without the blank line that ends it (an encoded
    event never holds a blank line inside: every line of it starts with a field name)."""
    return output.split(b"\n\n")[:-1]


class Producer:
    """Reads one upstream response into the store until EOF, an error, a drain or no readers."""

    def __init__(
        self,
        store: ReplayStore,
        key: str,
        route: RouteConfig,
        upstream: aiohttp.ClientResponse,
        decoder: BodyDecoder,
        converter: StreamConverter,
    ) -> None:
        self._store = store
        self._key = key
        self._route = route
        self._upstream = upstream
        self._decoder = decoder
        self._converter = converter
        self._stopped_because: tuple[str, str] | None = None
        self._last_read = time.monotonic()

    async def run(self) -> None:
        store, key = self._store, self._key
        pump = asyncio.create_task(self._pump())
        try:
            while not pump.done():
                await store.hold_producer(key, _PRODUCER_LEASE)
                await asyncio.wait({pump}, timeout=_PRODUCER_LEASE / 5)
                read_timeout = self._route.timeouts.read
                silent = time.monotonic() - self._last_read
                if not pump.done() and read_timeout and silent >= read_timeout:
                    self.stop("upstream_timeout", f"the upstream sent nothing for {read_timeout} s")
                elif not pump.done() and not await store.has_reader(key):
                    linger = self._route.resume.linger if self._route.resume else 0
                    self.stop(
                        "abandoned",
                        f"no client read this stream for {linger} s; the upstream request was "
                        "closed",
                    )
            await pump
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
            await store.release_producer(key)

    def stop(self, code: str, message: str) -> None:
        """Close the upstream; the stream is finished with this error event."""
        if self._stopped_because is None:
            self._stopped_because = (code, message)
            self._upstream.close()

    async def _pump(self) -> None:
        store, key, converter, decoder = self._store, self._key, self._converter, self._decoder
        content = self._upstream.content
        max_duration = self._route.limits.max_duration
        deadline = None
        try:
            async with asyncio.timeout(max_duration) as deadline:
                while chunk := await read_chunk(content):
                    self._last_read = time.monotonic()
                    events = split_events(decoder.feed(chunk))
                    if events:
                        await store.append(key, events)
            if self._stopped_because is not None:
                raise aiohttp.ClientConnectionError("stopped")
            ending = decoder.finish() + converter.end()
            await store.append(key, split_events(ending), finished=True)
        except (StreamError, aiohttp.ClientError, TimeoutError) as exc:
            if self._stopped_because is not None:
                code, message = self._stopped_because
            else:
                out_of_time = deadline is not None and deadline.expired()
                code, message = stream_failure(
                    exc, self._route, draining=False, out_of_time=out_of_time
                )
            output = exc.output if isinstance(exc, StreamError) else b""
            error = output + converter.error(code, message)
            await store.append(key, split_events(error), finished=True)


async def read_stream(
    request: web.Request,
    store: ReplayStore,
    key: str,
    after: int,
    route: RouteConfig,
    stream: OpenStream,
    record: StreamRecord,
    write_timeout: float | None,
) -> web.StreamResponse:
    """The client's response: the stream's events after ``after`` from the store, then whatever
    comes, until its last event."""
    assert route.resume is not None
    linger = route.resume.linger
    # For the retry line, heartbeats and our own error events.
    converter = StreamConverter(route.events, secrets=route.secrets)
    response = CountingResponse(headers=SSE_HEADERS, write_timeout=write_timeout)
    await response.prepare(request)
    loop = asyncio.get_running_loop()
    heartbeat = route.events.heartbeat
    last_write = loop.time()
    sent = 0
    outcome = "client_gone"
    prefix = key.encode()
    try:
        await send(response, converter.start())
        while True:
            if stream.stopping:
                outcome = "shutting_down"
                await send(response, converter.error("shutting_down", _SHUTTING_DOWN))
                break
            await store.touch_reader(key, max(linger, _READ_WAIT * 2))
            batch = await store.read(key, after, _READ_WAIT)
            if batch is None:
                outcome = "stream_expired"
                await send(response, converter.error(outcome, "this stream is no longer kept"))
                break
            if batch.events:
                first = batch.events[0][0]
                gap = b""
                if first > after + 1:
                    gap = converter.error(
                        "replay_gap",
                        f"events {after + 1} to {first - 1} are no longer kept (resume.max_events)",
                    )
                await send(
                    response,
                    gap
                    + b"".join(
                        [b"id: %s-%d\n%s\n\n" % (prefix, n, event) for n, event in batch.events]
                    ),
                )
                if sent == 0:
                    record.first_event_now()
                sent += len(batch.events)
                after = batch.events[-1][0]
                last_write = loop.time()
            if batch.finished and after >= batch.last:
                outcome = "eof"
                break
            if not batch.events:
                if not batch.producing and not batch.finished:
                    outcome = "stream_lost"
                    await send(response, converter.error(outcome, _LOST))
                    break
                if heartbeat and loop.time() - last_write >= heartbeat:
                    await send(response, converter.heartbeat())
                    last_write = loop.time()
    except ClientGone as gone:
        outcome = gone.reason
    finally:
        record.events = sent
        record.bytes = response.sent
        record.ended = outcome
    return response


_SHUTTING_DOWN: Final = "this gateway is shutting down; retry, and another replica will answer"
_LOST: Final = (
    "the process reading this stream's upstream is gone; the events kept so far were sent"
)
