"""What a stream's request carries through the handler, the sources and the relay, as one small
object instead of six arguments, and :func:`respond`: a source relayed to that request's client."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from .config import RouteConfig
from .logs import StreamRecord
from .relay import RelayLimits, Source, relay
from .respond import CountingResponse
from .streams import OpenStream

__all__ = ["StreamContext", "respond"]


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


async def respond(ctx: StreamContext, source: Source, limits: RelayLimits) -> web.StreamResponse:
    """``source`` relayed to the client of ``ctx``: the response it gets."""
    # Before any byte: a stream stopped while its upstream was opening is refused (503).
    ctx.stream.on_stop(source.close)
    response = CountingResponse(headers=source.headers, write_timeout=ctx.write_timeout)
    await response.prepare(ctx.request)
    await relay(source, response, ctx.stream, limits, ctx.record)
    return response
