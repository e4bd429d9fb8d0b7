"""Each request's place in a trace (aiohttp glue over :mod:`proxy.tracecontext`): the
``traceparent``/``tracestate`` its upstream request carries and, when OpenTelemetry is set up,
its span (:mod:`proxy.otel`).

Strategy: one middleware, outermost, so that what it reads at the end is the access log's
finished record (status, events, end reason). It decides the outgoing trace headers before the
handler runs and leaves them on the request (:data:`TRACE_HEADERS`), where
:func:`proxy.inbound.client_request` puts them into the pure request builder's input. The spans'
module (:mod:`proxy.otel`, OpenTelemetry) is imported when an app is made, if it can be: without
it, the ids come from :mod:`proxy.tracecontext`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from .tracecontext import TRACEPARENT, TRACESTATE, TraceContext, incoming_context, next_hop

__all__ = ["TRACE_HEADERS", "route_template", "trace_requests"]

TRACE_HEADERS: Final[web.RequestKey[Mapping[str, str]]] = web.RequestKey("trace_headers")
"""The trace headers for this request's upstream request (absent: none)."""


def trace_requests(skip: frozenset[str], propagate: bool) -> Middleware:
    """The middleware for every path but those in ``skip`` (the ones the access log skips too);
    ``propagate`` is ``server.trace_propagation``."""
    try:
        from .otel import RequestSpans  # the optional dependency, only where it is used
    except ImportError:
        spans = None
    else:
        spans = RequestSpans(propagate)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in skip:
            return await handler(request)
        incoming = client_context(request)
        if spans is not None:
            return await spans.serve(request, handler, incoming)
        if propagate:
            request[TRACE_HEADERS] = next_hop(incoming).headers()
        return await handler(request)

    return middleware


def client_context(request: web.Request) -> TraceContext | None:
    headers = request.headers
    return incoming_context(headers.getall(TRACEPARENT, []), headers.getall(TRACESTATE, []))


def route_template(request: web.Request) -> str | None:
    """The matched route's path as configured (``/v1/chat``, ``/v1/chat/streams/{_stream_id}``),
    never the request's own: a stream's URL holds its key, which is a capability."""
    route = request.match_info.route
    return None if route.resource is None else route.resource.canonical
