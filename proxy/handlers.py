"""aiohttp glue: a route's request in, the upstream's stream out.

Strategy: everything that can be decided before a byte goes to the client is decided first (the
client's body, the upstream's status and Content-Type), so those failures are plain HTTP errors
with a JSON body. Then a source is chosen and handed to the relay (:mod:`proxy.relay`), which
owns the response from its first byte: the route's events, NDJSON passed through to a client
that asked for it, or a resumable stream's reader (:mod:`proxy.resume.serve`).

A client that goes away cancels the handler (the server runs with ``handler_cancellation``) or
fails the next write; either way the upstream response is closed on the way out of
:func:`~proxy.upstream.open_upstream`.
"""

from __future__ import annotations

import contextlib
import functools

from aiohttp import web
from aiohttp.typedefs import Handler

from .config import RouteConfig
from .context import StreamContext, respond
from .convert import StreamConverter
from .decoders import body_decoder
from .errors import BadRequest
from .logs import STREAM_RECORD
from .relay import RelayLimits
from .resume.serve import resume_stream, start_stream
from .sources import DecodedSource, PassthroughSource, UpstreamReader
from .state import CLIENT_SESSION, CONFIG, CONVERTER, HIDDEN_QUERY, STREAMS
from .upstream import choose_framing, client_wants_ndjson, open_upstream
from .upstream_request import ClientRequest, build_upstream_request

__all__ = ["stream_handler"]


def stream_handler(route: RouteConfig) -> Handler:
    """The request handler for one configured route."""
    return functools.partial(_stream, route)


async def _stream(route: RouteConfig, request: web.Request) -> web.StreamResponse:
    record = request[STREAM_RECORD]  # the access log's middleware made it for every route
    record.route = route.path
    registry = request.app[STREAMS]
    stream = registry.admit(route.path, route.limits.max_streams, request.transport)
    write_timeout = request.app[CONFIG].server.write_timeout
    try:
        return await _serve(StreamContext(request, route, stream, record, write_timeout))
    finally:
        registry.release(stream)


async def _serve(ctx: StreamContext) -> web.StreamResponse:
    request, route = ctx.request, ctx.route
    wants_ndjson = client_wants_ndjson(request.headers.get("Accept", ""))
    converter_class = request.get(CONVERTER, StreamConverter)
    resumable = route.resume is not None and CONVERTER not in request and not wants_ndjson
    outbound = build_upstream_request(route, await _client_request(request, route))
    if resumable and (resumed := await resume_stream(ctx)) is not None:
        return resumed
    session = request.app[CLIENT_SESSION]
    async with contextlib.AsyncExitStack() as upstream_scope:
        upstream = await upstream_scope.enter_async_context(
            open_upstream(session, outbound, route.timeouts, route.secrets)
        )
        ctx.record.upstream_status = upstream.status
        content_type = upstream.headers.get("Content-Type")
        framing = choose_framing(route.framing, content_type)
        reader = UpstreamReader(upstream, route.timeouts.read)
        if framing == "ndjson" and wants_ndjson:
            source = PassthroughSource(reader, content_type, route.secrets)
            return await respond(ctx, source, RelayLimits(max_duration=route.limits.max_duration))
        if resumable:
            # From here the upstream belongs to the producer, which outlives this request.
            return await start_stream(ctx, reader, framing, upstream_scope.pop_all())
        converter = converter_class(
            route.events.rules,
            last_event_id=request.headers.get("Last-Event-ID"),
            secrets=route.secrets,
        )
        decoder = body_decoder(framing, converter, route.limits.max_line_bytes)
        return await respond(ctx, DecodedSource(reader, decoder, converter), ctx.limits)


async def _client_request(request: web.Request, route: RouteConfig) -> ClientRequest:
    body = b""
    if request.method != "GET":
        body = await _read_limited(request, route.limits.max_body_bytes)
    return ClientRequest(
        method=request.method,
        query=request.query,
        headers=request.headers,
        body=body,
        path_variables=request.match_info,
        self_origin=_self_origin(request),
        hidden_query=request.get(HIDDEN_QUERY, frozenset()),
    )


async def _read_limited(request: web.Request, limit: int) -> bytes:
    too_large = BadRequest(
        f"the request body is larger than {limit} bytes", code="body_too_large", status=413
    )
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    body = bytearray()
    while chunk := await request.content.read(64 * 1024):
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


def _self_origin(request: web.Request) -> str:
    """This server as the client reached it: the socket's own address, never the Host header,
    which a client controls."""
    transport = request.transport
    sockname = transport.get_extra_info("sockname") if transport is not None else None
    if not isinstance(sockname, tuple):
        return "http://127.0.0.1"
    host, port = sockname[0], sockname[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
