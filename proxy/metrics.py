"""Prometheus metrics at ``/metrics``, from the same per-stream record the access log writes.

Strategy: each app has its own ``CollectorRegistry`` (prometheus-client's default one is global,
and the test suite runs many apps in one process). Counters and histograms are fed once per stream,
at its end, from its :class:`StreamRecord`; the open-stream gauge is read from the
:class:`StreamRegistry` at scrape time, so there is no second count to keep in step.
"""

from __future__ import annotations

from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .logs import StreamRecord
from .streams import StreamRegistry

__all__ = ["GatewayMetrics"]

# Time to first event spans a cached reply (ms) to a cold model load (minutes); streams run long.
_FIRST_EVENT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_DURATION_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class GatewayMetrics:
    def __init__(self, streams: StreamRegistry, routes: list[str]) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_OpenStreams(streams, list(dict.fromkeys(routes))))
        self._streams = Counter(
            "proxy_streams",
            "Requests to a route, by status and how they ended.",
            ["route", "status", "ended"],
            registry=self.registry,
        )
        self._events = Counter(
            "proxy_events", "Events relayed from the upstream.", ["route"], registry=self.registry
        )
        self._bytes = Counter(
            "proxy_sent_bytes", "Body bytes sent to clients.", ["route"], registry=self.registry
        )
        self._upstream = Counter(
            "proxy_upstream_responses",
            "Upstream response statuses.",
            ["route", "status"],
            registry=self.registry,
        )
        self._errors = Counter(
            "proxy_errors",
            "Streams that ended in an error, by its code.",
            ["route", "code"],
            registry=self.registry,
        )
        self._first_event = Histogram(
            "proxy_time_to_first_event_seconds",
            "From the request to the first event written.",
            ["route"],
            buckets=_FIRST_EVENT_BUCKETS,
            registry=self.registry,
        )
        self._duration = Histogram(
            "proxy_stream_duration_seconds",
            "From the request to the end of the response.",
            ["route"],
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )

    def observe(self, record: StreamRecord) -> None:
        """One finished request to a route (others are not counted)."""
        route = record.route
        if route is None:
            return
        self._streams.labels(route, str(record.status), record.ended).inc()
        self._events.labels(route).inc(record.events)
        self._bytes.labels(route).inc(record.bytes)
        if record.upstream_status is not None:
            self._upstream.labels(route, str(record.upstream_status)).inc()
        if record.ended not in ("eof", "client_gone"):
            self._errors.labels(route, record.ended).inc()
        if record.first_event_ms is not None:
            self._first_event.labels(route).observe(record.first_event_ms / 1000)
        self._duration.labels(route).observe(record.duration_ms / 1000)

    async def handler(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.registry),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )


class _OpenStreams(Collector):
    def __init__(self, streams: StreamRegistry, routes: list[str]) -> None:
        self._streams = streams
        self._routes = routes

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily("proxy_open_streams", "Streams open now.", labels=["route"])
        for route in self._routes:
            gauge.add_metric([route], self._streams.open_streams(route))
        yield gauge
        yield GaugeMetricFamily(
            "proxy_draining", "1 while the gateway drains.", value=int(self._streams.draining)
        )
