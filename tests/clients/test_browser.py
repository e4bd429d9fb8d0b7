"""Chromium reads the gateway: native EventSource, DevTools' view of the stream, fetch streaming and
the demo page, each against a running gateway and a real upstream on loopback.

The gateway has no CORS, so every page is same-origin with it: the tests open ``/healthz`` (or the
demo page at ``/``) and run their script there. What is asserted is what the browser observed: the
page logs every event it was dispatched (tests/support/browser.py), DevTools reports over CDP, and the
upstreams record every request they get, which is how "no reconnect" and ``Last-Event-ID`` are seen.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest
from aiohttp import web

from proxy.demo import demo_reply_tokens
from tests.support import ROOT
from tests.support.browser import CLOSED, CONNECTING, OPEN, PageEventSource, fetch_stream, messages
from tests.support.sse import parse_events
from tests.support.upstreams import Seen, ndjson_handler, recorded


async def same_origin_page(browser: Any, gateway: str) -> Any:
    page = await browser.new_page()
    page.set_default_timeout(15_000)
    await page.goto(f"{gateway}/healthz")
    return page


# -- 1. EventSource: every line, in order, exact; `end` closes it for good -------------------------

LINES = [
    b'{"text": "plain ascii"}\n',
    '{"text": "héllo wörld ✓ 日本語 🎉 שלום"}\n'.encode(),
    b'{"text": "JSON escapes \\r\\n stay text"}\r\n',  # a CRLF line end is not part of the line
    b"not JSON, a raw CR inside\rthis line\n",  # data: line mode passes it; CR must not split it
    '{"text": "U+2028 \u2028 and NEL \u0085 are not SSE line ends"}\n'.encode(),
    b'{"last": "no final newline"}',
]


def expected_data(line: bytes) -> str:
    """What a page reads from ``e.data`` for an upstream line: the line itself, except that a CR
    inside it can only travel as a second ``data:`` line, which the browser joins with LF."""
    text = line.decode().removesuffix("\n").removesuffix("\r")
    return text.replace("\r", "\n")


async def test_eventsource_gets_every_line_in_order_and_end_closes_it_without_reconnect(
    browser, start_upstream, start_gateway
):
    requests: list[Seen] = []
    upstream = await start_upstream({"/chat": recorded(ndjson_handler(LINES), requests)})
    gateway = await start_gateway(
        [{"path": "/stream", "upstream": upstream + "/chat", "events": {"retry": 300}}]
    )
    page = await same_origin_page(browser, gateway)

    stream = await PageEventSource.open(page, "/stream")
    log = await stream.wait_for("end")
    ended = time.monotonic()

    assert [e["type"] for e in log] == ["open", *["message"] * len(LINES), "end"]
    assert messages(log)[:-1] == [
        ("message", expected_data(line), str(n)) for n, line in enumerate(LINES, 1)
    ]
    assert messages(log)[3][1] == "not JSON, a raw CR inside\nthis line"  # one event, not two
    assert messages(log)[-1] == ("end", "", str(len(LINES)))
    # retry is 300 ms: had the page not closed the stream, the browser would be back by now.
    await asyncio.sleep(ended + 0.3 + 1.0 - time.monotonic())
    assert len(requests) == 1
    assert await stream.ready_state() == CLOSED
    assert len(await stream.log()) == len(log)


# -- 2. DevTools sees the stream -------------------------------------------------------------------

TYPED_LINES = [
    b'{"type": "token", "text": "Hel"}\n',
    '{"type": "token", "text": "lo ✓"}\n'.encode(),
    b'{"text": "a line without a type is a message"}\n',
    b'{"type": "done", "text": ""}\n',
]


async def test_devtools_reports_every_event_of_the_eventsource_request(
    browser, start_upstream, start_gateway, http
):
    upstream = await start_upstream({"/chat": ndjson_handler(TYPED_LINES)})
    gateway = await start_gateway(
        [{"path": "/stream", "upstream": upstream + "/chat", "events": {"event_from": "/type"}}]
    )
    page = await same_origin_page(browser, gateway)
    cdp = await page.context.new_cdp_session(page)
    await cdp.send("Network.enable")
    sent: list[dict[str, Any]] = []
    received: list[dict[str, Any]] = []
    ended = asyncio.Event()

    def on_request(params: dict[str, Any]) -> None:
        sent.append(params)

    def on_message(params: dict[str, Any]) -> None:
        received.append(params)
        if params["eventName"] == "end":
            ended.set()

    # Playwright tags each handler with an attribute, so a bound builtin like list.append fails.
    cdp.on("Network.requestWillBeSent", on_request)
    cdp.on("Network.eventSourceMessageReceived", on_message)

    stream = await PageEventSource.open(page, "/stream", listen=("token", "done", "end"))
    await stream.wait_for("end")
    await asyncio.wait_for(ended.wait(), 10)  # CDP events travel apart from the page's own

    (request,) = [r for r in sent if r.get("type") == "EventSource"]
    assert request["request"]["url"] == f"{gateway}/stream"
    assert request["request"]["headers"]["Accept"] == "text/event-stream"
    assert {m["requestId"] for m in received} == {request["requestId"]}
    async with http.get(f"{gateway}/stream") as response:
        gateway_sent = parse_events(await response.read())
    devtools = [(m["eventName"], m["eventId"], m["data"]) for m in received]
    assert devtools == [(e.event, e.id, e.data) for e in gateway_sent]
    assert devtools == [
        ("token", "1", '{"type": "token", "text": "Hel"}'),
        ("token", "2", '{"type": "token", "text": "lo ✓"}'),
        ("message", "3", '{"text": "a line without a type is a message"}'),
        ("done", "4", '{"type": "done", "text": ""}'),
        ("end", "4", ""),
    ]
    # And the page was dispatched the same events.
    assert [(t, i, d) for t, d, i in messages(await stream.log())] == devtools


# -- 3. Event names and ids ------------------------------------------------------------------------

NAMED_LINES = [
    b'{"type": "token", "id": "t-1", "text": "Hel"}\n',
    b'{"type": "token", "id": "t-2", "text": "lo"}\n',
    b'{"type": "tool_call", "id": 3, "text": {"name": "search"}}\n',
    b'{"id": "t-4", "text": "no type: a message"}\n',
    '{"type": "done", "id": "ü-5", "text": ""}\n'.encode(),
]


async def test_event_from_names_reach_add_event_listener_and_ids_reach_last_event_id(
    browser, start_upstream, start_gateway
):
    upstream = await start_upstream({"/chat": ndjson_handler(NAMED_LINES)})
    gateway = await start_gateway(
        [
            {
                "path": "/named",
                "upstream": upstream + "/chat",
                "events": {"event_from": "/type", "id": "/id", "data": "/text"},
            },
            {"path": "/counted", "upstream": upstream + "/chat", "events": {"data": "/text"}},
        ]
    )
    page = await same_origin_page(browser, gateway)
    listen = ("token", "tool_call", "done", "end")
    named = await PageEventSource.open(page, "/named", listen=listen, name="named")
    counted = await PageEventSource.open(page, "/counted", listen=listen, name="counted")

    assert messages(await named.wait_for("end")) == [
        ("token", "Hel", "t-1"),
        ("token", "lo", "t-2"),
        ("tool_call", '{"name":"search"}', "3"),
        ("message", "no type: a message", "t-4"),
        ("done", "", "ü-5"),
        ("end", "", "ü-5"),  # the last id stays in force
    ]
    assert messages(await counted.wait_for("end")) == [
        ("message", "Hel", "1"),
        ("message", "lo", "2"),
        ("message", '{"name":"search"}', "3"),
        ("message", "no type: a message", "4"),
        ("message", "", "5"),
        ("end", "", "5"),
    ]


# -- 4. Errors as the browser sees them ------------------------------------------------------------


async def test_upstream_4xx_or_5xx_fails_the_eventsource_for_good(
    browser, start_upstream, start_gateway
):
    missing: list[Seen] = []
    broken: list[Seen] = []

    async def not_found(request: web.Request) -> web.Response:
        return web.json_response({"error": "no such model"}, status=404)

    async def unavailable(request: web.Request) -> web.Response:
        return web.Response(text="overloaded, try later", status=503)

    upstream = await start_upstream(
        {"/missing": recorded(not_found, missing), "/broken": recorded(unavailable, broken)}
    )
    gateway = await start_gateway(
        [
            {"path": "/missing", "upstream": upstream + "/missing"},
            {"path": "/broken", "upstream": upstream + "/broken"},
        ]
    )
    page = await same_origin_page(browser, gateway)
    streams = [
        await PageEventSource.open(page, path, close_on=(), name=path)
        for path in ("/missing", "/broken")
    ]
    for stream in streams:
        (error,) = await stream.wait_for("error")
        assert (error["type"], error["data"], error["readyState"]) == ("error", None, CLOSED)
    failed = time.monotonic()

    # The page never called close(): only the browser's own decision keeps it from coming back.
    # No retry field was sent, so its default delay applies (3 s in Chromium).
    await asyncio.sleep(failed + 3.5 - time.monotonic())
    assert (len(missing), len(broken)) == (1, 1)
    for stream in streams:
        assert await stream.ready_state() == CLOSED
        assert len(await stream.log()) == 1


# An upstream that sends a line and then loses its connection mid-body (no chunked end).
line_then_drop = ndjson_handler([b'{"n": 1}\n'], end="close")


@pytest.mark.parametrize(
    ("handler", "limits", "code"),
    [
        pytest.param(line_then_drop, {}, "upstream_closed", id="upstream-drops-its-connection"),
        pytest.param(
            ndjson_handler([b'{"n": 1}\n', b'{"n": "' + b"x" * 200 + b'"}\n']),
            {"max_line_bytes": 64},
            "line_too_long",
            id="line-over-max_line_bytes",
        ),
    ],
)
async def test_a_stream_that_breaks_mid_way_delivers_a_json_error_event(
    browser, start_upstream, start_gateway, handler, limits, code
):
    upstream = await start_upstream({"/chat": handler})
    gateway = await start_gateway(
        [{"path": "/stream", "upstream": upstream + "/chat", "limits": limits}]
    )
    page = await same_origin_page(browser, gateway)

    # The page closes on the first error, as a page that shows the error and stops would.
    stream = await PageEventSource.open(page, "/stream", close_on=("error",))
    log = await stream.wait_for("error")

    assert [e["type"] for e in log] == ["open", "message", "error"]
    assert messages(log)[0] == ("message", '{"n": 1}', "1")
    error = log[-1]
    assert error["data"] is not None, "the browser's connection error came, not the gateway's event"
    assert error["readyState"] == OPEN  # told in-band, on the open stream
    details = json.loads(error["data"])
    assert details["code"] == code
    assert isinstance(details["message"], str)
    assert details["message"]


# -- 5. Reconnect with Last-Event-ID ---------------------------------------------------------------


async def test_browser_reconnects_after_retry_with_last_event_id_in_header_and_body(
    browser, start_upstream, start_gateway
):
    requests: list[Seen] = []
    dropped_at: list[float] = []

    async def resumable(request: web.Request) -> web.StreamResponse:
        if len(requests) == 1:
            lines = [b'{"n": 1}\n', b'{"n": 2}\n', b'{"n": 3}\n']
            response = await ndjson_handler(lines, end="close")(request)
            dropped_at.append(time.monotonic())
            return response
        return await ndjson_handler([b'{"n": 4}\n', b'{"n": 5}\n'])(request)

    upstream = await start_upstream({"/chat": recorded(resumable, requests)})
    gateway = await start_gateway(
        [
            {
                "path": "/resume",
                "upstream": upstream + "/chat",
                "events": {"retry": 200},
                "body": {"last_event_id": "last_event_id"},
            }
        ]
    )
    page = await same_origin_page(browser, gateway)

    stream = await PageEventSource.open(page, "/resume")
    log = await stream.wait_for("end")

    assert [(e["type"], e["data"]) for e in log if e["type"] != "error"] == [
        ("open", None),
        ("message", '{"n": 1}'),
        ("message", '{"n": 2}'),
        ("message", '{"n": 3}'),
        ("open", None),
        ("message", '{"n": 4}'),
        ("message", '{"n": 5}'),
        ("end", ""),
    ]
    reported, lost = [e for e in log if e["type"] == "error"]
    assert json.loads(reported["data"])["code"] == "upstream_closed"
    assert (reported["readyState"], reported["lastEventId"]) == (OPEN, "3")
    assert (lost["data"], lost["readyState"]) == (None, CONNECTING)  # the browser will retry

    first, second = requests
    assert "Last-Event-ID" not in first.headers
    assert "last_event_id" not in first.body
    assert second.headers["Last-Event-ID"] == "3"
    assert second.body["last_event_id"] == "3"

    # retry: 200 ms, not the browser's 3 s default: bounds are generous but tell them apart.
    reopened = [e for e in log if e["type"] == "open"][1]
    assert 0.15 <= (reopened["t"] - lost["t"]) / 1000 <= 1.5
    assert 0.15 <= second.at - dropped_at[0] <= 1.5


# -- 6. fetch streaming gets the same events -------------------------------------------------------


async def test_fetch_post_streaming_gets_the_same_events_as_eventsource(
    browser, start_upstream, start_gateway
):
    requests: list[Seen] = []

    async def echo_words(request: web.Request) -> web.StreamResponse:
        prompt = (await request.json())["prompt"]
        lines = [orjson.dumps({"word": word}) + b"\n" for word in prompt.split(" ")]
        return await ndjson_handler(lines)(request)

    upstream = await start_upstream({"/chat": recorded(echo_words, requests)})
    gateway = await start_gateway(
        [
            {
                "path": "/chat",
                "upstream": upstream + "/chat",
                "forward_headers": ["X-Request-Id"],
                "body": {"defaults": {"model": "m", "stream": True}},
                "events": {"data": "/word"},
            }
        ]
    )
    page = await same_origin_page(browser, gateway)
    body = {"prompt": "fetch and EventSource agree ✓ 🎉"}

    fetched = await fetch_stream(
        page,
        "/chat",
        method="POST",
        headers={"Content-Type": "application/json", "X-Request-Id": "req-42"},
        body=json.dumps(body),
    )
    stream = await PageEventSource.open(page, "/chat?" + urlencode({"body": json.dumps(body)}))
    log = await stream.wait_for("end")

    assert fetched["status"] == 200
    assert fetched["contentType"] == "text/event-stream; charset=utf-8"
    from_fetch = [(e.event, e.data, e.id) for e in parse_events(fetched["text"].encode())]
    assert from_fetch == messages(log)
    assert from_fetch == [
        ("message", "fetch", "1"),
        ("message", "and", "2"),
        ("message", "EventSource", "3"),
        ("message", "agree", "4"),
        ("message", "✓", "5"),
        ("message", "🎉", "6"),
        ("end", "", "6"),
    ]

    posted, got = requests
    assert posted.body == {"model": "m", "stream": True, **body}
    assert posted.headers["X-Request-Id"] == "req-42"
    assert got.body == posted.body
    assert "X-Request-Id" not in got.headers  # EventSource cannot send custom headers


# -- 7. The demo page ------------------------------------------------------------------------------


async def test_demo_page_streams_the_whole_answer_and_says_done(browser, start_gateway):
    gateway = await start_gateway(
        [
            {
                "path": "/v1/chat",
                "upstream": "/demo/api/chat",
                "body": {"defaults": {"model": "demo", "stream": True}},
                "events": {"data": "/message/content"},
                "resume": {},
                "streams": {},
            }
        ],
        server={"demo": True},
    )
    page = await browser.new_page(viewport={"width": 900, "height": 600})
    page.set_default_timeout(15_000)
    await page.goto(f"{gateway}/")
    await page.wait_for_selector("body[data-state=done]")

    prompt = await page.input_value("#prompt")
    assert prompt == "What does this gateway do?"
    tokens = demo_reply_tokens(prompt)
    assert await page.text_content("#answer") == "".join(tokens)
    # One event per token, plus Ollama's last line (done, empty content).
    assert await page.text_content("#status") == f"done: {len(tokens) + 1} events"

    artifacts = ROOT / "artifacts"
    artifacts.mkdir(exist_ok=True)
    await page.screenshot(path=artifacts / "demo-page.png", full_page=True)


async def test_demo_page_closes_on_the_gateways_error_event_instead_of_restarting(
    browser, start_upstream, start_gateway
):
    requests: list[Seen] = []
    # The line is read before the drop: a resumable stream's producer starts reading after the
    # upstream's head, and aiohttp hands out no buffered bytes once it knows of the close.
    line_pause_then_drop = ndjson_handler([b'{"n": 1}\n'], pause=0.3, end="close")
    upstream = await start_upstream({"/chat": recorded(line_pause_then_drop, requests)})
    gateway = await start_gateway(
        [
            {
                "path": "/broken",
                "upstream": upstream + "/chat",
                "events": {"data": "/n", "retry": 200},
                "resume": {},
                "streams": {},
            }
        ],
        server={"demo": True},
    )
    page = await browser.new_page()
    page.set_default_timeout(15_000)
    reads: list[str] = []  # what the browser asked of the stream URL (a reconnect is a GET)
    page.on("request", lambda r: reads.append(r.method) if "/broken/streams/" in r.url else None)
    await page.goto(f"{gateway}/?route=/broken")
    await page.wait_for_selector("body[data-state=error]")
    assert (await page.text_content("#status")).startswith("error upstream_closed: ")
    await asyncio.sleep(1.0)  # five times the retry delay: a reconnect would have come by now
    assert reads == ["GET"]
    assert len(requests) == 1
    assert await page.text_content("#answer") == "1"
