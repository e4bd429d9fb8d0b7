"""What a stream's request carries through the handler, the sources and the relay, as one small
object instead of six arguments."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from .config import RouteConfig
from .logs import StreamRecord
from .relay import RelayLimits
from .streams import OpenStream

__all__ = ["StreamContext"]


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
