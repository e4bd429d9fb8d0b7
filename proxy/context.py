"""What a stream's request carries through the handler, the sources and the relay, as one small
object instead of six arguments; :func:`admitted`, which makes it for a handler; and the two steps
every way of serving shares: :func:`open_upstream_reader` and :func:`respond` (a source relayed to
the request's client)."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler

from .config import RouteConfig
from .logs import STREAM_RECORD, StreamRecord
from .relay import RelayLimits, Source, relay
from .respond import CountingResponse
from .sources import UpstreamReader
from .state import CLIENT_SESSION, CONFIG, STREAMS
from .streams import OpenStream
from .upstream import choose_framing, open_upstream
from .upstream_request import UpstreamRequest

__all__ = ["StreamContext", "admitted", "open_upstream_reader", "respond"]


@dataclass(frozen=True, slots=True)
class StreamContext:
    request: web.Request
    route: RouteConfig
    stream: OpenStream
    """The admitted stream: its stop signal."""
    record: StreamRecord
    """The access log's record of this request, filled by the relay."""
    write_timeout: float | None

    @property
    def limits(self) -> RelayLimits:
        """The route's limits for a stream read from its upstream."""
        route = self.route
        return RelayLimits(route.events.heartbeat, route.limits.max_duration)


def admitted(
    route: RouteConfig, serve: Callable[[StreamContext], Awaitable[web.StreamResponse]]
) -> Handler:
    """A handler for ``route`` that admits the request as a stream (503 past the limits or while
    draining), serves it, and releases it however it ends."""

    async def handler(request: web.Request) -> web.StreamResponse:
        record = request[STREAM_RECORD]  # the access log's middleware made it for every route
        record.route = route.path
        registry = request.app[STREAMS]
        stream = registry.admit(route.path, route.limits.max_streams, request.transport)
        write_timeout = request.app[CONFIG].server.write_timeout
        try:
            return await serve(StreamContext(request, route, stream, record, write_timeout))
        finally:
            registry.release(stream)

    return handler


async def open_upstream_reader(
    ctx: StreamContext, outbound: UpstreamRequest, scope: contextlib.AsyncExitStack
) -> tuple[UpstreamReader, str, str | None]:
    """The upstream opened (``scope`` closes it) once its status is good: its reader, framing and
    Content-Type. Failures are the route's JSON errors."""
    route = ctx.route
    session = ctx.request.app[CLIENT_SESSION]
    upstream = await scope.enter_async_context(
        open_upstream(session, outbound, route.timeouts, route.secrets)
    )
    ctx.record.upstream_status = upstream.status
    content_type = upstream.headers.get("Content-Type")
    framing = choose_framing(route.framing, content_type)
    return UpstreamReader(upstream, route.timeouts.read), framing, content_type


async def respond(
    ctx: StreamContext,
    source: Source,
    limits: RelayLimits,
    response: CountingResponse | None = None,
) -> web.StreamResponse:
    """``source`` relayed to the client of ``ctx``: the response it gets (``response``, when the
    source must know it beforehand: a shared stream's reader, which the tail writes to)."""
    # Before any byte: a stream stopped while its upstream was opening is refused (503).
    ctx.stream.on_stop(source.close)
    if response is None:
        response = CountingResponse(headers=source.headers, write_timeout=ctx.write_timeout)
    await response.prepare(ctx.request)
    await relay(source, response, ctx.stream, limits, ctx.record)
    return response
