"""What a hostile client (or a careless upstream) can and cannot make the gateway do: reach
another upstream path or host, smuggle hop-by-hop headers, read the route's injected secrets, or
break the gateway with oversized requests.

Requests that an HTTP library would tidy up (``..`` segments, a raw ``#``, an absolute-form target,
a 100 KB header) are written on a raw socket, byte for byte. The upstream is
:class:`tests.support.raw_upstream.FaultUpstream`, which records each request line's target exactly as it
arrived.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import orjson
import pytest
from yarl import URL

from proxy import parse_config
from proxy.errors import ConfigError
from tests.support.raw_upstream import (
    Close,
    FaultUpstream,
    RecordedRequest,
    Send,
    Step,
    head,
    ndjson_script,
)
from tests.support.sse import parse_events

LINES = (b'{"n": 1}\n', b'{"n": 2}\n')
NORMAL_EVENTS = [("message", '{"n": 1}'), ("message", '{"n": 2}'), ("end", "")]


# -- a raw HTTP/1.1 client ---------------------------------------------------------------------------


@dataclass
class RawAnswer:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    raw: bytes = field(repr=False)

    def header(self, name: str) -> str | None:
        found = [value for key, value in self.headers if key.lower() == name.lower()]
        return ", ".join(found) if found else None

    @property
    def error(self) -> dict[str, Any]:
        assert self.header("Content-Type") == "application/json; charset=utf-8", self
        return orjson.loads(self.body)["error"]

    @property
    def events(self) -> list[tuple[str, str]]:
        assert self.status == 200, self
        return [
            (e.event, orjson.loads(e.data)["code"] if e.event == "error" else e.data)
            for e in parse_events(self.body)
        ]


async def raw_request(
    gateway: str,
    target: str | bytes,
    headers: Sequence[tuple[str, str]] = (),
    *,
    method: str = "GET",
    body: bytes = b"",
    host: bool = True,
) -> RawAnswer:
    """One request on its own connection (``Connection: close`` is added), read until the answer
    is whole (a server may linger after it, reading what the client still sends)."""
    url = URL(gateway)
    lines = [method.encode() + b" " + (target if isinstance(target, bytes) else target.encode())]
    lines[0] += b" HTTP/1.1"
    if host:
        lines.append(f"Host: {url.host}:{url.port}".encode())
    names = {name.lower() for name, _ in headers}
    lines += [f"{name}: {value}".encode("latin-1") for name, value in headers]
    if "connection" not in names:
        lines.append(b"Connection: close")
    if body and "content-length" not in names and "transfer-encoding" not in names:
        lines.append(b"Content-Length: %d" % len(body))
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        raw = b""
        async with asyncio.timeout(10):
            while not is_whole(raw) and (chunk := await reader.read(65536)):
                raw += chunk
    finally:
        writer.close()
    return parse_answer(raw)


def is_whole(raw: bytes) -> bool:
    if b"\r\n\r\n" not in raw:
        return False
    answer = parse_answer(raw)
    if (length := answer.header("Content-Length")) is not None:
        return len(answer.body) >= int(length)
    return (answer.header("Transfer-Encoding") or "").lower() == "chunked" and raw.endswith(
        b"\r\n0\r\n\r\n"
    )


def parse_answer(raw: bytes) -> RawAnswer:
    head_bytes, _, rest = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head_bytes.decode("latin-1").split("\r\n")
    _, status, reason = [*status_line.split(" ", 2), ""][:3]
    headers = [
        (name.strip(), value.strip())
        for name, _, value in (line.partition(":") for line in header_lines)
    ]
    answer = RawAnswer(int(status), reason, headers, rest, raw)
    if (answer.header("Transfer-Encoding") or "").lower() == "chunked":
        answer.body = dechunk(rest)
    elif (length := answer.header("Content-Length")) is not None:
        answer.body = rest[: int(length)]  # a short one stays short: is_whole() reads on
    return answer


def dechunk(data: bytes) -> bytes:
    body = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        body, data = body + data[:size], data[size + 2 :]
    return body


async def serves_a_normal_stream(gateway: str, path: str = "/chat") -> None:
    answer = await raw_request(gateway, path)
    assert answer.events == NORMAL_EVENTS


# -- SSRF: a path variable never leaves its place in the upstream URL --------------------------------

UNRESERVED = re.compile(r"%(2[dDeE]|3[0-9]|[46][1-9a-fA-F]|[57][0-9aA]|5[fF]|7[eE])")


def remove_dot_segments(path: str) -> str | None:
    """RFC 3986 5.2.4, except that climbing above the root gives None (nginx answers 400)."""
    output: list[str] = []
    segments = path.split("/")[1:]
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == ".":
            if last:
                output.append("")
        elif segment == "..":
            if not output:
                return None
            output.pop()
            if last:
                output.append("")
        else:
            output.append(segment)
    return "/" + "/".join(output)


def rfc3986_path(target: str) -> str | None:
    """The path as an RFC 3986 normalizer reads it (6.2.2.2: ``%2E`` *is* ``.``, an unreserved
    character; ``%2F`` stays data)."""
    return remove_dot_segments(UNRESERVED.sub(lambda m: unquote(m.group(0)), target))


def nginx_path(target: str) -> str | None:
    """The path as nginx 1.22 routes it (measured here with ``return 200 $uri``: it
    percent-decodes everything, ``%2F`` included, then removes dot segments and merges
    slashes)."""
    resolved = remove_dot_segments(unquote(target))
    return None if resolved is None else re.sub("/{2,}", "/", resolved)


@dataclass(frozen=True)
class SsrfRoute:
    client_prefix: str
    client_suffix: str
    rfc3986: re.Pattern[str]  # what the RFC-normalized upstream path must match
    nginx_prefix: str  # what nginx's view of it must start with


NAME_ROUTE = SsrfRoute("/models/", "/chat", re.compile(r"/api/[^/]+/stream"), "/api/")
TAIL_ROUTE = SsrfRoute("/files/", "", re.compile(r"/files/.*"), "/files/")

# Values as sent on the wire, raw (never re-encoded by a client library).
SSRF_PAYLOADS = {
    "dot-dot": "..",
    "dot": ".",
    "dot-dot-slashes": "../../admin",
    "encoded-slash": "%2F",
    "encoded-dot-dot-slashes": "..%2F..%2F",
    "encoded-dot-dot-slash-admin": "..%2Fadmin",
    "encoded-dots": "%2e%2e",
    "double-encoded-dots": "%252e%252e",
    "userinfo": "@evil.example",
    "fragment": "#frag",
    "query": "?x=1",
    "backslashes": "\\..\\",
    "crlf": "%0d%0aX-Injected:%201",
    "absolute-url": "http://evil.example/",
    "network-path": "//evil.example",
}
# Why a '.' or '..' segment is refused even percent-encoded: %2E is unreserved, so RFC 3986
# 6.2.2.2 makes it '.', and nginx 1.22 (measured) both resolves /api/%2E%2E/stream to /stream and
# decodes %2F before removing dot segments (/api/..%2Fadmin/stream routes as /admin/stream).


def ssrf_cases() -> list[Any]:
    cases = []
    for route_id, route in (("name", NAME_ROUTE), ("tail", TAIL_ROUTE)):
        for payload_id, payload in SSRF_PAYLOADS.items():
            target = route.client_prefix + payload + route.client_suffix
            cases.append(pytest.param(route, target, id=f"{route_id}-{payload_id}"))
    return cases


async def start_ssrf_gateway(start_gateway, upstream: FaultUpstream) -> str:
    base = upstream.url("")
    return await start_gateway(
        [
            {"path": "/models/{name}/chat", "upstream": base + "/api/{name}/stream"},
            {"path": "/files/{tail:.*}", "upstream": base + "/files/{tail}"},
        ]
    )


def assert_stayed_in_place(
    answer: RawAnswer, upstream: FaultUpstream, route: SsrfRoute, target: str
) -> None:
    """Refused (400 invalid_path, 404) with no upstream request, or exactly one upstream request,
    to the upstream's own host, whose path is still where the route's template put it."""
    if answer.status in (400, 404):
        assert answer.error["code"] == {400: "invalid_path", 404: "not_found"}[answer.status]
        assert upstream.requests == []
        return
    assert answer.status == 200, (answer.status, answer.body[:300])
    [request] = upstream.requests
    assert request.header("Host") == f"127.0.0.1:{upstream.port}"
    assert "?" not in request.target, request.target
    assert "#" not in request.target, request.target
    assert route.rfc3986.fullmatch(rfc3986_path(request.target) or ""), (target, request.target)
    assert (nginx_path(request.target) or "").startswith(route.nginx_prefix), (
        target,
        request.target,
        nginx_path(request.target),
    )


@pytest.mark.parametrize(("route", "target"), ssrf_cases())
async def test_a_path_variable_never_moves_the_upstream_request_out_of_its_place(
    start_gateway, route: SsrfRoute, target: str
):
    async with FaultUpstream(ndjson_script(*LINES)) as upstream:
        gateway = await start_ssrf_gateway(start_gateway, upstream)
        answer = await raw_request(gateway, target)
        assert_stayed_in_place(answer, upstream, route, target)


@pytest.mark.parametrize(
    "target",
    [
        pytest.param("http://evil.example/models/x/chat", id="absolute-form"),
        pytest.param("http://evil.example:80/files/x", id="absolute-form-with-port"),
        pytest.param("//evil.example/models/x/chat", id="network-path-target"),
        pytest.param("//evil.example/files/x", id="network-path-target-tail"),
    ],
)
async def test_the_request_targets_host_never_becomes_the_upstreams(start_gateway, target: str):
    async with FaultUpstream(ndjson_script(*LINES)) as upstream:
        gateway = await start_ssrf_gateway(start_gateway, upstream)
        answer = await raw_request(gateway, target)
        route = TAIL_ROUTE if "/files/" in target else NAME_ROUTE
        assert_stayed_in_place(answer, upstream, route, target)


async def test_a_foreign_host_header_never_becomes_the_upstreams_host(start_gateway):
    async with FaultUpstream(ndjson_script(*LINES)) as upstream:
        gateway = await start_gateway([{"path": "/chat", "upstream": upstream.url("/chat")}])
        headers = [("Host", "evil.example"), ("X-Forwarded-Host", "evil.example")]
        answer = await raw_request(gateway, "/chat", headers, host=False)
        assert answer.events == NORMAL_EVENTS
    [request] = upstream.requests
    assert request.header("Host") == f"127.0.0.1:{upstream.port}"
    assert request.header("X-Forwarded-Host") is None


# -- headers: hop-by-hop never crosses, Host is the upstream's ------------------------------------

HOP_BY_HOP = [
    "Connection",
    "Keep-Alive",
    "TE",
    "Trailer",
    "Transfer-Encoding",
    "Upgrade",
    "Proxy-Authorization",
    "Proxy-Authenticate",
    "Proxy-Connection",
    "Host",
    "Content-Length",
]


@pytest.mark.parametrize("name", HOP_BY_HOP)
def test_a_hop_by_hop_header_in_forward_headers_is_a_config_error(name: str):
    text = orjson.dumps(
        {"routes": [{"path": "/c", "upstream": "http://u/", "forward_headers": ["X-Ok", name]}]}
    ).decode()
    with pytest.raises(ConfigError) as error:
        parse_config(text, {})
    assert str(error.value) == (
        f"routes[0].forward_headers: {name} is a hop-by-hop header and is never forwarded"
    )


NEVER_UPSTREAM = {
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-connection",
    "x-hop",
    "http2-settings",
}


@pytest.mark.parametrize(
    ("method", "extra", "body"),
    [
        pytest.param("GET", [], b"", id="get"),
        pytest.param(
            "POST",
            [("Transfer-Encoding", "chunked"), ("Content-Type", "application/json")],
            b'a\r\n{"q": "x"}\r\n0\r\n\r\n',
            id="post-chunked",
        ),
    ],
)
async def test_hop_by_hop_headers_never_reach_the_upstream(
    start_gateway, method: str, extra: list[tuple[str, str]], body: bytes
):
    async with FaultUpstream(ndjson_script(*LINES)) as upstream:
        gateway = await start_gateway(
            [
                {
                    "path": "/chat",
                    "upstream": upstream.url("/chat"),
                    "forward_headers": ["X-Request-Id", "X-Hop", "HTTP2-Settings"],
                }
            ]
        )
        headers = [
            ("Connection", "close, X-Hop, Upgrade, HTTP2-Settings"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Trailer", "X-Checksum"),
            ("Upgrade", "h2c"),
            ("HTTP2-Settings", "AAMAAABkAAQAoAAAAAIAAAAA"),
            ("Proxy-Authorization", "Basic cHJveHk6c2VjcmV0"),
            ("Proxy-Connection", "keep-alive"),
            ("X-Hop", "named in Connection"),
            ("X-Request-Id", "req-7"),
            *extra,
        ]
        answer = await raw_request(gateway, "/chat", headers, method=method, body=body)
        assert answer.events == NORMAL_EVENTS
    [request] = upstream.requests
    names = {name.lower() for name, _ in request.headers}
    assert names & NEVER_UPSTREAM == set()
    # Listed in forward_headers, but named in Connection: hop-by-hop for this hop only.
    assert request.header("X-Hop") is None
    assert request.header("HTTP2-Settings") is None
    assert request.header("X-Request-Id") == "req-7"  # a listed end-to-end header does cross
    assert request.header("Host") == f"127.0.0.1:{upstream.port}"
    assert request.header("Transfer-Encoding") is None
    assert request.header("Connection") in (None, "keep-alive")  # the gateway's own, if any
    assert int(request.header("Content-Length") or 0) == len(request.body)
    expected_body = {"q": "x"} if method == "POST" else {}
    assert orjson.loads(request.body) == expected_body


# -- the route's secrets never reach the client -----------------------------------------------------

SECRET = "SECRET123456"
SECRET_HEADERS = {"Authorization": f"Bearer {SECRET}", "X-Api-Key": "KEY-abcdef987654"}
SECRET_WORDS = (SECRET, "KEY-abcdef987654")


def echoing(status_line_tail: str, more: list[Step] | None = None):
    """An upstream that answers with the injected credentials in its reason phrase, headers and
    body: what a careless API does on a bad key."""

    def script(request: RecordedRequest) -> list[Step]:
        token = (request.header("Authorization") or "").removeprefix("Bearer ")
        key = request.header("X-Api-Key") or ""
        status, _, reason = status_line_tail.format(token=token, key=key).partition(" ")
        body = orjson.dumps({"error": {"message": f"bad key {key}, token {token}"}})
        return [
            head(
                int(status),
                reason=reason,
                content_type="application/json",
                chunked=False,
                headers=[
                    ("Content-Length", str(len(body))),
                    ("WWW-Authenticate", f'Bearer error="invalid_token" token="{token}"'),
                    ("Location", f"http://127.0.0.1/login?token={token}"),
                    ("X-Echo", key),
                ],
            ),
            *(more or []),
            *([] if more else [Close()]),
        ]

    return script


@pytest.mark.parametrize(
    ("status_line", "status", "code"),
    [
        pytest.param("401 Unauthorized", 401, "upstream_status", id="json-body-echo"),
        pytest.param(
            "401 Bad token {token}",
            401,
            "upstream_status",
            id="reason-phrase-echo",
        ),
        pytest.param(
            "302 Found",
            502,
            "upstream_redirect",
            id="location-echo",
        ),
    ],
)
async def test_injected_secrets_echoed_by_the_upstream_never_reach_the_client_or_the_log(
    start_gateway, caplog, status_line: str, status: int, code: str
):
    caplog.set_level(logging.DEBUG, logger="proxy")
    async with FaultUpstream(echoing(status_line)) as upstream:
        gateway = await start_gateway(
            [{"path": "/chat", "upstream": upstream.url("/chat"), "headers": SECRET_HEADERS}]
        )
        answer = await raw_request(gateway, "/chat")
    assert upstream.requests[0].header("Authorization") == f"Bearer {SECRET}"  # it was sent
    assert (answer.status, answer.error["code"]) == (status, code)
    assert_nowhere(answer.raw, caplog)


async def test_injected_secrets_in_an_upstream_error_line_never_reach_the_client(
    start_gateway, caplog
):
    caplog.set_level(logging.DEBUG, logger="proxy")

    def script(request: RecordedRequest) -> list[Step]:
        token = (request.header("Authorization") or "").removeprefix("Bearer ")
        return ndjson_script(
            b'{"t": "a"}\n',
            orjson.dumps({"error": f"quota exceeded for key {token}"}) + b"\n",
            b'{"t": "b"}\n',
        )

    async with FaultUpstream(script) as upstream:
        gateway = await start_gateway(
            [
                {
                    "path": "/chat",
                    "upstream": upstream.url("/chat"),
                    "headers": SECRET_HEADERS,
                    "events": {"data": "/t", "error_from": "/error"},
                }
            ]
        )
        answer = await raw_request(gateway, "/chat")
    assert answer.events == [
        ("message", "a"),
        ("error", "upstream_error"),
        ("message", "b"),
        ("end", ""),
    ]
    assert_nowhere(answer.raw, caplog)


async def test_injected_secrets_never_reach_the_client_of_a_normal_stream_or_the_log(
    start_gateway, caplog
):
    caplog.set_level(logging.DEBUG, logger="proxy")
    script = [
        head(headers=[("X-Echo", SECRET), ("Set-Cookie", f"k={SECRET}")]),
        *ndjson_script(*LINES)[1:],
    ]
    async with FaultUpstream(script) as upstream:
        gateway = await start_gateway(
            [{"path": "/chat", "upstream": upstream.url("/chat"), "headers": SECRET_HEADERS}]
        )
        answer = await raw_request(gateway, "/chat?q=1")
    assert answer.events == NORMAL_EVENTS
    assert_nowhere(answer.raw, caplog)
    assert any(record.name == "proxy.access" for record in caplog.records)  # it did log


@pytest.mark.parametrize(
    "upstream_template",
    [
        pytest.param("http://user:{secret}@127.0.0.1:{port}/chat", id="userinfo"),
        pytest.param(
            "http://127.0.0.1:{port}/chat?key={secret}",
            id="query",
        ),
    ],
)
async def test_a_credential_in_the_upstream_url_never_reaches_the_client(
    start_gateway, caplog, upstream_template: str
):
    caplog.set_level(logging.DEBUG, logger="proxy")
    async with FaultUpstream([Send(b"SSH-2.0-OpenSSH_9.2\r\n"), Close()]) as upstream:
        url = upstream_template.format(secret=SECRET, port=upstream.port)
        gateway = await start_gateway([{"path": "/chat", "upstream": url}])
        answer = await raw_request(gateway, "/chat")
    assert (answer.status, answer.error["code"]) == (502, "upstream_error")
    assert_nowhere(answer.raw, caplog)


def assert_nowhere(raw: bytes, caplog: pytest.LogCaptureFixture) -> None:
    logged = "\n".join(
        f"{record.getMessage()} {record.__dict__}"
        for record in caplog.records
        if record.name.startswith("proxy")
    )
    for secret in SECRET_WORDS:
        assert secret.encode() not in raw, raw
        assert secret not in logged


# -- request limits: refused with JSON, and the gateway serves on -----------------------------------


@pytest.fixture
async def plain_gateway(start_gateway):
    upstream = FaultUpstream(ndjson_script(*LINES))
    async with upstream:
        gateway = await start_gateway(
            [
                {
                    "path": "/chat",
                    "upstream": upstream.url("/chat"),
                    "methods": ["GET", "POST"],
                    "limits": {"max_body_bytes": 1000},
                }
            ]
        )
        yield gateway, upstream


def chunked(body: bytes, size: int = 100) -> bytes:
    return (
        b"".join(
            b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size])
            for i in range(0, len(body), size)
        )
        + b"0\r\n\r\n"
    )


BIG_BODY = b'{"a": "' + b"x" * 2000 + b'"}'


@pytest.mark.parametrize(
    ("method", "target", "headers", "body", "status", "code"),
    [
        pytest.param("POST", "/chat", [], BIG_BODY, 413, "body_too_large", id="content-length"),
        pytest.param(
            "POST",
            "/chat",
            [("Transfer-Encoding", "chunked")],
            chunked(BIG_BODY),
            413,
            "body_too_large",
            id="chunked-without-length",
        ),
        pytest.param(
            "POST",
            "/chat",
            [("Content-Length", "5000000")],
            b'{"a": 1}',
            413,
            "body_too_large",
            id="announced-length-alone",
        ),
        pytest.param(
            "GET",
            "/chat?body=" + "%22" + "x" * 2000 + "%22",
            [],
            b"",
            413,
            "body_too_large",
            id="query-body",
        ),
        pytest.param("POST", "/chat", [], b"[1]", 400, "not_an_object", id="array"),
        pytest.param("POST", "/chat", [], b"null", 400, "not_an_object", id="null"),
        pytest.param("POST", "/chat", [], b"{oops", 400, "invalid_json", id="not-json"),
        pytest.param("POST", "/chat", [], b'{"a": "\xff"}', 400, "invalid_json", id="bad-utf8"),
        pytest.param("GET", "/chat?body=5", [], b"", 400, "not_an_object", id="query-number"),
        pytest.param("GET", "/nowhere", [], b"", 404, "not_found", id="unknown-route"),
        pytest.param("DELETE", "/chat", [], b"", 405, "method_not_allowed", id="delete"),
        pytest.param("PUT", "/chat", [], b"{}", 405, "method_not_allowed", id="put"),
    ],
)
async def test_a_refused_request_gets_its_json_error_and_the_gateway_serves_on(
    plain_gateway, method, target, headers, body, status, code
):
    gateway, upstream = plain_gateway
    answer = await raw_request(gateway, target, headers, method=method, body=body)
    assert (answer.status, answer.error["code"]) == (status, code)
    assert answer.error["message"]
    if status == 405:
        assert answer.header("Allow") == "GET,POST"
    assert upstream.requests == []  # refused before any upstream request
    await serves_a_normal_stream(gateway)


OVERSIZED = [
    pytest.param("/chat?q=" + "x" * 100_000, [], 414, "uri_too_long", id="100-kb-query-string"),
    pytest.param(
        "/chat", [("X-Big", "x" * 100_000)], 431, "header_fields_too_large", id="100-kb-header"
    ),
    pytest.param(
        "/chat",
        [(f"X-Many-{n}", "v") for n in range(200)],
        431,
        "header_fields_too_large",
        id="200-headers",
    ),
]


@pytest.mark.parametrize(("target", "headers", "status", "code"), OVERSIZED)
async def test_an_oversized_request_head_gets_a_json_error_and_the_gateway_serves_on(
    plain_gateway, target, headers, status, code
):
    # aiohttp's parser refuses these before any handler or middleware runs (max_line_size and
    # max_field_size 8190, 128 headers); the gateway's protocol answers in JSON, 414 or 431.
    gateway, upstream = plain_gateway
    answer = await raw_request(gateway, target, headers)
    assert (answer.status, answer.header("Content-Type")) == (
        status,
        "application/json; charset=utf-8",
    )
    assert answer.error["code"] == code
    assert upstream.requests == []
    await serves_a_normal_stream(gateway)
