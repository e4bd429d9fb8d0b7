"""The handler's way into a resumable stream: a reconnect read on from the store, or a new stream
whose upstream a producer takes over."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses

from aiohttp import web

from proxy.context import StreamContext, respond
from proxy.convert import StreamConverter
from proxy.decoders import body_decoder
from proxy.relay import RelayLimits
from proxy.sources import DecodedSource, UpstreamReader
from proxy.state import REPLAY_STORES, STREAMS

from .producer import Producer
from .reader import ReplaySource, new_stream_key, parse_resume_id

__all__ = ["resume_stream", "start_stream"]


async def resume_stream(ctx: StreamContext) -> web.StreamResponse | None:
    """The answer to a reconnect whose ``Last-Event-ID`` names a stream this store keeps (with no
    upstream request at all), else None."""
    resumed = parse_resume_id(ctx.request.headers.get("Last-Event-ID"))
    if resumed is None:
        return None
    key, after = resumed
    store = ctx.request.app[REPLAY_STORES][ctx.route.path]
    batch = await store.read(key, after, 0)
    if batch is None:
        return None
    if batch.finished and after >= batch.last:
        # Already whole: 204 is EventSource's "stop reconnecting", so a client that missed the
        # end event does not start a second (LLM) request.
        return web.Response(status=204)
    return await _read(ctx, key, after)


async def start_stream(
    ctx: StreamContext,
    reader: UpstreamReader,
    framing: str,
    upstream_scope: contextlib.AsyncExitStack,
) -> web.StreamResponse:
    """A new resumable stream: a producer reads the upstream (``upstream_scope`` closes it) into
    the store, and this client reads the store from the first event."""
    route = ctx.route
    assert route.resume is not None
    store = ctx.request.app[REPLAY_STORES][route.path]
    key = new_stream_key()
    await store.create(key)
    await store.touch_reader(key, route.resume.linger)
    # The readers stamp the ids (<key>-<n>) and write the retry line, so the stored events have
    # neither.
    rules = dataclasses.replace(route.events.rules, id="none", retry=None)
    converter = StreamConverter(rules, secrets=route.secrets)
    decoder = body_decoder(framing, converter, route.limits.max_line_bytes)
    source = DecodedSource(reader, decoder, converter)
    limits = RelayLimits(max_duration=route.limits.max_duration)
    producer = Producer(store, key, source, route.resume.linger, limits)

    async def produce() -> None:
        async with upstream_scope:
            await producer.run()

    ctx.request.app[STREAMS].add_producer(producer.stop, asyncio.create_task(produce()))
    return await _read(ctx, key, 0)


async def _read(ctx: StreamContext, key: str, after: int) -> web.StreamResponse:
    route = ctx.route
    assert route.resume is not None
    store = ctx.request.app[REPLAY_STORES][route.path]
    converter = StreamConverter(route.events.rules, secrets=route.secrets)
    source = ReplaySource(store, key, after, converter, route.resume.linger)
    # The producer keeps the stream's maximum duration; a reader lasts as long as the stream.
    return await respond(ctx, source, RelayLimits(heartbeat=route.events.heartbeat))
