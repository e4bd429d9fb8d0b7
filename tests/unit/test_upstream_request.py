"""The whole upstream request from a route and a client's request: method, URL, body, headers.

Table-driven: each row is a route's options, what the client sent, and the request the upstream
gets. The parts (merge, query, URL escaping, headers) have their own tables in
test_upstream_builders.py; these rows pin how they combine.
"""

from __future__ import annotations

import orjson
import pytest
from multidict import CIMultiDict, MultiDict

from proxy.config import RouteConfig
from proxy.errors import BadRequest
from proxy.upstream_request import ClientRequest, build_upstream_request


def route(**options) -> RouteConfig:
    return RouteConfig.model_validate({"path": "/chat", "upstream": "http://up/api", **options})


ROWS = [
    pytest.param(
        {},
        ClientRequest("POST", body=b'{"prompt": "hi"}'),
        ("POST", "http://up/api", {"prompt": "hi"}),
        id="a-post-body-goes-up-as-json",
    ),
    pytest.param(
        {"body": {"defaults": {"model": "m", "stream": True}}},
        ClientRequest("POST", body=b'{"model": "x"}'),
        ("POST", "http://up/api", {"model": "x", "stream": True}),
        id="the-client-wins-over-the-defaults",
    ),
    pytest.param(
        {},
        ClientRequest("GET", query=MultiDict([("body", '{"a": {"b": 1}}'), ("c", "2")])),
        ("POST", "http://up/api", {"a": {"b": 1}, "c": "2"}),
        id="a-get-query-becomes-the-json-body",
    ),
    pytest.param(
        {"auth": {"api_keys": ["k" * 8], "query_param": "token"}},
        ClientRequest(
            "GET",
            query=MultiDict([("token", "k" * 8), ("_proxy_tap", ""), ("q", "1")]),
            hidden_query=frozenset({"token", "_proxy_tap"}),
        ),
        ("POST", "http://up/api", {"q": "1"}),
        id="the-gateways-own-query-parameters-never-go-up",
    ),
    pytest.param(
        {"upstream_method": "GET", "body": {"defaults": {"watch": True}}},
        ClientRequest("GET", query=MultiDict([("labelSelector", "app=x")])),
        ("GET", "http://up/api?watch=true&labelSelector=app%3Dx", None),
        id="an-upstream-get-takes-the-body-as-its-query",
    ),
    pytest.param(
        {"body": {"last_event_id": "after"}},
        ClientRequest("POST", headers=CIMultiDict({"Last-Event-ID": "41"}), body=b"{}"),
        ("POST", "http://up/api", {"after": "41"}),
        id="last-event-id-goes-into-the-named-body-field",
    ),
    pytest.param(
        {"path": "/m/{model}", "upstream": "http://up/models/{model}/chat"},
        ClientRequest("POST", path_variables={"model": "a/b?c"}),
        ("POST", "http://up/models/a%2Fb%3Fc/chat", {}),
        id="a-path-variable-is-one-escaped-segment",
    ),
    pytest.param(
        {"upstream": "/demo/api/chat"},
        ClientRequest("POST", self_origin="http://127.0.0.1:8123"),
        ("POST", "http://127.0.0.1:8123/demo/api/chat", {}),
        id="an-upstream-path-is-this-gateway-itself",
    ),
]


@pytest.mark.parametrize(("options", "client", "expected"), ROWS)
def test_the_upstream_request_is_built_from_the_route_and_the_client(options, client, expected):
    built = build_upstream_request(route(**options), client)
    method, url, body = expected
    assert built.method == method
    assert str(built.url) == url
    assert (None if built.body is None else orjson.loads(built.body)) == body


def test_the_headers_are_the_forwarded_ones_then_the_routes_own():
    client = ClientRequest(
        "POST", headers=CIMultiDict({"X-Request-Id": "r1", "Cookie": "c", "Authorization": "a"})
    )
    built = build_upstream_request(
        route(forward_headers=["X-Request-Id", "Authorization"], headers={"Authorization": "s"}),
        client,
    )
    assert built.headers["X-Request-Id"] == "r1"
    assert built.headers.getall("Authorization") == ["s"]
    assert "Cookie" not in built.headers


@pytest.mark.parametrize(
    ("client", "code"),
    [
        pytest.param(ClientRequest("POST", body=b"[1]"), "not_an_object", id="not-an-object"),
        pytest.param(ClientRequest("POST", body=b"{"), "invalid_json", id="not-json"),
        pytest.param(
            ClientRequest("GET", query=MultiDict([("body", "x" * 40)])),
            "body_too_large",
            id="query-body-over-the-limit",
        ),
    ],
)
def test_a_body_the_upstream_cannot_take_is_a_bad_request(client, code):
    with pytest.raises(BadRequest) as caught:
        build_upstream_request(route(limits={"max_body_bytes": 16}), client)
    assert caught.value.code == code


# -- trace headers ---------------------------------------------------------------------------------

TRACE = {
    "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-b7ad6b7169203331-01",
    "tracestate": "rojo=1",
}
OTHER_TRACE = {
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-00",
    "tracestate": "congo=2",
}


def test_the_trace_headers_go_upstream():
    built = build_upstream_request(route(), ClientRequest("POST", trace_headers=TRACE))
    assert {name: built.headers[name] for name in TRACE} == TRACE


def test_the_trace_headers_replace_forwarded_ones():
    client = ClientRequest("POST", headers=CIMultiDict(OTHER_TRACE), trace_headers=TRACE)
    built = build_upstream_request(route(forward_headers=["traceparent", "tracestate"]), client)
    assert {name: built.headers.getall(name) for name in TRACE} == {
        name: [value] for name, value in TRACE.items()
    }


def test_without_trace_headers_a_forwarded_traceparent_goes_as_it_came():
    client = ClientRequest("POST", headers=CIMultiDict(OTHER_TRACE))
    built = build_upstream_request(route(forward_headers=["traceparent"]), client)
    assert built.headers["traceparent"] == OTHER_TRACE["traceparent"]
    assert "tracestate" not in built.headers


def test_a_routes_own_traceparent_wins_and_takes_the_tracestate_along():
    own = "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01"
    built = build_upstream_request(
        route(headers={"TraceParent": own}), ClientRequest("POST", trace_headers=TRACE)
    )
    assert built.headers.getall("traceparent") == [own]
    assert "tracestate" not in built.headers


def test_requests_that_differ_only_in_their_trace_headers_have_one_fingerprint():
    # streams: {share: true} joins requests by fingerprint; every request has its own trace.
    options = {"headers": {"Authorization": "Bearer k"}, "forward_headers": ["traceparent"]}
    first = build_upstream_request(
        route(**options),
        ClientRequest("POST", body=b'{"q": 1}', trace_headers=TRACE),
    )
    second = build_upstream_request(
        route(**options),
        ClientRequest(
            "POST",
            headers=CIMultiDict({"traceparent": OTHER_TRACE["traceparent"]}),
            body=b'{"q": 1}',
            trace_headers=OTHER_TRACE,
        ),
    )
    untraced = build_upstream_request(route(**options), ClientRequest("POST", body=b'{"q": 1}'))
    assert first.headers["traceparent"] != second.headers["traceparent"]
    assert (
        first.fingerprint("/chat") == second.fingerprint("/chat") == untraced.fingerprint("/chat")
    )


def test_any_other_header_still_makes_another_fingerprint():
    one = build_upstream_request(route(headers={"X-Tenant": "a"}), ClientRequest("POST"))
    other = build_upstream_request(route(headers={"X-Tenant": "b"}), ClientRequest("POST"))
    assert one.fingerprint("/chat") != other.fingerprint("/chat")


def test_the_same_request_from_two_routes_has_two_fingerprints():
    # Each route makes its own events of the lines: a stream is shared within its route only.
    request = build_upstream_request(route(), ClientRequest("POST", body=b'{"q": 1}'))
    assert request.fingerprint("/tokens") != request.fingerprint("/lines")
    assert request.fingerprint("/tokens") == request.fingerprint("/tokens")
