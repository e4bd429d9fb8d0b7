"""End to end over real sockets: what the gateway sends upstream and what the client gets back."""

from __future__ import annotations

import asyncio
import gzip
import socket
from urllib.parse import quote

import orjson
import pytest
from aiohttp import web
from yarl import URL

from proxy.sse import SSEEvent, SSERetry
from tests.support.sse import parse_all, parse_events
from tests.support.upstreams import Seen, ndjson_handler, recorded

LINES = [b'{"n": 1}\n', b'{"n": 2}\n']
ANY_PATH = "/{tail:[\\s\\S]*}"  # every path, even one with CR/LF in it


async def test_get_query_becomes_json_body_with_defaults_underneath(
    start_upstream, start_gateway, http
):
    seen: list[Seen] = []
    upstream = await start_upstream({"/chat": recorded(ndjson_handler(LINES), seen)})
    gateway = await start_gateway(
        [
            {
                "path": "/chat",
                "upstream": upstream + "/chat",
                "body": {"defaults": {"stream": True, "model": "m", "options": {"a": 1, "b": 2}}},
            }
        ]
    )
    nested = quote(orjson.dumps({"options": {"b": 3}, "messages": [{"role": "user"}]}).decode())
    async with http.get(f"{gateway}/chat?model=x&tag=a&tag=b&body={nested}") as response:
        assert response.status == 200
        await response.read()
    assert seen[0].method == "POST"
    assert seen[0].headers["Content-Type"] == "application/json"
    assert seen[0].body == {
        "stream": True,
        "model": "x",
        "tag": ["a", "b"],
        "options": {"a": 1, "b": 3},
        "messages": [{"role": "user"}],
    }


async def test_post_json_object_is_merged_over_defaults(start_upstream, start_gateway, http):
    seen: list[Seen] = []
    upstream = await start_upstream({"/chat": recorded(ndjson_handler(LINES), seen)})
    gateway = await start_gateway(
        [{"path": "/chat", "upstream": upstream + "/chat", "body": {"defaults": {"stream": True}}}]
    )
    async with http.post(
        f"{gateway}/chat", data=b'{"stream": false, "q": [1, {"x": null}]}'
    ) as response:
        assert response.status == 200
        assert parse_events(await response.read())[0].data == '{"n": 1}'
    assert [request.body for request in seen] == [{"stream": False, "q": [1, {"x": None}]}]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        pytest.param(b"[1, 2]", "not_an_object", id="array"),
        pytest.param(b'"text"', "not_an_object", id="string"),
        pytest.param(b"{nope", "invalid_json", id="not-json"),
    ],
)
async def test_post_body_that_is_not_a_json_object_gets_400_json(
    start_upstream, start_gateway, http, body, code
):
    seen: list[Seen] = []
    upstream = await start_upstream({"/chat": recorded(ndjson_handler(LINES), seen)})
    gateway = await start_gateway([{"path": "/chat", "upstream": upstream + "/chat"}])
    async with http.post(f"{gateway}/chat", data=body) as response:
        assert response.status == 400
        assert response.content_type == "application/json"
        error = (await response.json())["error"]
    assert error["code"] == code
    assert error["message"]
    assert seen == []  # no upstream request was made


async def test_get_body_param_that_is_not_an_object_gets_400(start_upstream, start_gateway, http):
    upstream = await start_upstream({"/chat": ndjson_handler(LINES)})
    gateway = await start_gateway([{"path": "/chat", "upstream": upstream + "/chat"}])
    async with http.get(f"{gateway}/chat?body=%5B1%5D") as response:
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "not_an_object"


async def test_post_body_over_the_limit_gets_413(start_upstream, start_gateway, http):
    upstream = await start_upstream({"/chat": ndjson_handler(LINES)})
    gateway = await start_gateway(
        [{"path": "/chat", "upstream": upstream + "/chat", "limits": {"max_body_bytes": 100}}]
    )
    async with http.post(f"{gateway}/chat", data=b'{"a": "' + b"x" * 200 + b'"}') as response:
        assert response.status == 413
        assert (await response.json())["error"]["code"] == "body_too_large"


async def test_route_headers_are_added_listed_ones_forwarded_and_hop_by_hop_ones_never(
    start_upstream, start_gateway, http
):
    seen: list[Seen] = []
    upstream = await start_upstream({"/chat": recorded(ndjson_handler(LINES), seen)})
    gateway = await start_gateway(
        [
            {
                "path": "/chat",
                "upstream": upstream + "/chat",
                "headers": {"X-Api-Key": "${API_KEY}", "X-Team": "${TEAM:-core}"},
                "forward_headers": ["X-Request-Id", "X-Trace"],
            }
        ],
        environ={"API_KEY": "s3cret"},
    )
    headers = {
        "X-Request-Id": "req-1",
        "X-Trace": "t",
        "X-Other": "not forwarded",
        "Connection": "keep-alive, X-Trace",
        "Last-Event-ID": "41",
    }
    async with http.get(f"{gateway}/chat", headers=headers) as response:
        await response.read()
    got = seen[0].headers
    assert got["X-Api-Key"] == "s3cret"
    assert got["X-Team"] == "core"
    assert got["X-Request-Id"] == "req-1"
    assert got["Last-Event-ID"] == "41"
    assert "X-Trace" not in got  # named in the client's Connection header: hop-by-hop
    assert "X-Other" not in got
    assert "text/event-stream" not in got["Accept"].split(",")[0]
    assert "application/x-ndjson" in got["Accept"]


async def test_last_event_id_goes_into_the_body_when_the_route_says_so(
    start_upstream, start_gateway, http
):
    seen: list[Seen] = []
    upstream = await start_upstream({"/chat": recorded(ndjson_handler(LINES), seen)})
    gateway = await start_gateway(
        [
            {
                "path": "/chat",
                "upstream": upstream + "/chat",
                "body": {"last_event_id": "resume_after"},
            }
        ]
    )
    async with http.get(f"{gateway}/chat?q=1", headers={"Last-Event-ID": "7"}) as response:
        await response.read()
    assert [request.body for request in seen] == [{"q": "1", "resume_after": "7"}]


@pytest.mark.parametrize(
    ("client_path", "upstream_raw_path"),
    [
        pytest.param("/u/alice", "/base/alice/stream", id="plain"),
        pytest.param("/u/a%3Fb%23c", "/base/a%3Fb%23c/stream", id="query-and-fragment"),
        pytest.param("/u/%0d%0aX-Evil:%201", "/base/%0D%0AX-Evil%3A%201/stream", id="crlf"),
        pytest.param("/u/%25252e", "/base/%25252e/stream", id="percent-stays-encoded"),
    ],
)
async def test_path_variable_is_exactly_one_upstream_path_segment(
    start_upstream, start_gateway, http, client_path, upstream_raw_path
):
    seen: list[Seen] = []
    upstream = await start_upstream({ANY_PATH: recorded(ndjson_handler(LINES), seen)})
    gateway = await start_gateway(
        [{"path": "/u/{name}", "upstream": upstream + "/base/{name}/stream"}]
    )
    async with http.get(URL(gateway + client_path, encoded=True)) as response:
        assert response.status == 200
        await response.read()
    assert seen[0].raw_path == upstream_raw_path


@pytest.mark.parametrize("client_path", ["/u/..", "/u/.", "/u/..%2F..%2Fadmin", "/u/%2e%2e"])
async def test_path_variable_with_a_dot_segment_is_refused_before_any_upstream_request(
    start_upstream, start_gateway, http, client_path
):
    seen: list[Seen] = []
    upstream = await start_upstream({ANY_PATH: recorded(ndjson_handler(LINES), seen)})
    gateway = await start_gateway(
        [{"path": "/u/{name}", "upstream": upstream + "/base/{name}/stream"}]
    )
    async with http.get(URL(gateway + client_path, encoded=True)) as response:
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "invalid_path"
    assert seen == []


async def test_unreachable_upstream_is_502_json(start_gateway, http):
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    gateway = await start_gateway([{"path": "/chat", "upstream": f"http://127.0.0.1:{port}/x"}])
    async with http.get(f"{gateway}/chat") as response:
        assert response.status == 502
        error = (await response.json())["error"]
    assert error["code"] == "upstream_unreachable"
    assert error["upstream_status"] is None


async def test_connect_timeout_is_504_json(start_gateway, http):
    # A listener that never accepts, with its backlog full: further SYNs go unanswered.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    try:
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(listener.getsockname())
            fillers.append(filler)
        await asyncio.sleep(0.1)
        port = listener.getsockname()[1]
        gateway = await start_gateway(
            [
                {
                    "path": "/chat",
                    "upstream": f"http://127.0.0.1:{port}/x",
                    "timeouts": {"connect": 0.5},
                }
            ]
        )
        started = asyncio.get_running_loop().time()
        async with http.get(f"{gateway}/chat") as response:
            assert response.status == 504
            error = (await response.json())["error"]
        assert error["code"] == "upstream_timeout"
        assert asyncio.get_running_loop().time() - started < 5
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


@pytest.mark.parametrize("status", [400, 401, 404, 429, 500, 503])
async def test_upstream_error_status_is_mirrored_with_json_body(
    start_upstream, start_gateway, http, status
):
    async def failing(request: web.Request) -> web.Response:
        return web.json_response({"error": f"model says no ({status})"}, status=status)

    upstream = await start_upstream({"/chat": failing})
    gateway = await start_gateway([{"path": "/chat", "upstream": upstream + "/chat"}])
    async with http.get(f"{gateway}/chat") as response:
        assert response.status == status
        assert response.content_type == "application/json"
        error = (await response.json())["error"]
    assert error["code"] == "upstream_status"
    assert error["upstream_status"] == status
    assert f"model says no ({status})" in error["message"]


async def test_upstream_silent_before_headers_is_504(start_upstream, start_gateway, http):
    async def silent(request: web.Request) -> web.Response:
        await asyncio.sleep(10)
        return web.Response()

    upstream = await start_upstream({"/chat": silent})
    gateway = await start_gateway(
        [{"path": "/chat", "upstream": upstream + "/chat", "timeouts": {"read": 0.3}}]
    )
    async with http.get(f"{gateway}/chat") as response:
        assert response.status == 504
        assert (await response.json())["error"]["code"] == "upstream_timeout"


async def test_unknown_path_and_method_get_json_errors(start_upstream, start_gateway, http):
    upstream = await start_upstream({"/chat": ndjson_handler(LINES)})
    gateway = await start_gateway(
        [{"path": "/chat", "upstream": upstream + "/chat", "methods": ["GET"]}]
    )
    async with http.get(f"{gateway}/nowhere") as response:
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "not_found"
    async with http.post(f"{gateway}/chat", data=b"{}") as response:
        assert response.status == 405
        assert response.headers["Allow"] == "GET"
        assert (await response.json())["error"]["code"] == "method_not_allowed"


async def test_sse_response_headers_are_set_and_never_compressed(
    start_upstream, start_gateway, http
):
    upstream = await start_upstream({"/chat": ndjson_handler(LINES)})
    gateway = await start_gateway([{"path": "/chat", "upstream": upstream + "/chat"}])
    async with http.get(
        f"{gateway}/chat", headers={"Accept-Encoding": "gzip, deflate, br"}
    ) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        assert response.headers["Cache-Control"] == "no-cache"
        assert response.headers["X-Accel-Buffering"] == "no"
        assert "Content-Encoding" not in response.headers
        raw = await response.read()
    assert raw == (
        b'retry: 3000\n\nid: 1\ndata: {"n": 1}\n\nid: 2\ndata: {"n": 2}\n\nevent: end\ndata:\n\n'
    )


async def test_json_pointer_routes_pick_event_id_and_data(start_upstream, start_gateway, http):
    lines = [
        b'{"type": "ADDED", "object": {"name": "a"}, "rv": 10}\n',
        b'{"type": "DELETED", "object": {"name": "b"}, "rv": "11"}\n',
    ]
    upstream = await start_upstream({"/watch": ndjson_handler(lines, "application/json")})
    gateway = await start_gateway(
        [
            {
                "path": "/watch",
                "upstream": upstream + "/watch",
                "framing": "ndjson",
                "events": {
                    "event_from": "/type",
                    "id": "/rv",
                    "data": "/object/name",
                    "retry": None,
                },
            }
        ]
    )
    async with http.get(f"{gateway}/watch") as response:
        raw = await response.read()
    assert raw == (
        b"id: 10\nevent: ADDED\ndata: a\n\nid: 11\nevent: DELETED\ndata: b\n\nevent: end\ndata:\n\n"
    )


async def test_bad_line_gives_error_event_with_line_number_and_stream_goes_on(
    start_upstream, start_gateway, http
):
    lines = [
        b'{"message": {"content": "a"}}\n',
        b"\n",
        b"not json\n",
        b'{"other": 1}\n',
        b'{"message": {"content": "b"}}\n',
    ]
    upstream = await start_upstream({"/chat": ndjson_handler(lines)})
    gateway = await start_gateway(
        [{"path": "/chat", "upstream": upstream + "/chat", "events": {"data": "/message/content"}}]
    )
    async with http.get(f"{gateway}/chat") as response:
        events = parse_events(await response.read())
    assert [(e.event, e.data) for e in events if e.event != "error"] == [
        ("message", "a"),
        ("message", "b"),
        ("end", ""),
    ]
    errors = [orjson.loads(e.data) for e in events if e.event == "error"]
    assert [(e["code"], e["line"]) for e in errors] == [
        ("invalid_json", 3),
        ("pointer_not_found", 4),
    ]
    assert all(f"line {e['line']}" in e["message"] for e in errors)


async def test_upstream_values_cannot_forge_sse_framing(start_upstream, start_gateway, http):
    lines = [
        orjson.dumps(
            {
                "type": "x\r\nevent: forged\r\n\r\ndata: evil",
                "id": "1\n\nid: 9",
                "text": "a\r\nb\rc\n\ndata: d",
            }
        )
        + b"\n",
        b"raw\rline: with CR\n",
    ]
    upstream = await start_upstream(
        {"/a": ndjson_handler(lines[:1]), "/b": ndjson_handler(lines[1:])}
    )
    gateway = await start_gateway(
        [
            {
                "path": "/a",
                "upstream": upstream + "/a",
                "events": {"event_from": "/type", "id": "/id", "data": "/text"},
            },
            {"path": "/b", "upstream": upstream + "/b"},
        ]
    )
    async with http.get(f"{gateway}/a") as response:
        events = parse_events(await response.read())
    assert events[0] == SSEEvent(
        data="a\nb\nc\n\ndata: d", event="xevent: forgeddata: evil", id="1id: 9"
    )
    assert [e.event for e in events] == ["xevent: forgeddata: evil", "end"]
    async with http.get(f"{gateway}/b") as response:
        raw = await response.read()
    assert b"id: 1\ndata: raw\ndata: line: with CR\n\n" in raw
    assert [e.data for e in parse_events(raw)] == ["raw\nline: with CR", ""]


async def test_accept_ndjson_gets_the_upstream_bytes_untouched(start_upstream, start_gateway, http):
    lines = [b'{"a": 1}\r\n', b"\n", b'{"b": "\xc3\xa9"}\n', b"tail-without-newline"]
    upstream = await start_upstream({"/chat": ndjson_handler(lines)})
    gateway = await start_gateway([{"path": "/chat", "upstream": upstream + "/chat"}])
    async with http.get(f"{gateway}/chat", headers={"Accept": "application/x-ndjson"}) as response:
        assert response.content_type == "application/x-ndjson"
        assert await response.read() == b"".join(lines)
    async with http.get(
        f"{gateway}/chat", headers={"Accept": "text/event-stream, application/x-ndjson"}
    ) as response:
        assert response.content_type == "text/event-stream"


async def test_upstream_sse_is_passed_through_reframed(start_upstream, start_gateway, http):
    body = [
        b"retry: 500\n\n",
        b": upstream ping\n\nid: u1\nevent: token\ndata: a\r\n",
        b"data: b\r\n\r\ndata: c\n\n",
    ]
    upstream = await start_upstream({"/sse": ndjson_handler(body, "text/event-stream")})
    gateway = await start_gateway(
        [{"path": "/sse", "upstream": upstream + "/sse", "events": {"retry": None}}]
    )
    async with http.get(f"{gateway}/sse") as response:
        items = parse_all(await response.read())
    assert items == [
        SSERetry(500),
        SSEEvent(data="a\nb", event="token", id="u1"),
        SSEEvent(data="c", event="message", id="u1"),
        SSEEvent(data="", event="end", id="u1"),
    ]


async def test_upstream_json_document_becomes_one_event_then_end(
    start_upstream, start_gateway, http
):
    async def document(request: web.Request) -> web.Response:
        return web.json_response({"message": {"content": "whole answer"}, "done": True})

    upstream = await start_upstream({"/chat": document})
    gateway = await start_gateway(
        [{"path": "/chat", "upstream": upstream + "/chat", "events": {"data": "/message/content"}}]
    )
    async with http.get(f"{gateway}/chat") as response:
        events = parse_events(await response.read())
    assert [(e.event, e.data) for e in events] == [("message", "whole answer"), ("end", "")]


async def test_upstream_html_page_is_a_502_that_says_how_to_fix_it(
    start_upstream, start_gateway, http
):
    async def html(request: web.Request) -> web.Response:
        return web.Response(text="<h1>Login</h1>", content_type="text/html")

    upstream = await start_upstream({"/chat": html})
    gateway = await start_gateway([{"path": "/chat", "upstream": upstream + "/chat"}])
    async with http.get(f"{gateway}/chat") as response:
        assert response.status == 502
        error = (await response.json())["error"]
    assert error["code"] == "unsupported_content_type"
    assert "framing: ndjson" in error["message"]


async def test_gzip_encoded_ndjson_is_decoded(start_upstream, start_gateway, http):
    async def gzipped(request: web.Request) -> web.Response:
        return web.Response(
            body=gzip.compress(b'{"n": 1}\n{"n": 2}\n'),
            headers={"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"},
        )

    upstream = await start_upstream({"/chat": gzipped})
    gateway = await start_gateway([{"path": "/chat", "upstream": upstream + "/chat"}])
    async with http.get(f"{gateway}/chat") as response:
        events = parse_events(await response.read())
    assert [e.data for e in events] == ['{"n": 1}', '{"n": 2}', ""]


async def test_jsonl_and_stream_json_content_types_are_streams(start_upstream, start_gateway, http):
    upstream = await start_upstream(
        {
            "/jsonl": ndjson_handler(LINES, "application/jsonl"),
            "/spring": ndjson_handler(LINES, "application/stream+json;charset=UTF-8"),
            "/seq": ndjson_handler([b'\x1e{"n": 1}\n', b'\x1e{"n": 2}\n'], "application/json-seq"),
        }
    )
    gateway = await start_gateway(
        [
            {"path": f"/{name}", "upstream": f"{upstream}/{name}"}
            for name in ("jsonl", "spring", "seq")
        ]
    )
    for name in ("jsonl", "spring", "seq"):
        async with http.get(f"{gateway}/{name}") as response:
            events = parse_events(await response.read())
        assert [e.data for e in events] == ['{"n": 1}', '{"n": 2}', ""], name


async def test_invalid_utf8_and_binary_garbage_never_crash_a_stream(
    start_upstream, start_gateway, http
):
    lines = [
        b'{"t": "ok"}\n',
        b"\xff\xfe garbage \xc3(\x00\n",
        b'{"t": "bad \xe9"}\n',
        b'{"t": "after"}\n',
    ]
    upstream = await start_upstream({"/chat": ndjson_handler(lines)})
    gateway = await start_gateway(
        [
            {"path": "/line", "upstream": upstream + "/chat"},
            {"path": "/pointer", "upstream": upstream + "/chat", "events": {"data": "/t"}},
        ]
    )
    async with http.get(f"{gateway}/line") as response:
        raw = await response.read()
    raw.decode("utf-8")  # the event stream is always valid UTF-8
    assert [e.data for e in parse_events(raw)] == [
        '{"t": "ok"}',
        "\ufffd\ufffd garbage \ufffd(\x00",
        '{"t": "bad \ufffd"}',
        '{"t": "after"}',
        "",
    ]
    async with http.get(f"{gateway}/pointer") as response:
        events = parse_events(await response.read())
    assert [
        (e.event, e.data if e.event != "error" else orjson.loads(e.data)["code"]) for e in events
    ] == [
        ("message", "ok"),
        ("error", "invalid_json"),
        ("error", "invalid_json"),
        ("message", "after"),
        ("end", ""),
    ]


async def test_tail_placeholder_goes_upstream_as_a_path_with_each_segment_escaped(
    start_upstream, start_gateway, http
):
    seen: list[Seen] = []
    upstream = await start_upstream({ANY_PATH: recorded(ndjson_handler(LINES), seen)})
    gateway = await start_gateway(
        [{"path": "/models/{tail:.*}", "upstream": upstream + "/api/{tail}"}]
    )
    raw = "/models/a%20b/c%3Fd%23e/f%25g"
    async with http.get(URL(gateway + raw, encoded=True)) as response:
        assert response.status == 200
        await response.read()
    assert seen[0].raw_path == "/api/a%20b/c%3Fd%23e/f%25g"


@pytest.mark.parametrize(
    "raw_tail", ["a/../../admin", "..", "a/./b", "..%2F..%2Fadmin", "%2E%2E/x", "a/%2e%2e"]
)
async def test_tail_with_a_dot_segment_is_refused_before_any_upstream_request(
    start_upstream, start_gateway, http, raw_tail
):
    seen: list[Seen] = []
    upstream = await start_upstream({ANY_PATH: recorded(ndjson_handler(LINES), seen)})
    gateway = await start_gateway(
        [{"path": "/models/{tail:.*}", "upstream": upstream + "/api/{tail}"}]
    )
    async with http.get(URL(f"{gateway}/models/{raw_tail}", encoded=True)) as response:
        assert response.status == 400
        error = (await response.json())["error"]
    assert error["code"] == "invalid_path"
    assert seen == []


async def test_upstream_method_get_sends_the_body_as_its_query(start_upstream, start_gateway, http):
    seen: list[tuple[str, str, bytes]] = []

    async def watch(request: web.Request) -> web.StreamResponse:
        seen.append((request.method, request.query_string, await request.read()))
        return await ndjson_handler([b'{"type": "ADDED"}\n'], "application/json")(request)

    upstream = await start_upstream({"/watch": watch}, method="GET")
    gateway = await start_gateway(
        [
            {
                "path": "/pods",
                "upstream": upstream + "/watch?pretty=false",
                "upstream_method": "GET",
                "framing": "ndjson",
                "body": {
                    "defaults": {"watch": True, "limit": 5, "skip": None},
                    "last_event_id": "resourceVersion",
                },
            }
        ]
    )
    query = "labelSelector=app%3Dweb%26x&fieldSelector=a&fieldSelector=b"
    headers = {"Last-Event-ID": "12346"}
    async with http.get(f"{gateway}/pods?{query}", headers=headers) as response:
        events = parse_events(await response.read())
    assert seen == [
        (
            "GET",
            "pretty=false&watch=true&limit=5&labelSelector=app%3Dweb%26x"
            "&fieldSelector=a&fieldSelector=b&resourceVersion=12346",
            b"",
        )
    ]
    assert [e.data for e in events] == ['{"type": "ADDED"}', ""]


async def test_complete_when_stream_ends_with_end_only_after_its_terminal_line(
    start_upstream, start_gateway, http
):
    whole = [b'{"t": "a", "done": false}\n', b'{"t": "", "done": true}\n']
    cut = whole[:1]
    upstream = await start_upstream({"/whole": ndjson_handler(whole), "/cut": ndjson_handler(cut)})
    events_config = {"data": "/t", "complete_when": "/done"}
    gateway = await start_gateway(
        [
            {"path": "/whole", "upstream": upstream + "/whole", "events": events_config},
            {"path": "/cut", "upstream": upstream + "/cut", "events": events_config},
        ]
    )
    async with http.get(f"{gateway}/whole") as response:
        whole_events = parse_events(await response.read())
    async with http.get(f"{gateway}/cut") as response:
        cut_events = parse_events(await response.read())
    assert [(e.event, e.data) for e in whole_events] == [
        ("message", "a"),
        ("message", ""),
        ("end", ""),
    ]
    assert [e.event for e in cut_events] == ["message", "error"]
    error = orjson.loads(cut_events[-1].data)
    assert error["code"] == "incomplete"
    assert "/done" in error["message"]


async def test_sequence_ids_go_on_after_a_reconnect(start_upstream, start_gateway, http):
    upstream = await start_upstream({"/chat": ndjson_handler(LINES)})
    gateway = await start_gateway([{"path": "/chat", "upstream": upstream + "/chat"}])
    async with http.get(f"{gateway}/chat", headers={"Last-Event-ID": "41"}) as response:
        events = parse_events(await response.read())
    assert [e.id for e in events] == ["42", "43", "43"]  # the end event keeps the last id


async def test_injected_secrets_echoed_in_an_upstream_error_never_reach_the_client(
    start_upstream, start_gateway, http
):
    async def echoing_401(request: web.Request) -> web.Response:
        token = request.headers["Authorization"].removeprefix("Bearer ")
        message = f"Incorrect API key provided: {token}. Header was {request.headers['X-Key']}"
        return web.json_response({"error": {"message": message}}, status=401)

    upstream = await start_upstream({"/v1/chat": echoing_401})
    gateway = await start_gateway(
        [
            {
                "path": "/chat",
                "upstream": upstream + "/v1/chat",
                "headers": {"Authorization": "Bearer sk-live-0123456789", "X-Key": "k-42"},
            }
        ]
    )
    async with http.post(f"{gateway}/chat", json={}) as response:
        assert response.status == 401
        text = await response.text()
    assert "0123456789" not in text
    assert "k-42" not in text
    assert orjson.loads(text)["error"]["message"] == (
        "the upstream answered 401 Unauthorized: "
        "Incorrect API key provided: [redacted]. Header was [redacted]"
    )
