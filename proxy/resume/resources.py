"""Streams as resources (``streams`` on a resumable route): ``POST {path}/streams`` opens the
upstream request and answers ``201`` with the stream's URL; ``GET`` on that URL reads the stream
(``EventSource`` can, whatever the body was), ``DELETE`` stops it wherever its producer runs.

The URL holds the stream's key, 128 random bits: it is a capability, like a pre-signed URL, so
the access log shows only its first characters. A key is found only under the route that made
it; an unknown, expired or foreign one is ``404`` ``stream_not_found`` before anything else.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler

from proxy.config import RouteConfig
from proxy.context import StreamContext, admitted
from proxy.errors import HTTPFailure
from proxy.inbound import client_request
from proxy.logs import STREAM_RECORD
from proxy.state import STREAM_HUBS
from proxy.upstream_request import build_upstream_request

from .reader import is_stream_key, parse_resume_id
from .serve import open_stream, replay_or_done

__all__ = ["STREAM_ID", "hide_stream_key", "stream_resources"]

STREAM_ID: Final = "_stream_id"
"""The path variable of a stream's URL (a name no route template uses)."""
_SHOWN: Final = 4
"""Characters of a key the access log shows."""


class StreamNotFound(HTTPFailure):
    def __init__(self) -> None:
        super().__init__(
            404, "stream_not_found", "no such stream on this route (unknown, expired or stopped)"
        )


def stream_resources(route: RouteConfig) -> list[tuple[str, str, Handler]]:
    """``(method, path, handler)`` of the route's stream endpoints."""
    collection = f"{route.path.rstrip('/')}/streams"
    item = f"{collection}/{{{STREAM_ID}}}"
    return [
        ("POST", collection, admitted(route, _create)),
        ("GET", item, admitted(route, _read)),
        ("DELETE", item, _stop_handler(route)),
    ]


async def _create(ctx: StreamContext) -> web.StreamResponse:
    request = ctx.request
    outbound = build_upstream_request(ctx.route, await client_request(request, ctx.route))
    key, _ = await open_stream(ctx, outbound)
    location = f"{request.rel_url.raw_path}/{key}"
    ctx.record.ended = "created"
    headers = {"Location": location}
    if ctx.route.cors is not None:
        headers["Access-Control-Expose-Headers"] = "Location"  # a cross-origin page reads it
    return web.json_response({"id": key, "url": location}, status=201, headers=headers)


async def _read(ctx: StreamContext) -> web.StreamResponse:
    request = ctx.request
    key = _key(request)
    after = 0
    resumed = parse_resume_id(request.headers.get("Last-Event-ID"))
    if resumed is not None and resumed[0] == key:
        after = resumed[1]
    response = await replay_or_done(ctx, key, after)
    if response is None:
        raise StreamNotFound
    return response


def _stop_handler(route: RouteConfig) -> Handler:
    async def stop(request: web.Request) -> web.StreamResponse:
        key = _key(request)
        hub = request.app[STREAM_HUBS][route.path]
        state = await hub.store.state(key)
        if state is None or state.owner != route.path or not await hub.cancel(key):
            raise StreamNotFound
        return web.Response(status=204)

    return stop


def hide_stream_key(handler: Handler) -> Handler:
    """Outermost on a stream's URL: the access log keeps only the key's first characters,
    whatever answers (a 401 from auth, a 403 from CORS, a 503 while draining)."""

    async def hidden(request: web.Request) -> web.StreamResponse:
        key = request.match_info.get(STREAM_ID)
        record = request.get(STREAM_RECORD)
        if key is not None and record is not None:
            record.path = _shown(request.rel_url.raw_path.rsplit("/", 1)[0], key)
        return await handler(request)

    return hidden


def _key(request: web.Request) -> str:
    key = request.match_info[STREAM_ID]
    if not is_stream_key(key):
        raise StreamNotFound
    return key


def _shown(collection: str, key: str) -> str:
    return f"{collection}/{key[:_SHOWN]}…"
