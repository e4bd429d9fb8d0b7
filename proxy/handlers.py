"""aiohttp glue: a route's request in, the upstream's stream out.

Strategy: everything that can be decided before a byte goes to the client is decided first (the
client's body, the upstream's status and Content-Type), so those failures are plain HTTP errors
with a JSON body. Then a source is chosen and handed to the relay (:mod:`proxy.relay`), which
owns the response from its first byte: the route's events, or NDJSON passed through to a client
that asked for it; a resumable route's request goes to :mod:`proxy.resume.serve`.

A client that goes away cancels the handler (the server runs with ``handler_cancellation``) or
fails the next write; either way the upstream response is closed on the way out of
:func:`~proxy.upstream.open_upstream`.
"""

from __future__ import annotations

import contextlib

from aiohttp import web
from aiohttp.typedefs import Handler

from .config import RouteConfig
from .context import StreamContext, admitted, open_upstream_reader, respond
from .convert import StreamConverter
from .decoders import body_decoder
from .inbound import client_request
from .relay import RelayLimits
from .resume.serve import serve_resumable
from .sources import DecodedSource, PassthroughSource, document_hint
from .state import CONVERTER
from .upstream import client_wants_ndjson
from .upstream_request import build_upstream_request

__all__ = ["stream_handler"]


def stream_handler(route: RouteConfig) -> Handler:
    """The request handler for one configured route."""
    return admitted(route, _serve)


async def _serve(ctx: StreamContext) -> web.StreamResponse:
    request, route = ctx.request, ctx.route
    wants_ndjson = client_wants_ndjson(request.headers.get("Accept", ""))
    converter_class = request.get(CONVERTER, StreamConverter)
    outbound = build_upstream_request(route, await client_request(request, route))
    if route.resume is not None and CONVERTER not in request and not wants_ndjson:
        return await serve_resumable(ctx, outbound)
    async with contextlib.AsyncExitStack() as upstream_scope:
        reader, framing, content_type = await open_upstream_reader(ctx, outbound, upstream_scope)
        if framing == "ndjson" and wants_ndjson:
            source = PassthroughSource(reader, content_type, route.secrets)
            return await respond(ctx, source, RelayLimits(max_duration=route.limits.max_duration))
        converter = converter_class(
            route.events.rules,
            last_event_id=request.headers.get("Last-Event-ID"),
            secrets=route.secrets,
            usage=route.usage_tally(),
        )
        decoder = body_decoder(framing, converter, route.limits.max_line_bytes)
        return await respond(
            ctx, DecodedSource(reader, decoder, converter, document_hint(route.path)), ctx.limits
        )
