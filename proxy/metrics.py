"""Prometheus metrics at ``/metrics``, from the same per-stream record the access log writes.

Strategy: each app has its own ``CollectorRegistry`` (prometheus-client's default one is global,
and the test suite runs many apps in one process). Counters and histograms are fed once per stream,
at its end, from its :class:`StreamRecord`; the open-stream gauge is read from the
:class:`StreamRegistry` at scrape time, so there is no second count to keep in step.

For LLM routes: time to first event is time to first token (each token is an event); the gaps
between the writes that carried events are the inter-token latency, kept per stream in a
:class:`~proxy.timeline.Timeline`'s buckets and added to the route's histogram at the stream's end
(one addition per bucket, not one observation per token); token counts come from the route's
``usage`` pointers, counted where the upstream is read (for a resumable route, by its producer).
"""

from __future__ import annotations

from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from .logs import StreamRecord
from .streams import StreamRegistry
from .timeline import GAP_BUCKETS, Timeline
from .usage import UsageTally

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
        self._tokens = Counter(
            "proxy_tokens",
            "LLM tokens read from the streams (the route's usage pointers), by kind.",
            ["route", "kind"],
            registry=self.registry,
        )
        self._gaps = _GapHistogram()
        self.registry.register(self._gaps)

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
        self._gaps.add(route, record.timeline)
        self._count(route, record.prompt_tokens, record.completion_tokens)

    def count_tokens(self, route: str, usage: UsageTally) -> None:
        """Token counts read by a stream that no one request owns (a resumable stream's
        producer)."""
        self._count(route, usage.prompt_tokens, usage.completion_tokens)

    def _count(self, route: str, prompt: int | None, completion: int | None) -> None:
        if prompt:
            self._tokens.labels(route, "prompt").inc(prompt)
        if completion:
            self._tokens.labels(route, "completion").inc(completion)

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


class _GapHistogram(Collector):
    """``proxy_event_gap_seconds``: the route's streams' timelines, added bucket by bucket."""

    def __init__(self) -> None:
        self._routes: dict[str, tuple[list[int], list[float]]] = {}

    def add(self, route: str, timeline: Timeline) -> None:
        if not timeline.gaps:
            return
        counts, total = self._routes.setdefault(route, ([0] * (len(GAP_BUCKETS) + 1), [0.0]))
        for index, count in enumerate(timeline.counts):
            counts[index] += count
        total[0] += timeline.total

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(
            "proxy_event_gap_seconds",
            "Gaps between a stream's writes that carried events (LLM: inter-token latency).",
            labels=["route"],
        )
        bounds = [*(repr(bound) for bound in GAP_BUCKETS), "+Inf"]
        for route, (counts, total) in self._routes.items():
            cumulative, buckets = 0, []
            for bound, count in zip(bounds, counts, strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            family.add_metric([route], buckets, total[0])
        yield family
