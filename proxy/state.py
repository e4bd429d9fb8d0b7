"""The app's state and a request's, typed (``web.AppKey`` / ``web.RequestKey``): made by
:func:`proxy.app.create_app` and its cleanup contexts, read by the handlers. Nothing is
module-level and mutable, so any number of apps run in one process."""

from __future__ import annotations

from typing import Final

import aiohttp
from aiohttp import web

from .config import GatewayConfig
from .convert import StreamConverter
from .metrics import GatewayMetrics
from .resume.hub import StreamHub
from .streams import StreamRegistry

__all__ = [
    "CLIENT_SESSION",
    "CONFIG",
    "CONVERTER",
    "HIDDEN_QUERY",
    "METRICS",
    "STREAMS",
    "STREAM_HUBS",
    "hide_query_param",
]

CONFIG: Final = web.AppKey("config", GatewayConfig)
CLIENT_SESSION: Final = web.AppKey("client_session", aiohttp.ClientSession)
STREAMS: Final = web.AppKey("streams", StreamRegistry)
METRICS: Final = web.AppKey("metrics", GatewayMetrics)
STREAM_HUBS: Final = web.AppKey("stream_hubs", dict[str, StreamHub])
"""Each resumable route's streams in this process (its replay store among them), by route path."""

HIDDEN_QUERY: Final = web.RequestKey("hidden_query", frozenset[str])
"""Query parameters that are the gateway's own (auth's, the console's): never sent upstream."""
CONVERTER: Final[web.RequestKey[type[StreamConverter]]] = web.RequestKey("converter")
"""A converter other than the plain one, for this request (the console's tap); such a stream is
not resumable, as the replay store keeps plain events."""


def hide_query_param(request: web.Request, name: str) -> None:
    request[HIDDEN_QUERY] = request.get(HIDDEN_QUERY, frozenset()) | {name}
