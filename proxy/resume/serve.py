"""The ways into a resumable stream: a reconnect read on from the store, a request that joins an
equal one's stream (``streams: {share: true}``), or a new stream whose upstream a producer takes
over; and reading a stream by its key, which the stream's URL (:mod:`.resources`) does too."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses

from aiohttp import web

from proxy.context import StreamContext, open_upstream_reader, respond
from proxy.convert import StreamConverter
from proxy.decoders import body_decoder
from proxy.errors import HTTPFailure
from proxy.relay import RelayLimits
from proxy.respond import SSE_HEADERS, CountingResponse
from proxy.sources import DecodedSource, UpstreamReader, document_hint
from proxy.state import STREAM_HUBS, STREAMS
from proxy.streams import StopReason
from proxy.upstream_request import UpstreamRequest

from .hub import StreamHub
from .producer import LEASE, Producer
from .reader import ReplaySource, new_stream_key, parse_resume_id, split_events

__all__ = ["open_stream", "read_stream", "replay_or_done", "serve_resumable"]

_OPENER_LEFT = StopReason(
    "cancelled", "the request that opened this shared stream went away before its upstream answered"
)


async def serve_resumable(ctx: StreamContext, outbound: UpstreamRequest) -> web.StreamResponse:
    """A resumable route's request: a reconnect, or the stream that reads ``outbound``."""
    resumed = parse_resume_id(ctx.request.headers.get("Last-Event-ID"))
    if resumed is not None:
        key, after = resumed
        if (response := await replay_or_done(ctx, key, after)) is not None:
            return response
    key, _ = await open_stream(ctx, outbound)
    return await read_stream(ctx, key, 0)


async def replay_or_done(ctx: StreamContext, key: str, after: int) -> web.StreamResponse | None:
    """The stream ``key`` of this route read on after ``after`` (with no upstream request at
    all), ``204`` when that was its last event; None for a stream this route does not have."""
    state = await _hub(ctx).state(key)
    if state is None or state.owner != ctx.route.path:
        return None
    if state.finished and after >= state.last:
        # Already whole: 204 is EventSource's "stop reconnecting", so a client that missed the
        # end event does not start a second (LLM) request.
        return web.Response(status=204)
    return await read_stream(ctx, key, after)


async def open_stream(ctx: StreamContext, outbound: UpstreamRequest) -> tuple[str, bool]:
    """The key of the stream that reads ``outbound``, and whether it was joined: with ``share``
    an open stream that reads an equal request (even one still being opened), else a new one
    whose producer reads the upstream from now on. Our own upstream's failures are raised as
    the route's HTTP errors; joiners read them as the stream's error event."""
    route, hub = ctx.route, _hub(ctx)
    assert route.resume is not None
    store = hub.store
    key = new_stream_key()
    await store.create(key, route.path)
    await store.touch_reader(key, route.resume.linger)
    fingerprint = None
    if route.streams is not None and route.streams.share:
        fingerprint = outbound.fingerprint(route.path)
        # Held before the claim: a joiner that comes while we open waits for our first event.
        await store.hold_producer(key, LEASE)
        winner = await store.claim(fingerprint, key, LEASE)
        if winner != key:
            await store.release_producer(key)  # our empty stream expires unread
            return winner, True
    scope = contextlib.AsyncExitStack()
    try:
        reader, framing, _ = await open_upstream_reader(ctx, outbound, scope)
    except BaseException as exc:
        await scope.aclose()
        if fingerprint is not None:
            await _fail_joiners(ctx, key, fingerprint, exc)
        raise
    _start_producer(ctx, hub, key, reader, framing, scope, fingerprint)
    return key, False


async def read_stream(ctx: StreamContext, key: str, after: int) -> web.StreamResponse:
    """The stream ``key`` to this request's client, from after ``after``."""
    route = ctx.route
    tail = _hub(ctx).tail(key)
    try:
        converter = StreamConverter(route.events.rules, secrets=route.secrets)
        response = CountingResponse(headers=SSE_HEADERS, write_timeout=ctx.write_timeout)
        source = ReplaySource(tail, after, converter, response, ctx.record)
        # The producer keeps the stream's maximum duration; a reader lasts as long as the stream.
        limits = RelayLimits(heartbeat=route.events.heartbeat)
        return await respond(ctx, source, limits, response)
    finally:
        tail.detach()


def _start_producer(
    ctx: StreamContext,
    hub: StreamHub,
    key: str,
    reader: UpstreamReader,
    framing: str,
    upstream_scope: contextlib.AsyncExitStack,
    fingerprint: str | None,
) -> None:
    """A producer reads the upstream (``upstream_scope`` closes it) into the store; it outlives
    this request."""
    route = ctx.route
    assert route.resume is not None
    converter = _store_converter(ctx)
    decoder = body_decoder(framing, converter, route.limits.max_line_bytes)
    source = DecodedSource(reader, decoder, converter, document_hint(route.path))
    limits = RelayLimits(max_duration=route.limits.max_duration)
    producer = Producer(hub, key, source, route.resume.linger, limits, fingerprint)

    async def produce() -> None:
        async with upstream_scope:
            await producer.run()

    ctx.request.app[STREAMS].add_producer(producer.stop, asyncio.create_task(produce()))


async def _fail_joiners(ctx: StreamContext, key: str, fingerprint: str, exc: BaseException) -> None:
    """Our upstream did not open: whoever joined our stream reads why, as its last event, and
    the next equal request opens its own."""
    store = _hub(ctx).store
    reason = StopReason(exc.code, exc.message) if isinstance(exc, HTTPFailure) else _OPENER_LEFT
    error = _store_converter(ctx).error(reason.code, reason.message)
    await store.append(key, split_events(error), finished=True)
    await store.release_producer(key)
    await store.release_claim(fingerprint, key)


def _store_converter(ctx: StreamContext) -> StreamConverter:
    # The readers stamp the ids (<key>-<n>) and write the retry line, so the stored events have
    # neither.
    route = ctx.route
    rules = dataclasses.replace(route.events.rules, id="none", retry=None)
    return StreamConverter(rules, secrets=route.secrets, usage=route.usage_tally())


def _hub(ctx: StreamContext) -> StreamHub:
    return ctx.request.app[STREAM_HUBS][ctx.route.path]
