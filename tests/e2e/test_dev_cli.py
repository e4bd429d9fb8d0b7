"""The local dev gateway as a developer starts it: real ``python -m proxy`` processes with
``--upstream URL`` (and ``--header``), ``--demo``, ``--mode`` and ``--log-format``, in front of a
real upstream on loopback, read the way a terminal or a log collector reads them."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from yarl import URL

from proxy.demo import demo_reply_tokens
from tests.support.processes import (
    GatewayProcess,
    run_cli,
    running_gateway,
    start_gateway_process,
)
from tests.support.sse import parse_events
from tests.support.upstreams import Seen, recorded

LINES = [b'{"n":1,"text":"a"}\n', b'{"n":2,"text":"b"}\n', b'{"n":3,"text":"c"}\n']
SSE_BODY = (
    b"retry: 3000\n\n"
    b'id: 1\ndata: {"n":1,"text":"a"}\n\n'
    b'id: 2\ndata: {"n":2,"text":"b"}\n\n'
    b'id: 3\ndata: {"n":3,"text":"c"}\n\n'
    b"event: end\ndata:\n\n"
)
ACCESS_LINE = r'^\{.*"logger":"proxy\.access".*\}$'


# -- a real upstream that accepts any path and remembers what it got -------------------------------


class Upstream:
    """Streams :data:`LINES` as NDJSON for any path, except: a path ending in ``/status503``
    answers 503 (echoing the ``X-Api-Key`` it got, as careless APIs do), one ending in ``/hold``
    sends the first line and then waits until the test is over."""

    def __init__(self) -> None:
        self.url = ""
        self.seen: list[Seen] = []
        self.release = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path.endswith("/status503"):
            key = request.headers.get("X-Api-Key", "")
            return web.json_response({"error": f"overloaded (key {key})"}, status=503)
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        if request.path.endswith("/hold"):
            await response.write(LINES[0])
            await self.release.wait()
            return response
        for line in LINES:
            await response.write(line)
        await response.write_eof()
        return response


@pytest.fixture
async def upstream(aiohttp_server):
    upstream = Upstream()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", recorded(upstream.handle, upstream.seen))
    server = await aiohttp_server(app)
    upstream.url = f"http://127.0.0.1:{server.port}"
    yield upstream
    upstream.release.set()


async def fetch(
    http: aiohttp.ClientSession, method: str, url: str | URL, **kwargs: Any
) -> tuple[int, bytes]:
    async with http.request(method, url, **kwargs) as response:
        return response.status, await response.read()


async def access_lines(gateway: GatewayProcess, count: int) -> list[dict[str, Any]]:
    """The first ``count`` JSON access-log lines, once they are all written."""
    pattern = rf"(?:{ACCESS_LINE}[\s\S]*?){{{count}}}"
    await gateway.wait_for(pattern)
    return [json.loads(line) for line in re.findall(ACCESS_LINE, gateway.stdout, re.MULTILINE)]


# -- --upstream URL: the one-liner -----------------------------------------------------------------


async def test_upstream_one_liner_announces_its_address_its_two_routes_and_the_console(
    upstream, http
):
    async with running_gateway("--upstream", f"{upstream.url}/api/chat", "--port", "0") as gateway:
        await gateway.wait_for(r"_console\n")
        assert gateway.stdout.splitlines() == [
            f"proxy: listening on {gateway.base} (2 routes)",
            f"proxy: stream console at {gateway.base}/_console",
        ]
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", gateway.base)
        # Served once: past start-up, so the SIGTERM on the way out meets its handler (see
        # test_sigterm_right_after_the_listening_line_drains_and_exits_0).
        assert (await fetch(http, "GET", gateway.base + "/healthz"))[0] == 200


async def test_get_root_posts_the_body_built_from_the_query_to_the_upstream_url(upstream, http):
    async with running_gateway("--upstream", f"{upstream.url}/api/chat", "--port", "0") as gateway:
        nested = {"messages": [{"role": "user", "content": "hi"}], "options": {"seed": 1}}
        params = {"body": json.dumps(nested), "model": "llama3", "temperature": "0.5"}
        status, raw = await fetch(http, "GET", gateway.base + "/", params=params)
    assert (status, raw) == (200, SSE_BODY)
    [seen] = upstream.seen
    assert (seen.method, seen.raw_path, seen.raw_query) == ("POST", "/api/chat", "")
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.body == {**nested, "model": "llama3", "temperature": "0.5"}


async def test_post_root_sends_the_clients_json_body_upstream(upstream, http):
    body = {"model": "llama3", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    async with running_gateway("--upstream", f"{upstream.url}/api/chat", "--port", "0") as gateway:
        status, raw = await fetch(http, "POST", gateway.base + "/", json=body)
    assert (status, raw) == (200, SSE_BODY)
    [seen] = upstream.seen
    assert (seen.method, seen.raw_path, seen.raw_query) == ("POST", "/api/chat", "")
    assert seen.body == body


async def test_every_ndjson_line_is_one_event_with_a_sequence_id_then_end(upstream, http):
    async with running_gateway("--upstream", f"{upstream.url}/api/chat", "--port", "0") as gateway:
        async with http.get(gateway.base + "/") as response:
            assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
            events = parse_events(await response.read())
    assert [(e.id, e.event, e.data) for e in events] == [
        ("1", "message", '{"n":1,"text":"a"}'),
        ("2", "message", '{"n":2,"text":"b"}'),
        ("3", "message", '{"n":3,"text":"c"}'),
        ("3", "end", ""),
    ]


async def test_a_path_under_the_gateway_goes_to_the_same_path_under_the_upstream_url(
    upstream, http
):
    async with running_gateway("--upstream", f"{upstream.url}/api/chat", "--port", "0") as gateway:
        assert await fetch(http, "GET", gateway.base + "/x/y") == (200, SSE_BODY)
        assert await fetch(http, "POST", gateway.base + "/x/y/", json={"a": 1}) == (200, SSE_BODY)
    assert [(s.method, s.raw_path, s.raw_body) for s in upstream.seen] == [
        ("POST", "/api/chat/x/y", b"{}"),
        ("POST", "/api/chat/x/y/", b'{"a":1}'),
    ]


async def test_an_upstream_without_a_path_serves_every_path_under_its_root(upstream, http):
    async with running_gateway("--upstream", upstream.url, "--port", "0") as gateway:
        assert await fetch(http, "GET", gateway.base + "/api/generate") == (200, SSE_BODY)
        assert await fetch(http, "GET", gateway.base + "/") == (200, SSE_BODY)
    assert [s.raw_path for s in upstream.seen] == ["/api/generate", "/"]


DOT_PATHS = ["/a/../b", "/a/./b", "/a/..", "/a/%2E%2E/b", "/a/%2e/b", "/../api/x"]


async def test_a_dot_segment_in_the_tail_is_400_invalid_path_and_reaches_no_upstream(
    upstream, http
):
    errors = {}
    async with running_gateway("--upstream", f"{upstream.url}/api/chat", "--port", "0") as gateway:
        for path in DOT_PATHS:
            # encoded=True: sent as written, not resolved by the client first.
            async with http.get(URL(gateway.base + path, encoded=True)) as response:
                errors[path] = (response.status, await response.json())
    invalid = {"code": "invalid_path", "message": "path variable 'tail' has a '.' or '..' segment"}
    assert errors == dict.fromkeys(DOT_PATHS, (400, {"error": invalid}))
    assert upstream.seen == []


async def test_the_gateways_own_paths_are_not_forwarded_although_the_tail_catches_all(
    upstream, http
):
    async with running_gateway("--upstream", f"{upstream.url}/api/chat", "--port", "0") as gateway:
        async with http.get(gateway.base + "/healthz") as response:
            assert response.status == 200
            assert (await response.json())["status"] == "ok"
        async with http.get(gateway.base + "/readyz") as response:
            assert (response.status, await response.json()) == (200, {"status": "ready"})
        async with http.get(gateway.base + "/_console") as response:
            assert response.status == 200
            assert response.content_type == "text/html"
    assert upstream.seen == []


async def test_header_flag_reaches_the_upstream_on_every_request(upstream, http):
    async with running_gateway(
        "--upstream",
        f"{upstream.url}/api/chat",
        "--header",
        "X-Api-Key: s3cret",
        "--header",
        "X-Tenant:  blue ",
        "--port",
        "0",
    ) as gateway:
        await fetch(http, "GET", gateway.base + "/")
        await fetch(http, "POST", gateway.base + "/", json={})
        await fetch(http, "GET", gateway.base + "/v2/generate")
        # The gateway's value wins over a client's header of the same name.
        await fetch(http, "GET", gateway.base + "/", headers={"X-Api-Key": "forged"})
    assert [(s.headers.getall("X-Api-Key"), s.headers["X-Tenant"]) for s in upstream.seen] == [
        (["s3cret"], "blue")
    ] * 4


async def test_authorization_and_x_request_id_are_forwarded_and_other_client_headers_are_not(
    upstream, http
):
    headers = {
        "Authorization": "Bearer abc",
        "X-Request-Id": "req-42",
        "Cookie": "session=1",
        "X-Other": "no",
    }
    async with running_gateway("--upstream", f"{upstream.url}/api/chat", "--port", "0") as gateway:
        await fetch(http, "GET", gateway.base + "/", headers=headers)
        await fetch(http, "POST", gateway.base + "/t", headers=headers, json={})
    for seen in upstream.seen:
        assert seen.headers["Authorization"] == "Bearer abc"
        assert seen.headers["X-Request-Id"] == "req-42"
        assert "Cookie" not in seen.headers
        assert "X-Other" not in seen.headers
    assert len(upstream.seen) == 2


async def test_the_upstream_urls_own_query_string_is_kept(upstream, http):
    async with running_gateway("--upstream", f"{upstream.url}/api?x=1", "--port", "0") as gateway:
        await fetch(http, "GET", gateway.base + "/", params={"body": '{"a":1}', "b": "2"})
        await fetch(http, "POST", gateway.base + "/chat", json={"a": 1})
    assert [(s.raw_path, s.raw_query, s.body) for s in upstream.seen] == [
        ("/api", "x=1", {"a": 1, "b": "2"}),
        ("/api/chat", "x=1", {"a": 1}),
    ]


# -- start-up and shutdown -------------------------------------------------------------------------


async def test_sigterm_right_after_the_listening_line_drains_and_exits_0(upstream):
    async def start_and_stop() -> tuple[int, str]:
        gateway = await start_gateway_process("--upstream", upstream.url, "--port", "0")
        return await gateway.stop(), gateway.stdout

    results = await asyncio.gather(*(start_and_stop() for _ in range(4)))
    assert [status for status, _ in results] == [0] * 4
    for _, stdout in results:
        assert stdout.endswith(" info    proxy: draining: 0 open streams told shutting_down\n")


# -- argument errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["--upstream", "nope"], "proxy: error: --upstream nope: not a URL", id="not-a-url"
        ),
        pytest.param(
            ["--upstream", "ftp://127.0.0.1/x"],
            "proxy: error: --upstream ftp://127.0.0.1/x: not a URL",
            id="not-http",
        ),
        pytest.param(
            ["--upstream", "http://127.0.0.1:9/", "--demo"],
            "python -m proxy: error: --upstream and --demo are two different gateways: choose one",
            id="upstream-and-demo",
        ),
        pytest.param(
            ["--upstream", "http://127.0.0.1:9/", "--config", "config.yaml"],
            "python -m proxy: error: --config cannot be combined with --upstream or --demo",
            id="upstream-and-config",
        ),
        pytest.param(
            ["--header", "X-Api-Key: k"],
            "python -m proxy: error: --header is for --upstream; a config file has headers: per route",
            id="header-without-upstream",
        ),
        pytest.param(
            ["--upstream", "http://127.0.0.1:9/", "--header", "no colon"],
            "python -m proxy: error: argument --header: not 'Name: value': 'no colon'",
            id="header-without-colon",
        ),
    ],
)
def test_an_argument_error_exits_2_with_one_error_line_and_starts_nothing(args, message):
    result = run_cli(*args, "--port", "0")
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    # argparse's own errors come after its usage block; ours stand alone. Either way there is
    # exactly one error line, and it is the last.
    assert lines[-1] == message
    assert [line for line in lines if ": error: " in line] == [message]


def test_check_config_with_upstream_says_ok_with_two_routes_and_exits_0():
    result = run_cli("--check-config", "--upstream", "http://127.0.0.1:9/api/chat")
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        "proxy: http://127.0.0.1:9/api/chat: ok (2 routes)\n",
        "",
    )


# -- --demo ----------------------------------------------------------------------------------------


async def test_demo_serves_its_page_its_streams_and_the_console(http):
    async with running_gateway("--demo", "--port", "0") as gateway:
        await gateway.wait_for(r"^proxy: stream console at \S+/_console$")
        assert gateway.routes == 2
        async with http.get(gateway.base + "/") as response:
            assert (response.status, response.content_type) == (200, "text/html")
            assert "new EventSource(" in await response.text()
        body = {"messages": [{"content": "hi"}], "options": {"delay_ms": 0}}
        async with http.get(
            gateway.base + "/v1/chat", params={"body": json.dumps(body)}
        ) as response:
            events = parse_events(await response.read())
        async with http.get(gateway.base + "/_console") as response:
            assert (response.status, response.content_type) == (200, "text/html")
    # The tokens, then the empty content of the demo's last line, {"done": true}.
    assert [e.data for e in events if e.event == "message"] == [*demo_reply_tokens("hi"), ""]
    assert events[-1].event == "end"


async def test_demo_in_production_mode_has_no_console(http):
    async with running_gateway("--demo", "--mode", "production", "--port", "0") as gateway:
        async with http.get(gateway.base + "/_console") as response:
            assert response.status == 404
            assert await response.json() == {
                "error": {"code": "not_found", "message": "GET /_console: Not Found"}
            }
        async with http.get(gateway.base + "/") as response:
            assert response.status == 200  # the demo page is still there
    assert "stream console" not in gateway.stdout


# -- one log line per stream -----------------------------------------------------------------------


def timings(line: dict[str, Any]) -> dict[str, Any]:
    """``line`` with its clock fields checked and taken out, leaving what a test can pin."""
    line = dict(line)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", line.pop("time"))
    duration = line.pop("duration_ms")
    assert isinstance(duration, float | int)
    assert duration >= 0
    first = line.pop("first_event_ms")
    if first is not None:
        assert isinstance(first, float | int)
        assert 0 <= first <= duration
    line["first_event"] = first is not None
    # The gaps between writes are there when the events came in more than one write, which is
    # the upstream's and the network's timing, not the test's.
    gaps = [line.pop(name) for name in ("gap_p50_ms", "gap_p99_ms", "gap_max_ms") if name in line]
    assert len(gaps) in (0, 3)
    assert gaps == sorted(gaps)  # p50 <= p99 <= max
    return line


async def test_json_log_has_one_line_per_stream_at_its_end_and_none_for_healthz(upstream, http):
    async with running_gateway(
        "--upstream", f"{upstream.url}/api/chat", "--port", "0", "--log-format", "json"
    ) as gateway:
        assert (await fetch(http, "GET", gateway.base + "/healthz"))[0] == 200
        status, raw = await fetch(http, "GET", gateway.base + "/x?body=%7B%7D")
        [line] = await access_lines(gateway, 1)
    assert status == 200
    assert timings(line) == {
        "level": "info",
        "logger": "proxy.access",
        "msg": "stream",
        "method": "GET",
        "path": "/x",
        "route": "/{tail:.+}",
        "status": 200,
        "upstream_status": 200,
        "events": 3,
        "bytes": len(raw),
        "first_event": True,
        "ended": "eof",
    }
    assert "healthz" not in gateway.stdout


async def test_a_client_that_leaves_mid_stream_is_logged_client_gone(upstream):
    async with running_gateway(
        "--upstream", f"{upstream.url}/api/chat", "--port", "0", "--log-format", "json"
    ) as gateway:
        url = URL(gateway.base)
        reader, writer = await asyncio.open_connection(url.host, url.port)
        writer.write(b"GET /hold HTTP/1.1\r\nHost: gateway\r\n\r\n")
        await asyncio.wait_for(reader.readuntil(b"id: 1\n"), 10)
        assert "proxy.access" not in gateway.stdout  # not before the stream's end
        writer.close()  # a real socket close, mid-stream
        await writer.wait_closed()
        [line] = await access_lines(gateway, 1)
    assert timings(line) == {
        "level": "info",
        "logger": "proxy.access",
        "msg": "stream",
        "method": "GET",
        "path": "/hold",
        "route": "/{tail:.+}",
        "status": 499,  # nginx's "client closed request": the handler was cancelled
        "upstream_status": 200,
        "events": 1,
        "bytes": len(b'retry: 3000\n\nid: 1\ndata: {"n":1,"text":"a"}\n\n'),
        "first_event": True,
        "ended": "client_gone",
    }


async def test_an_upstream_503_is_logged_with_both_statuses_and_no_events(upstream, http):
    async with running_gateway(
        "--upstream", f"{upstream.url}/api/chat", "--port", "0", "--log-format", "json"
    ) as gateway:
        status, raw = await fetch(http, "POST", gateway.base + "/status503", json={})
        [line] = await access_lines(gateway, 1)
    assert status == 503
    assert orjson.loads(raw)["error"]["code"] == "upstream_status"
    assert timings(line) == {
        "level": "info",
        "logger": "proxy.access",
        "msg": "stream",
        "method": "POST",
        "path": "/status503",
        "route": "/{tail:.+}",
        "status": 503,
        "upstream_status": 503,
        "events": 0,
        "bytes": len(raw),
        "first_event": False,
        "ended": "upstream_status",
    }


async def test_an_unknown_path_is_logged_404_with_no_route(upstream, http, tmp_path):
    config = tmp_path / "gateway.yaml"
    config.write_text(json.dumps({"routes": [{"path": "/chat", "upstream": upstream.url}]}))
    async with running_gateway("--config", str(config), "--port", "0") as gateway:
        status, raw = await fetch(http, "GET", gateway.base + "/nope")
        [line] = await access_lines(gateway, 1)
    assert status == 404
    assert timings(line) == {
        "level": "info",
        "logger": "proxy.access",
        "msg": "stream",
        "method": "GET",
        "path": "/nope",
        "route": None,
        "status": 404,
        "upstream_status": None,
        "events": 0,
        "bytes": len(raw),
        "first_event": False,
        "ended": "not_found",
    }
    assert upstream.seen == []


async def test_production_mode_logs_json_lines_by_default(upstream, http):
    async with running_gateway(
        "--upstream", f"{upstream.url}/api/chat", "--mode", "production", "--port", "0"
    ) as gateway:
        await fetch(http, "GET", gateway.base + "/")
        [line] = await access_lines(gateway, 1)
    assert (line["logger"], line["path"], line["ended"]) == ("proxy.access", "/", "eof")
    assert "stream console" not in gateway.stdout


@pytest.mark.parametrize("log_format", ["json", "dev"])
async def test_no_secret_reaches_any_log_line(upstream, http, log_format):
    async with running_gateway(
        "--upstream",
        f"{upstream.url}/api/chat",
        "--header",
        "X-Api-Key: SECRET2",
        "--port",
        "0",
        "--log-format",
        log_format,
        "--log-level",
        "debug",
    ) as gateway:
        authorization = {"Authorization": "Bearer SECRET3"}
        await fetch(http, "GET", gateway.base + "/?token=SECRET1", headers=authorization)
        await fetch(http, "POST", gateway.base + "/t?token=SECRET1", headers=authorization, json={})
        status, raw = await fetch(
            http, "GET", gateway.base + "/status503?token=SECRET1", headers=authorization
        )
        await gateway.wait_for(r"/status503")  # the last of the three lines is written
    assert status == 503
    assert "SECRET2" not in raw.decode()  # redacted from the upstream's echo, too
    assert len(upstream.seen) == 3
    output = gateway.stdout + gateway.stderr
    for secret in ("SECRET1", "SECRET2", "SECRET3"):
        assert secret not in output


DURATION = r"(?:\d+ ms|\d+\.\d\d s)"
GAPS = r"(?:  gap ≤\d+/\d+ ms)?"  # when the events came in more than one write
DEV_LINE = rf"^\d\d:\d\d:\d\d GET /x 200 ← 200  3 events  first \d+ ms{GAPS}  {DURATION}  eof$"


async def test_dev_log_line_is_readable_and_plain_when_stdout_is_a_pipe(upstream, http):
    async with running_gateway("--upstream", f"{upstream.url}/api/chat", "--port", "0") as gateway:
        await fetch(http, "GET", gateway.base + "/x?body=%7B%7D")
        await fetch(http, "GET", gateway.base + "/healthz")
        await fetch(http, "POST", gateway.base + "/status503", json={})
        await gateway.wait_for(DEV_LINE)
        await gateway.wait_for(r"^.* POST /status503 503 ← 503  0 events  -  .*$")
    # After the announcement: the two streams (not /healthz), then the drain on SIGTERM.
    lines = gateway.stdout.splitlines()[2:]
    assert len(lines) == 3, lines
    assert re.fullmatch(DEV_LINE[1:-1], lines[0])
    assert re.fullmatch(
        rf"\d\d:\d\d:\d\d POST /status503 503 ← 503  0 events  -  {DURATION}  upstream_status",
        lines[1],
    )
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d info    proxy: draining: 0 open streams told shutting_down", lines[2]
    )
    assert "\x1b[" not in gateway.stdout


async def test_dev_log_line_is_coloured_when_stdout_is_a_terminal(upstream, http):
    async with running_gateway(
        "--upstream", f"{upstream.url}/api/chat", "--port", "0", tty=True
    ) as gateway:
        await fetch(http, "GET", gateway.base + "/x")
        match = await gateway.wait_for(r"^.*GET /x .*$")
    assert re.fullmatch(
        r"\x1b\[2m\d\d:\d\d:\d\d\x1b\[0m GET /x \x1b\[32m200\x1b\[0m ← 200  3 events"
        rf"  first \d+ ms{GAPS}  {DURATION}  \x1b\[32meof\x1b\[0m",
        match.group(0),
    )
