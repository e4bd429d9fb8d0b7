"""The pure builders of the upstream request: body, URL, headers, framing negotiation."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy
from yarl import URL

from proxy.config import RouteConfig
from proxy.errors import BadRequest, UpstreamFailure
from proxy.upstream import NDJSON_MEDIA_TYPES, choose_framing, client_wants_ndjson
from proxy.upstream_request import (
    UPSTREAM_ACCEPT,
    body_from_json,
    body_from_query,
    fill_upstream_url,
    merge_under,
    query_from_body,
    upstream_headers,
)

# -- merge_under -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("defaults", "fields", "merged"),
    [
        pytest.param({}, {}, {}, id="both-empty"),
        pytest.param({"model": "demo"}, {}, {"model": "demo"}, id="defaults-only"),
        pytest.param({}, {"a": 1}, {"a": 1}, id="fields-only"),
        pytest.param(
            {"model": "demo", "stream": True},
            {"model": "llama"},
            {"model": "llama", "stream": True},
            id="request-wins",
        ),
        pytest.param(
            {"options": {"temperature": 0, "seed": 1}},
            {"options": {"temperature": 1}},
            {"options": {"temperature": 1, "seed": 1}},
            id="nested-objects-merge",
        ),
        pytest.param(
            {"a": {"b": {"c": 1, "d": 2}}},
            {"a": {"b": {"d": 3}}},
            {"a": {"b": {"c": 1, "d": 3}}},
            id="deeply-nested-objects-merge",
        ),
        pytest.param({"stop": ["a", "b"]}, {"stop": ["c"]}, {"stop": ["c"]}, id="lists-replaced"),
        pytest.param({"a": {"b": 1}}, {"a": 5}, {"a": 5}, id="scalar-replaces-object"),
        pytest.param({"a": 5}, {"a": {"b": 1}}, {"a": {"b": 1}}, id="object-replaces-scalar"),
        pytest.param({"a": 1}, {"a": None}, {"a": None}, id="null-is-a-value"),
    ],
)
def test_merge_under_puts_the_request_over_the_defaults(defaults, fields, merged):
    assert merge_under(defaults, fields) == merged


def test_merge_under_does_not_modify_its_inputs():
    defaults = {"options": {"seed": 1}, "stop": ["x"]}
    fields = {"options": {"temperature": 1}}
    merge_under(defaults, fields)
    assert defaults == {"options": {"seed": 1}, "stop": ["x"]}
    assert fields == {"options": {"temperature": 1}}


# -- body_from_query -------------------------------------------------------------------------------


def query(text: str) -> MultiDictProxy[str]:
    """A query string decoded as aiohttp decodes ``request.query``."""
    return URL("/x?" + text).query


@pytest.mark.parametrize(
    ("text", "body"),
    [
        pytest.param("", {}, id="no-query"),
        pytest.param("q=hi", {"q": "hi"}, id="one-param"),
        pytest.param("q=a&q=b&r=c", {"q": ["a", "b"], "r": "c"}, id="repeated-param-is-a-list"),
        pytest.param("q=a%20b%26c", {"q": "a b&c"}, id="percent-decoded"),
        pytest.param("n=1", {"n": "1"}, id="values-stay-strings"),
        pytest.param(
            "body=%7B%22messages%22%3A%5B%7B%22role%22%3A%22user%22%7D%5D%7D",
            {"messages": [{"role": "user"}]},
            id="body-param-is-a-json-object",
        ),
        pytest.param(
            "body=%7B%22model%22%3A%22a%22%2C%22x%22%3A1%7D&model=b",
            {"model": "b", "x": 1},
            id="other-params-go-over-the-body-param",
        ),
        pytest.param(
            "model=b&body=%7B%22model%22%3A%22a%22%7D", {"model": "b"}, id="order-does-not-matter"
        ),
        pytest.param("body=", {}, id="empty-body-param-is-an-empty-object"),
        pytest.param("body=%20%20", {}, id="blank-body-param-is-an-empty-object"),
    ],
)
def test_body_from_query_gives_each_param_as_a_field_over_the_json_body_param(text, body):
    assert body_from_query(query(text), "body", 1024) == body


def test_body_from_query_without_query_param_treats_body_as_a_plain_field():
    assert body_from_query(query("body=%7B%7D"), None, 1024) == {"body": "{}"}


def test_body_from_query_with_another_query_param_name():
    assert body_from_query(query("json=%7B%22a%22%3A1%7D&body=x"), "json", 1024) == {
        "a": 1,
        "body": "x",
    }


def test_body_from_query_accepts_a_plain_multidict():
    assert body_from_query(MultiDictProxy(MultiDict([("a", "1"), ("a", "2")])), "body", 64) == {
        "a": ["1", "2"]
    }


@pytest.mark.parametrize(
    ("text", "status", "code"),
    [
        pytest.param("body=%5B1%5D", 400, "not_an_object", id="array"),
        pytest.param("body=%22s%22", 400, "not_an_object", id="string"),
        pytest.param("body=null", 400, "not_an_object", id="null"),
        pytest.param("body=%7Bnope", 400, "invalid_json", id="invalid-json"),
        pytest.param("body=%7B%7D&body=%7B%7D", 400, "bad_request", id="given-twice"),
        pytest.param("body=" + "%20" * 16 + "%7B%7D", 413, "body_too_large", id="too-large"),
    ],
)
def test_body_from_query_refuses_what_it_cannot_use(text, status, code):
    with pytest.raises(BadRequest) as caught:
        body_from_query(query(text), "body", 16)
    assert caught.value.status == status
    assert caught.value.code == code
    assert "'body'" in caught.value.message


def test_body_param_of_exactly_the_limit_passes():
    assert body_from_query(query("body=%7B%22a%22%3A1%7D"), "body", 7) == {"a": 1}


def test_body_param_limit_counts_utf8_bytes():
    encoded = "%7B%22a%22%3A%22%C3%A9%C3%A9%22%7D"  # {"a":"éé"}: 10 characters, 12 bytes
    with pytest.raises(BadRequest) as caught:
        body_from_query(query("body=" + encoded), "body", 11)
    assert caught.value.status == 413


# -- body_from_json --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "body"),
    [
        pytest.param(b"", {}, id="empty-is-an-empty-object"),
        pytest.param(b" \r\n\t", {}, id="whitespace-is-an-empty-object"),
        pytest.param(b"{}", {}, id="empty-object"),
        pytest.param(b'{"a": [1, {"b": null}]}', {"a": [1, {"b": None}]}, id="nested"),
        pytest.param(b' {"a": 1}\n', {"a": 1}, id="surrounding-whitespace"),
    ],
)
def test_body_from_json_gives_an_object(raw, body):
    assert body_from_json(raw) == body


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        pytest.param(b"[]", "not_an_object", id="array"),
        pytest.param(b"1", "not_an_object", id="number"),
        pytest.param(b'"s"', "not_an_object", id="string"),
        pytest.param(b"null", "not_an_object", id="null"),
        pytest.param(b"{", "invalid_json", id="truncated"),
        pytest.param(b"{'a': 1}", "invalid_json", id="single-quotes"),
        pytest.param(b'{"a": "\xff"}', "invalid_json", id="invalid-utf8"),
    ],
)
def test_body_from_json_refuses_anything_but_an_object(raw, code):
    with pytest.raises(BadRequest) as caught:
        body_from_json(raw)
    assert caught.value.status == 400
    assert caught.value.code == code
    assert caught.value.message.startswith("request body ")


def test_body_from_json_names_what_it_read():
    with pytest.raises(BadRequest, match=r"^query parameter 'body' must be a JSON object$"):
        body_from_json(b"[]", what="query parameter 'body'")


# -- fill_upstream_url -----------------------------------------------------------------------------

TEMPLATE = "http://backend:8000/api/{name}/stream"


@pytest.mark.parametrize(
    ("value", "raw_path"),
    [
        pytest.param("plain", "/api/plain/stream", id="plain"),
        pytest.param("a?b#c", "/api/a%3Fb%23c/stream", id="query-and-fragment-escaped"),
        pytest.param("%2F", "/api/%252F/stream", id="percent-escaped-no-double-decoding"),
        pytest.param("\r\n", "/api/%0D%0A/stream", id="crlf-escaped"),
        pytest.param("...", "/api/.../stream", id="three-dots-are-not-a-dot-segment"),
        pytest.param(".a", "/api/.a/stream", id="leading-dot-kept"),
        pytest.param("é/ü", "/api/%C3%A9%2F%C3%BC/stream", id="unicode-as-utf8"),
        pytest.param("a b+c", "/api/a%20b%2Bc/stream", id="space-and-plus"),
        pytest.param("a;b=c", "/api/a%3Bb%3Dc/stream", id="semicolon-and-equals"),
        pytest.param("a\\b", "/api/a%5Cb/stream", id="backslash"),
        pytest.param("a/b", "/api/a%2Fb/stream", id="slash-one-segment"),
    ],
)
def test_path_variable_is_escaped_as_exactly_one_segment(value, raw_path):
    url = fill_upstream_url(TEMPLATE, {"name": value}, "http://127.0.0.1:8080")
    assert url.raw_path == raw_path
    assert str(url) == "http://backend:8000" + raw_path
    assert url.host == "backend"
    assert url.port == 8000
    assert url.query_string == ""
    assert url.fragment == ""
    assert url.raw_parts[2] == raw_path.split("/")[2]
    assert len(url.raw_parts) == 4


def test_each_variable_is_escaped_and_the_templates_own_query_is_kept():
    url = fill_upstream_url(
        "https://h/u/{user}/c/{chat}?stream=true", {"user": "a/b", "chat": "?x"}, "http://o"
    )
    assert str(url) == "https://h/u/a%2Fb/c/%3Fx?stream=true"
    assert url.raw_path == "/u/a%2Fb/c/%3Fx"
    assert url.query_string == "stream=true"


def test_relative_template_is_the_gateway_itself():
    url = fill_upstream_url("/demo/{x}", {"x": "a b"}, "http://127.0.0.1:8080")
    assert str(url) == "http://127.0.0.1:8080/demo/a%20b"
    assert url.raw_path == "/demo/a%20b"
    assert (url.host, url.port) == ("127.0.0.1", 8080)


def test_relative_template_without_variables_keeps_an_ipv6_gateway_origin():
    url = fill_upstream_url("/demo/api/chat", {}, "http://[::1]:9000")
    assert str(url) == "http://[::1]:9000/demo/api/chat"
    assert url.host == "::1"


def test_template_without_placeholders_is_unchanged():
    url = fill_upstream_url("http://h:1/api/chat", {"unused": "x"}, "http://o")
    assert str(url) == "http://h:1/api/chat"


@pytest.mark.parametrize(
    ("value", "raw_path"),
    [
        pytest.param("a/b/c", "/api/a/b/c/stream", id="segments-kept"),
        pytest.param("a?b/c#d", "/api/a%3Fb/c%23d/stream", id="query-and-fragment-escaped"),
        pytest.param("%2F/x", "/api/%252F/x/stream", id="percent-escaped"),
        pytest.param("a//b/", "/api/a//b//stream", id="empty-segments-kept"),
        pytest.param("...", "/api/.../stream", id="three-dots-are-not-a-dot-segment"),
        pytest.param("a\\b/x", "/api/a%5Cb/x/stream", id="backslash"),
        pytest.param("http://evil/x", "/api/http%3A//evil/x/stream", id="absolute-url"),
    ],
)
def test_multi_segment_variable_keeps_its_slashes_and_escapes_each_segment(value, raw_path):
    url = fill_upstream_url(TEMPLATE, {"name": value}, "http://o", multi_segment={"name"})
    assert url.raw_path == raw_path
    assert (url.host, url.port, url.query_string, url.fragment) == ("backend", 8000, "", "")


@pytest.mark.parametrize(
    "value", ["..", ".", "a/..", "../x", "a/./b", "a/../../admin", "\\..\\", "..\\x"]
)
@pytest.mark.parametrize("multi", [set(), {"name"}], ids=["one-segment", "multi-segment"])
def test_a_variable_with_a_dot_segment_is_a_400(value, multi):
    # Escaped, it would still climb out on a server that decodes %2E / %2F and then normalizes.
    with pytest.raises(BadRequest) as caught:
        fill_upstream_url(TEMPLATE, {"name": value}, "http://o", multi_segment=multi)
    assert (caught.value.status, caught.value.code) == (400, "invalid_path")


@pytest.mark.parametrize(
    ("path", "multi"),
    [
        ("/m/{tail:.*}", {"tail"}),
        ("/m/{tail:.+}", {"tail"}),
        ("/m/{tail:[\\s\\S]*}", {"tail"}),
        ("/m/{tail}", set()),
        ("/m/{tail:[^/]+}", set()),
        ("/m/{a:\\d+}/{b:.*}", {"b"}),
    ],
)
def test_which_path_variables_span_segments(path, multi):
    assert RouteConfig(path=path, upstream="http://h/").multi_segment_variables == multi


# -- query_from_body (upstream_method: GET) ----------------------------------------------------------


def test_body_becomes_query_parameters_in_order():
    body = {"watch": True, "limit": 5, "q": "a b", "ids": ["1", 2], "none": None, "f": {"x": [1]}}
    assert query_from_body(body) == [
        ("watch", "true"),
        ("limit", "5"),
        ("q", "a b"),
        ("ids", "1"),
        ("ids", "2"),
        ("f", '{"x":[1]}'),
    ]


# -- upstream_headers ------------------------------------------------------------------------------


def route(**options) -> RouteConfig:
    return RouteConfig(path="/v1/chat", upstream="http://h/api/chat", **options)


def client(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


def lowered(headers: dict[str, str]) -> dict[str, str]:
    """The headers as the upstream sees them; a name twice (in any case) is a bug."""
    names = [name.lower() for name in headers]
    assert len(names) == len(set(names)), headers
    return {name.lower(): value for name, value in headers.items()}


def test_accept_is_always_set():
    assert upstream_headers(route(), client()) == {"Accept": UPSTREAM_ACCEPT}


def test_client_accept_is_not_forwarded_by_default():
    headers = upstream_headers(route(), client(("Accept", "text/event-stream")))
    assert headers == {"Accept": UPSTREAM_ACCEPT}


def test_forwarded_names_are_matched_case_insensitively():
    headers = upstream_headers(
        route(forward_headers=["x-request-id", "Authorization"]),
        client(("X-REQUEST-ID", "r1"), ("authorization", "Bearer t"), ("Cookie", "c=1")),
    )
    assert lowered(headers) == {
        "accept": UPSTREAM_ACCEPT,
        "x-request-id": "r1",
        "authorization": "Bearer t",
    }


def test_multiple_values_are_joined_with_commas():
    headers = upstream_headers(
        route(forward_headers=["X-Tag"]), client(("X-Tag", "a"), ("x-tag", "b, c"))
    )
    assert lowered(headers)["x-tag"] == "a, b, c"


def test_missing_forwarded_header_is_not_sent():
    headers = upstream_headers(route(forward_headers=["X-Request-Id"]), client())
    assert "x-request-id" not in lowered(headers)


def test_last_event_id_is_always_forwarded():
    headers = upstream_headers(route(), client(("last-event-id", "41")))
    assert lowered(headers)["last-event-id"] == "41"


@pytest.mark.parametrize(
    "name", ["Connection", "Keep-Alive", "TE", "Transfer-Encoding", "Upgrade", "Host"]
)
def test_hop_by_hop_headers_are_never_forwarded(name):
    # The config refuses these in forward_headers; the builder holds the line anyway.
    route_ = route().model_copy(update={"forward_headers": [name]})
    headers = upstream_headers(route_, client((name, "x")))
    assert name.lower() not in lowered(headers)


def test_headers_named_in_the_clients_connection_header_are_not_forwarded():
    headers = upstream_headers(
        route(forward_headers=["X-Request-Id", "X-Tag"]),
        client(
            ("Connection", "keep-alive, X-Request-ID ,last-event-id"),
            ("X-Request-Id", "r1"),
            ("X-Tag", "t"),
            ("Last-Event-ID", "41"),
        ),
    )
    assert lowered(headers) == {"accept": UPSTREAM_ACCEPT, "x-tag": "t"}


def test_headers_named_in_a_second_connection_header_line_are_not_forwarded_either():
    # Connection is a list header: two field lines are one list (RFC 9110 5.3).
    headers = upstream_headers(
        route(forward_headers=["X-Request-Id"]),
        client(("Connection", "keep-alive"), ("Connection", "X-Request-Id"), ("X-Request-Id", "r")),
    )
    assert "x-request-id" not in lowered(headers)


def test_route_headers_override_forwarded_ones():
    headers = upstream_headers(
        route(forward_headers=["X-Request-Id"], headers={"X-Request-Id": "route"}),
        client(("X-Request-Id", "client")),
    )
    assert lowered(headers)["x-request-id"] == "route"


def test_route_headers_override_case_insensitively():
    headers = upstream_headers(
        route(
            forward_headers=["X-Request-Id"],
            headers={"accept": "application/x-ndjson", "x-request-id": "route"},
        ),
        client(("X-Request-Id", "client")),
    )
    assert lowered(headers) == {"accept": "application/x-ndjson", "x-request-id": "route"}


def test_route_headers_are_added():
    headers = upstream_headers(route(headers={"Authorization": "Bearer k"}), client())
    assert headers == {"Accept": UPSTREAM_ACCEPT, "Authorization": "Bearer k"}


# -- choose_framing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "framing"),
    [
        *[
            pytest.param(media_type, "ndjson", id=media_type)
            for media_type in sorted(NDJSON_MEDIA_TYPES)
        ],
        pytest.param(None, "ndjson", id="missing-content-type-is-ndjson"),
        pytest.param("application/x-ndjson; charset=utf-8", "ndjson", id="with-parameters"),
        pytest.param("Application/X-NDJSON", "ndjson", id="case-insensitive"),
        pytest.param("  application/jsonl ;charset=UTF-8", "ndjson", id="surrounding-space"),
        pytest.param("application/json-seq", "json-seq", id="json-seq"),
        pytest.param("text/event-stream", "sse", id="sse"),
        pytest.param("Text/Event-Stream; charset=utf-8", "sse", id="sse-with-parameters"),
        # A JSON label is not trusted to mean one document: the first line decides.
        pytest.param("application/json", "json-or-ndjson", id="json"),
        pytest.param("application/json; charset=utf-8", "json-or-ndjson", id="json-with-charset"),
        pytest.param("application/problem+json", "json-or-ndjson", id="suffix-json"),
        pytest.param("application/stream+json", "ndjson", id="stream-json-is-ndjson-not-json"),
    ],
)
def test_auto_framing_goes_by_content_type(content_type, framing):
    assert choose_framing("auto", content_type) == framing


@pytest.mark.parametrize("forced", ["ndjson", "json-seq", "sse", "json"])
@pytest.mark.parametrize("content_type", [None, "application/json", "text/html"])
def test_forced_framing_wins_over_content_type(forced, content_type):
    assert choose_framing(forced, content_type) == forced


@pytest.mark.parametrize(
    "content_type",
    ["text/html", "text/html; charset=utf-8", "text/plain", "application/octet-stream"],
)
def test_unsupported_content_type_is_a_502_that_says_how_to_fix_it(content_type):
    with pytest.raises(UpstreamFailure) as caught:
        choose_framing("auto", content_type)
    assert caught.value.status == 502
    assert caught.value.code == "unsupported_content_type"
    assert repr(content_type.split(";")[0]) in caught.value.message
    assert "framing: ndjson" in caught.value.message


# -- client_wants_ndjson ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "wants"),
    [
        pytest.param("application/x-ndjson", True, id="ndjson"),
        pytest.param("application/jsonl", True, id="jsonl"),
        pytest.param("Application/X-NDJSON; q=1", True, id="case-and-parameters"),
        pytest.param("application/json, application/x-ndjson", True, id="ndjson-in-a-list"),
        pytest.param("text/event-stream", False, id="sse"),
        pytest.param("text/event-stream, application/x-ndjson", False, id="sse-wins"),
        pytest.param("application/x-ndjson, text/event-stream;q=0.1", False, id="sse-wins-2"),
        pytest.param("*/*", False, id="anything"),
        pytest.param("", False, id="empty"),
        pytest.param("application/json", False, id="json"),
    ],
)
def test_client_wants_ndjson_only_when_it_asks_for_it_and_not_for_sse(accept, wants):
    assert client_wants_ndjson(accept) is wants
