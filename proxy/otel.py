"""OpenTelemetry, when it is installed (the ``otel`` extra): a SERVER span per request, and
the SDK set up from the standard ``OTEL_*`` variables at start-up.

Strategy: only :mod:`proxy.tracing` (the middleware) and :mod:`proxy.cli` import this module, and
only in a ``try`` for ``ImportError``, so the gateway runs the same without it. The span joins the
client's trace through OpenTelemetry's own W3C propagator, fed the traceparent and tracestate
that :mod:`proxy.tracecontext` accepted (the one set of rules for both ways), and the upstream
gets the span's context. With the API but no SDK (no provider set up) spans are no-ops that make
no ids of their own; then the ids come from :mod:`proxy.tracecontext`, so the upstream still sees
this hop. ``OTEL_PROPAGATORS`` is not read: the gateway speaks W3C Trace Context only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

from aiohttp import web
from aiohttp.typedefs import Handler
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .logs import STREAM_RECORD, StreamRecord
from .tracecontext import TraceContext, next_hop
from .tracing import TRACE_HEADERS, route_template

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider

__all__ = ["NORMAL_ENDS", "RequestSpans", "sdk_from_environment"]

NORMAL_ENDS: Final = frozenset({"eof", "client_gone", "created"})
"""How a request ends well: the upstream's end, the client leaving, a stream resource made."""
_W3C: Final = TraceContextTextMapPropagator()
DEFAULT_SERVICE_NAME: Final = "ndjson-sse-proxy"


class RequestSpans:
    def __init__(self, propagate: bool) -> None:
        # A proxy until a provider is set: spans go to whichever one is set later.
        self._tracer = trace.get_tracer("proxy")
        self._propagate = propagate

    async def serve(
        self, request: web.Request, handler: Handler, incoming: TraceContext | None
    ) -> web.StreamResponse:
        parent = _W3C.extract(incoming.headers() if incoming is not None else {})
        route = route_template(request)
        attributes = {"http.request.method": request.method}
        if route is not None:
            attributes["http.route"] = route
        span = self._tracer.start_span(
            f"{request.method} {route}" if route else request.method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes=attributes,
        )
        if self._propagate:
            request[TRACE_HEADERS] = _outgoing(span, parent, incoming)
        try:
            with trace.use_span(span, set_status_on_exception=False):
                return await handler(request)
        finally:
            _finish(span, request.get(STREAM_RECORD))


def _outgoing(span: Span, parent: Context, incoming: TraceContext | None) -> dict[str, str]:
    """The span's context for the upstream; a no-op span (no SDK) has none of its own."""
    context = span.get_span_context()
    from_parent = trace.get_current_span(parent).get_span_context()
    if not context.is_valid or context.span_id == from_parent.span_id:
        return next_hop(incoming).headers()
    carrier: dict[str, str] = {}
    _W3C.inject(carrier, trace.set_span_in_context(span))
    return carrier


def _finish(span: Span, record: StreamRecord | None) -> None:
    if record is None:  # never: the access log records every path this middleware does
        span.end()
        return
    status, ended = record.status, record.ended
    if not status:  # the handler raised what no layer answers: aiohttp's own 500
        status, ended = 500, "internal_error"
    span.set_attributes(
        {"http.response.status_code": status, "proxy.events": record.events, "proxy.ended": ended}
    )
    if record.upstream_status is not None:
        span.set_attribute("proxy.upstream_status", record.upstream_status)
    if record.first_event_ms is not None:
        span.set_attribute("proxy.first_event_ms", record.first_event_ms)
    # OpenTelemetry's HTTP conventions: a server span's 4xx is the client's error, not this
    # server's; a 5xx is, and so is a stream that started well and ended in an error event.
    if status >= 500 or (status < 400 and ended not in NORMAL_ENDS):
        span.set_status(Status(StatusCode.ERROR, ended))
    span.end()


def sdk_from_environment() -> contextlib.AbstractContextManager[None]:
    """A tracer provider, set up for the process, that exports spans by OTLP/HTTP (the exporter
    reads its endpoint, headers and timeout from the ``OTEL_EXPORTER_OTLP_*`` variables), unless
    one is set already (``opentelemetry-instrument`` sets its own); the context it returns flushes
    and shuts it down on the way out, so the last batch is not lost. ImportError without the SDK
    or the exporter (the ``otel`` extra)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return contextlib.nullcontext()
    # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; our name only
    # replaces the SDK's "unknown_service".
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return _shut_down_at_exit(provider)


@contextlib.contextmanager
def _shut_down_at_exit(provider: SdkTracerProvider) -> Iterator[None]:
    try:
        yield
    finally:
        provider.shutdown()
