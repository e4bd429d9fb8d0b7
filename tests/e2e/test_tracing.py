"""Tracing over real sockets: the W3C ``traceparent``/``tracestate`` an upstream gets (the
client's trace with the gateway as a hop, or a new trace), and with OpenTelemetry's SDK each
request's one span, whose trace the upstream saw. The in-process gateways export to the session's
in-memory exporter (the ``spans`` fixture); ``python -m proxy`` processes show the other two
ways: OTLP export set up from ``OTEL_*`` variables, and no SDK set up at all."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from proxy.tracecontext import NEW_TRACE_FLAGS, TraceParent, parse_traceparent
from tests.support.processes import running_gateway
from tests.support.sse import parse_events
from tests.support.upstreams import Seen, ndjson_handler, recorded
from tests.support.waiting import eventually

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
CLIENT = {
    "traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN}-01",
    "tracestate": "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
}
LINES = [b'{"n": 1}\n', b'{"n": 2}\n', b'{"n": 3}\n']


def chat_route(base: str, **options: Any) -> dict[str, Any]:
    return {"path": "/v1/chat", "upstream": f"{base}/chat", "events": {"data": "/n"}, **options}


async def start(start_upstream, start_gateway, handler=None, server=None, **options):
    seen: list[Seen] = []
    base = await start_upstream({"/chat": recorded(handler or ndjson_handler(LINES), seen)})
    return await start_gateway([chat_route(base, **options)], server), seen


async def stream(http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None):
    async with http.post(url, json={"q": "hi"}, headers=headers or {}) as response:
        return response.status, parse_events(await response.read())


def upstream_parent(seen: Seen) -> TraceParent:
    parent = parse_traceparent(seen.headers.getall("traceparent", []))
    assert parent is not None, f"no valid traceparent upstream: {seen.headers}"
    return parent


# -- what the upstream gets ------------------------------------------------------------------------


async def test_without_a_traceparent_each_request_starts_a_new_sampled_trace(
    start_upstream, start_gateway, http
):
    gateway, seen = await start(start_upstream, start_gateway)
    for _ in range(3):
        status, _ = await stream(http, f"{gateway}/v1/chat")
        assert status == 200
    parents = [upstream_parent(request) for request in seen]
    assert len({parent.trace_id for parent in parents}) == 3
    assert {parent.flags for parent in parents} == {NEW_TRACE_FLAGS}
    assert all("tracestate" not in request.headers for request in seen)


async def test_a_clients_trace_goes_upstream_with_the_gateway_as_the_parent(
    start_upstream, start_gateway, http
):
    gateway, seen = await start(start_upstream, start_gateway)
    status, events = await stream(http, f"{gateway}/v1/chat", CLIENT)
    assert (status, [e.data for e in events]) == (200, ["1", "2", "3", ""])
    parent = upstream_parent(seen[0])
    assert parent.trace_id == TRACE_ID
    assert parent.parent_id != CLIENT_SPAN
    assert parent.flags == 1
    assert seen[0].headers.getall("tracestate") == [CLIENT["tracestate"]]


async def test_an_unsampled_clients_trace_stays_unsampled(start_upstream, start_gateway, http):
    gateway, seen = await start(start_upstream, start_gateway)
    await stream(http, f"{gateway}/v1/chat", {"traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN}-00"})
    parent = upstream_parent(seen[0])
    assert (parent.trace_id, parent.flags) == (TRACE_ID, 0)


@pytest.mark.parametrize(
    "traceparent",
    [
        pytest.param(f"00-{TRACE_ID.upper()}-{CLIENT_SPAN}-01", id="upper-case"),
        pytest.param(f"ff-{TRACE_ID}-{CLIENT_SPAN}-01", id="version-ff"),
        pytest.param(f"00-{'0' * 32}-{CLIENT_SPAN}-01", id="zero-trace-id"),
        pytest.param(f"00-{TRACE_ID}-{CLIENT_SPAN}-01-extra", id="version-00-with-more"),
    ],
)
async def test_an_invalid_traceparent_is_replaced_by_a_new_trace_without_its_tracestate(
    start_upstream, start_gateway, http, traceparent
):
    gateway, seen = await start(start_upstream, start_gateway)
    await stream(http, f"{gateway}/v1/chat", {**CLIENT, "traceparent": traceparent})
    parent = upstream_parent(seen[0])
    assert parent.trace_id not in (TRACE_ID, TRACE_ID.upper())
    assert parent.flags == NEW_TRACE_FLAGS
    assert "tracestate" not in seen[0].headers


async def test_with_trace_propagation_off_no_trace_header_goes_upstream(
    start_upstream, start_gateway, http
):
    gateway, seen = await start(start_upstream, start_gateway, server={"trace_propagation": False})
    status, _ = await stream(http, f"{gateway}/v1/chat", CLIENT)
    assert status == 200
    assert "traceparent" not in seen[0].headers
    assert "tracestate" not in seen[0].headers


async def test_a_routes_own_traceparent_wins(start_upstream, start_gateway, http):
    own = f"00-{'ab' * 16}-{'cd' * 8}-01"
    gateway, seen = await start(start_upstream, start_gateway, headers={"traceparent": own})
    await stream(http, f"{gateway}/v1/chat", CLIENT)
    assert seen[0].headers.getall("traceparent") == [own]
    assert "tracestate" not in seen[0].headers


async def test_shared_streams_still_share_when_the_clients_traces_differ(
    start_upstream, start_gateway, http
):
    gateway, seen = await start(
        start_upstream,
        start_gateway,
        ndjson_handler(LINES, pause=0.1),
        resume={"linger": 5},
        streams={"share": True},
    )

    async def read(n: int) -> list[str]:
        traceparent = f"00-{n:032x}-{n:016x}-01"
        status, events = await stream(http, f"{gateway}/v1/chat", {"traceparent": traceparent})
        assert status == 200
        return [e.data for e in events]

    results = await asyncio.gather(*(read(n) for n in range(1, 6)))
    assert results == [["1", "2", "3", ""]] * 5
    assert len(seen) == 1
    # The one upstream request carries the trace of the client that opened it.
    assert int(upstream_parent(seen[0]).trace_id, 16) in range(1, 6)


# -- the span (OpenTelemetry's SDK, in-memory) -----------------------------------------------------


async def one_span(spans: Any) -> Any:
    """The one span this test's gateway made (it ends just after the response's last byte)."""
    await eventually(lambda: len(spans.get_finished_spans()) >= 1, "a span ended")
    await asyncio.sleep(0.05)  # a second one would have ended by now
    finished = spans.get_finished_spans()
    assert len(finished) == 1, [span.name for span in finished]
    return finished[0]


async def test_a_stream_is_one_server_span_in_the_clients_trace_that_the_upstream_saw(
    start_upstream, start_gateway, http, spans
):
    from opentelemetry.trace import SpanKind, StatusCode

    gateway, seen = await start(start_upstream, start_gateway)
    status, _ = await stream(http, f"{gateway}/v1/chat", CLIENT)
    assert status == 200
    span = await one_span(spans)
    parent = upstream_parent(seen[0])
    assert span.name == "POST /v1/chat"
    assert span.kind == SpanKind.SERVER
    assert f"{span.context.trace_id:032x}" == parent.trace_id == TRACE_ID
    assert f"{span.context.span_id:016x}" == parent.parent_id
    assert span.parent is not None
    assert f"{span.parent.span_id:016x}" == CLIENT_SPAN
    assert str(span.context.trace_state.to_header()) == CLIENT["tracestate"]
    attributes = dict(span.attributes)
    first_event_ms = attributes.pop("proxy.first_event_ms")
    assert isinstance(first_event_ms, float)
    assert first_event_ms >= 0
    assert attributes == {
        "http.route": "/v1/chat",
        "http.request.method": "POST",
        "http.response.status_code": 200,
        "proxy.upstream_status": 200,
        "proxy.events": 3,  # as the access log counts them: the lines, not the end event
        "proxy.ended": "eof",
    }
    assert span.status.status_code == StatusCode.UNSET


async def test_without_a_traceparent_the_span_is_a_root_whose_trace_the_upstream_saw(
    start_upstream, start_gateway, http, spans
):
    gateway, seen = await start(start_upstream, start_gateway)
    await stream(http, f"{gateway}/v1/chat")
    span = await one_span(spans)
    parent = upstream_parent(seen[0])
    assert span.parent is None
    assert f"{span.context.trace_id:032x}" == parent.trace_id
    assert f"{span.context.span_id:016x}" == parent.parent_id
    assert parent.flags == NEW_TRACE_FLAGS


async def test_an_upstream_503_is_an_error_span(start_upstream, start_gateway, http, spans):
    from opentelemetry.trace import StatusCode

    async def unavailable(request: web.Request) -> web.Response:
        return web.json_response({"error": "overloaded"}, status=503)

    gateway, seen = await start(start_upstream, start_gateway, unavailable)
    status, _ = await stream(http, f"{gateway}/v1/chat", CLIENT)
    assert status == 503
    span = await one_span(spans)
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes["http.response.status_code"] == 503
    assert span.attributes["proxy.upstream_status"] == 503
    assert span.attributes["proxy.ended"] == "upstream_status"
    assert "proxy.first_event_ms" not in span.attributes
    assert f"{span.context.trace_id:032x}" == upstream_parent(seen[0]).trace_id == TRACE_ID


async def test_a_stream_that_ends_in_an_error_event_is_an_error_span(
    start_upstream, start_gateway, http, spans
):
    from opentelemetry.trace import StatusCode

    gateway, _ = await start(start_upstream, start_gateway, ndjson_handler(LINES, end="abort"))
    status, events = await stream(http, f"{gateway}/v1/chat")
    assert status == 200
    assert events[-1].event == "error"
    span = await one_span(spans)
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes["http.response.status_code"] == 200
    assert span.attributes["proxy.ended"] not in ("eof", "client_gone")
    assert span.status.description == span.attributes["proxy.ended"]


async def test_a_client_that_leaves_mid_stream_ends_its_span_without_an_error(
    start_upstream, start_gateway, http, spans
):
    gateway, _ = await start(start_upstream, start_gateway, ndjson_handler(LINES, pause=1))
    async with http.post(f"{gateway}/v1/chat", json={}) as response:
        await response.content.readuntil(b"data: 1\n")  # the first event
        response.close()  # the connection, mid-stream
    span = await one_span(spans)
    assert span.attributes["proxy.ended"] == "client_gone"
    assert span.attributes["proxy.events"] >= 1
    assert span.status.is_unset


async def test_a_refused_request_is_a_span_the_client_failed_not_the_gateway(
    start_upstream, start_gateway, http, spans
):
    from opentelemetry.trace import StatusCode

    gateway, seen = await start(start_upstream, start_gateway)
    async with http.post(f"{gateway}/v1/chat", data=b"[1]") as response:
        assert response.status == 400
    span = await one_span(spans)
    assert span.attributes["http.response.status_code"] == 400
    assert span.attributes["proxy.ended"] == "not_an_object"
    assert span.status.status_code == StatusCode.UNSET  # a 4xx is the client's error
    assert seen == []


async def test_a_stream_urls_key_is_never_in_its_span(start_upstream, start_gateway, http, spans):
    gateway, _ = await start(
        start_upstream, start_gateway, resume={"linger": 5}, streams={"share": False}
    )
    async with http.post(f"{gateway}/v1/chat/streams", json={"q": "hi"}) as response:
        assert response.status == 201
        key = (await response.json())["id"]
    async with http.get(f"{gateway}/v1/chat/streams/{key}") as response:
        assert [e.data for e in parse_events(await response.read())] == ["1", "2", "3", ""]
    await eventually(lambda: len(spans.get_finished_spans()) == 2, "two spans ended")
    created, read = spans.get_finished_spans()
    assert (created.name, created.attributes["proxy.ended"]) == ("POST /v1/chat/streams", "created")
    assert read.name == "GET /v1/chat/streams/{_stream_id}"
    for span in (created, read):
        assert span.status.is_unset
        assert key[:8] not in json.dumps(
            [span.name, {k: str(v) for k, v in span.attributes.items()}]
        )


async def test_health_checks_make_no_span(start_gateway, http, spans):
    gateway = await start_gateway([])
    async with http.get(f"{gateway}/healthz") as response:
        assert response.status == 200
    await asyncio.sleep(0.05)
    assert spans.get_finished_spans() == ()


# -- python -m proxy: OTLP export from the OTEL_* variables, and no SDK set up ---------------------


def process_env(**otel: str) -> dict[str, str]:
    """This environment without any OTEL_* variable of the machine's, with ``otel`` added."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}, **otel}


async def test_with_an_otlp_endpoint_set_the_process_exports_its_spans_by_otlp_http(
    start_upstream, http, tmp_path
):
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http", reason="the 'otel' extra")
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    exports: list[tuple[str, bytes]] = []

    async def receive(request: web.Request) -> web.Response:
        exports.append((request.content_type, await request.read()))
        return web.Response(body=b"", content_type="application/x-protobuf")

    collector = await start_upstream({"/v1/traces": receive})
    seen: list[Seen] = []
    upstream = await start_upstream({"/chat": recorded(ndjson_handler(LINES), seen)})
    config = tmp_path / "gateway.yaml"
    config.write_text(json.dumps({"routes": [chat_route(upstream)]}))
    env = process_env(OTEL_EXPORTER_OTLP_ENDPOINT=collector, OTEL_BSP_SCHEDULE_DELAY="60000")
    async with running_gateway("--config", str(config), "--port", "0", env=env) as gateway:
        status, _ = await stream(http, f"{gateway.base}/v1/chat", CLIENT)
        assert status == 200
    # The batch waits a minute: what arrived was sent at the shutdown.
    assert exports, "no OTLP request arrived"
    assert {content_type for content_type, _ in exports} == {"application/x-protobuf"}
    [resource_spans] = [
        resource
        for _, body in exports
        for resource in ExportTraceServiceRequest.FromString(body).resource_spans
    ]
    resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert resource["service.name"] == "ndjson-sse-proxy"
    [span] = [span for scope in resource_spans.scope_spans for span in scope.spans]
    assert span.name == "POST /v1/chat"
    assert span.trace_id.hex() == upstream_parent(seen[0]).trace_id == TRACE_ID
    assert span.span_id.hex() == upstream_parent(seen[0]).parent_id


async def test_otel_service_name_names_the_exported_service(start_upstream, http, tmp_path):
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http", reason="the 'otel' extra")
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    bodies: list[bytes] = []

    async def receive(request: web.Request) -> web.Response:
        bodies.append(await request.read())
        return web.Response(body=b"", content_type="application/x-protobuf")

    collector = await start_upstream({"/traces": receive})
    upstream = await start_upstream({"/chat": ndjson_handler(LINES)})
    config = tmp_path / "gateway.yaml"
    config.write_text(json.dumps({"routes": [chat_route(upstream)]}))
    env = process_env(
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=f"{collector}/traces", OTEL_SERVICE_NAME="edge"
    )
    async with running_gateway("--config", str(config), "--port", "0", env=env) as gateway:
        await stream(http, f"{gateway.base}/v1/chat")
    names = {
        attribute.value.string_value
        for body in bodies
        for resource in ExportTraceServiceRequest.FromString(body).resource_spans
        for attribute in resource.resource.attributes
        if attribute.key == "service.name"
    }
    assert names == {"edge"}


async def test_a_provider_set_up_already_is_kept_and_nothing_of_ours_is_exported(
    start_upstream, http, tmp_path
):
    """As under ``opentelemetry-instrument``, which sets its provider up before the gateway
    starts (here the SDK's, with no exporter, named by OTEL_PYTHON_TRACER_PROVIDER)."""
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http", reason="the 'otel' extra")
    bodies: list[bytes] = []

    async def receive(request: web.Request) -> web.Response:
        bodies.append(await request.read())
        return web.Response(body=b"", content_type="application/x-protobuf")

    collector = await start_upstream({"/v1/traces": receive})
    seen: list[Seen] = []
    upstream = await start_upstream({"/chat": recorded(ndjson_handler(LINES), seen)})
    config = tmp_path / "gateway.yaml"
    config.write_text(json.dumps({"routes": [chat_route(upstream)]}))
    env = process_env(
        OTEL_EXPORTER_OTLP_ENDPOINT=collector, OTEL_PYTHON_TRACER_PROVIDER="sdk_tracer_provider"
    )
    async with running_gateway("--config", str(config), "--port", "0", env=env) as gateway:
        await stream(http, f"{gateway.base}/v1/chat", CLIENT)
    assert bodies == []
    assert upstream_parent(seen[0]).trace_id == TRACE_ID  # its spans still carry the trace


async def test_without_an_sdk_set_up_the_process_still_sends_the_trace_on_as_a_hop(
    start_upstream, http, tmp_path
):
    seen: list[Seen] = []
    upstream = await start_upstream({"/chat": recorded(ndjson_handler(LINES), seen)})
    config = tmp_path / "gateway.yaml"
    config.write_text(json.dumps({"routes": [chat_route(upstream)]}))
    async with running_gateway("--config", str(config), "--port", "0", env=process_env()) as gw:
        await stream(http, f"{gw.base}/v1/chat", CLIENT)
        await stream(http, f"{gw.base}/v1/chat")
    client, fresh = (upstream_parent(request) for request in seen)
    assert client.trace_id == TRACE_ID
    assert client.parent_id != CLIENT_SPAN
    assert seen[0].headers["tracestate"] == CLIENT["tracestate"]
    assert fresh.trace_id != TRACE_ID
    assert fresh.flags == NEW_TRACE_FLAGS
