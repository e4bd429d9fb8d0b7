"""The stream console at /_console, in Debian's headless Chromium against a real gateway and real
upstreams: the table fills while the stream runs, each raw line beside its event; GET is a native
EventSource (DevTools sees it), POST is fetch; failures say why; production mode has no console.
The timeline draws one tick per event at its arrival, marks a long gap, and reads the tokens.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from typing import Any

import orjson
import pytest
from aiohttp import web

from tests.support import ROOT
from tests.support.sse import parse_events
from tests.support.upstreams import Seen, ndjson_handler, recorded
from tests.support.waiting import eventually

DEV = {"mode": "dev"}
NOT_ENDED = "\u2013"  # the console's placeholder for "no end reason yet"
NO_FIGURE = "\u2013"  # and for a figure it cannot know

TYPED = [
    b'{"type": "ADDED", "name": "web-1", "rv": "101"}\n',
    b'{"type": "MODIFIED", "name": "web-1", "rv": "102"}\n',
    b"\n",
    b'{"type": "DELETED", "name": "web-1", "rv": "103"}\n',
    b'{"type": "BOOKMARK", "rv": "104", "done": true}\n',
]
WATCH_ROUTE = {
    "path": "/watch",
    "events": {"event_from": "/type", "id": "/rv", "complete_when": "/done"},
}


async def open_console(browser: Any, gateway: str, route: str) -> Any:
    page = await browser.new_page(viewport={"width": 1280, "height": 820})
    page.set_default_timeout(15_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.errors = errors
    await page.goto(f"{gateway}/_console")
    await page.locator("#routes button", has_text=route).first.click()
    await page.wait_for_function(
        "([path]) => document.getElementById('route-title').textContent === path", arg=[route]
    )
    return page


async def table(page: Any) -> list[list[str]]:
    return await page.eval_on_selector_all(
        "#events tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))"
    )


async def wait_ended(page: Any) -> str:
    await page.wait_for_function("document.getElementById('end-reason').textContent !== '\\u2013'")
    return await page.text_content("#end-reason")


async def test_the_table_fills_as_events_arrive_each_raw_line_beside_its_event(
    browser, start_upstream, start_gateway, http
):
    seen: list[Seen] = []
    upstream = await start_upstream({"/watch": recorded(ndjson_handler(TYPED, pause=0.4), seen)})
    gateway = await start_gateway([{**WATCH_ROUTE, "upstream": upstream + "/watch"}], server=DEV)
    page = await open_console(browser, gateway, "/watch")
    cdp = await page.context.new_cdp_session(page)
    await cdp.send("Network.enable")
    requests: list[dict[str, Any]] = []
    devtools: list[tuple[str, str]] = []

    def on_request(params: dict[str, Any]) -> None:
        requests.append(params)

    def on_message(params: dict[str, Any]) -> None:
        devtools.append((params["eventName"], params["eventId"]))

    cdp.on("Network.requestWillBeSent", on_request)
    cdp.on("Network.eventSourceMessageReceived", on_message)

    await page.fill("#body", '{"namespace": "default"}')
    started = time.monotonic()
    await page.click("#start")
    # While the upstream is still sending, the table already shows what has arrived.
    seen_counts = []
    while (reason := await page.text_content("#end-reason")) == NOT_ENDED:
        seen_counts.append(len(await table(page)))
        assert time.monotonic() - started < 15
        await asyncio.sleep(0.1)
    assert reason == "end"
    assert any(0 < count < 6 for count in seen_counts), seen_counts
    assert seen_counts == sorted(seen_counts)

    rows = await table(page)
    assert [row[0] for row in rows] == ["1", "2", "3", "4", "5", "6"]
    assert [row[2:6] for row in rows] == [
        [TYPED[0].decode().strip(), "ADDED", "101", TYPED[0].decode().strip()],
        [TYPED[1].decode().strip(), "MODIFIED", "102", TYPED[1].decode().strip()],
        ["", "(no event: blank line)", "", ""],
        [TYPED[3].decode().strip(), "DELETED", "103", TYPED[3].decode().strip()],
        [TYPED[4].decode().strip(), "BOOKMARK", "104", TYPED[4].decode().strip()],
        ["—", "end", "104", ""],
    ]
    assert rows[0][6] == str(len(TYPED[0].strip()))  # size: the data's bytes
    times = [int(row[1]) for row in rows if row[3] not in ("(no event: blank line)",)]
    assert times == sorted(times)
    assert times[-1] - times[0] >= 1000  # the upstream paced its lines 0.4 s apart
    assert await page.text_content("#timeline-events") == "4"
    assert re.fullmatch(r"\d+ ms", await page.text_content("#timeline-first"))
    assert re.fullmatch(r"\d+\.\d", await page.text_content("#rate"))
    # The stream was a native EventSource on the route itself, so DevTools lists it.
    (request,) = [r for r in requests if r.get("type") == "EventSource"]
    assert request["request"]["url"].startswith(f"{gateway}/watch?")
    await asyncio.sleep(0.3)  # CDP events travel apart from the page's own
    named = [(name, event_id) for name, event_id in devtools if name != "upstream-line"]
    assert named == [
        ("ADDED", "101"),
        ("MODIFIED", "102"),
        ("DELETED", "103"),
        ("BOOKMARK", "104"),
        ("end", "104"),
    ]
    # The tap parameter is the console's, not the upstream's.
    assert [request.body for request in seen] == [{"namespace": "default"}]
    assert page.errors == []

    artifacts = ROOT / "artifacts"
    artifacts.mkdir(exist_ok=True)
    shot = await page.screenshot(path=artifacts / "console.png", full_page=True)
    assert shot.startswith(b"\x89PNG")
    assert len(shot) > 20_000


async def test_post_streams_with_fetch_and_sends_the_json_body(
    browser, start_upstream, start_gateway
):
    seen: list[Seen] = []
    upstream = await start_upstream({"/watch": recorded(ndjson_handler(TYPED), seen)})
    gateway = await start_gateway([{**WATCH_ROUTE, "upstream": upstream + "/watch"}], server=DEV)
    page = await open_console(browser, gateway, "/watch")
    await page.check("input[name=method][value=POST]")
    await page.fill("#body", '{"labels": {"app": "web"}}')
    await page.click("#start")
    assert await wait_ended(page) == "end"
    assert [request.body for request in seen] == [{"labels": {"app": "web"}}]
    rows = await table(page)
    assert [row[3] for row in rows] == [
        "ADDED",
        "MODIFIED",
        "(no event: blank line)",
        "DELETED",
        "BOOKMARK",
        "end",
    ]
    assert await page.text_content("#state") == "closed"
    assert page.errors == []


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_a_stream_cut_before_its_terminal_line_ends_with_the_incomplete_error(
    browser, start_upstream, start_gateway, method
):
    upstream = await start_upstream({"/watch": ndjson_handler(TYPED[:2])})
    gateway = await start_gateway([{**WATCH_ROUTE, "upstream": upstream + "/watch"}], server=DEV)
    page = await open_console(browser, gateway, "/watch")
    await page.check(f"input[name=method][value={method}]")
    await page.click("#start")
    reason = await wait_ended(page)
    assert reason.startswith("error incomplete: the upstream stream ended without its terminal")
    assert [row[3] for row in await table(page)] == ["ADDED", "MODIFIED", "error"]


async def test_a_refused_stream_says_so_and_is_not_retried(browser, start_upstream, start_gateway):
    calls: list[str] = []

    async def unavailable(request: web.Request) -> web.Response:
        calls.append(request.method)
        return web.json_response({"error": "model is loading"}, status=503)

    upstream = await start_upstream({"/watch": unavailable})
    gateway = await start_gateway(
        [{**WATCH_ROUTE, "upstream": upstream + "/watch", "events": {"retry": 100}}], server=DEV
    )
    page = await open_console(browser, gateway, "/watch")
    await page.click("#start")
    assert (await wait_ended(page)).startswith("connection failed")
    await page.check("input[name=method][value=POST]")
    await page.click("#start")
    await page.wait_for_function(
        "document.getElementById('end-reason').textContent.startsWith('HTTP')"
    )
    reason = await page.text_content("#end-reason")
    assert (
        reason
        == "HTTP 503 upstream_status: the upstream answered 503 Service Unavailable: model is loading"
    )
    await asyncio.sleep(0.5)  # several retry periods: an EventSource left open would ask again
    assert calls == ["POST", "POST"]


async def test_console_is_off_in_production_and_the_tap_parameter_is_then_just_a_field(
    start_upstream, start_gateway, http
):
    seen: list[Seen] = []
    upstream = await start_upstream({"/watch": recorded(ndjson_handler(TYPED[:1]), seen)})
    route = {"path": "/watch", "upstream": upstream + "/watch"}
    production = await start_gateway([route])
    forced_on = await start_gateway([route], server={"console": True})
    dev_off = await start_gateway([route], server={"mode": "dev", "console": False})
    for gateway in (production, dev_off):
        async with http.get(f"{gateway}/_console") as response:
            assert response.status == 404
            assert (await response.json())["error"]["code"] == "not_found"
        async with http.get(f"{gateway}/watch?_proxy_tap=1") as response:
            events = parse_events(await response.read())
        assert "upstream-line" not in [e.event for e in events]
    async with http.get(f"{forced_on}/_console") as response:
        assert response.status == 200
    async with http.get(f"{forced_on}/watch?_proxy_tap=1") as response:
        events = parse_events(await response.read())
    assert [e.event for e in events] == ["upstream-line", "message", "end"]
    assert [request.body for request in seen] == [{"_proxy_tap": "1"}, {"_proxy_tap": "1"}, {}]


async def test_the_route_list_shows_no_secrets(start_gateway, http):
    gateway = await start_gateway(
        [
            {
                "path": "/chat",
                "upstream": "https://user:pa55word@llm.internal:8443/v1/chat?api_key=k3y",
                "headers": {"Authorization": "Bearer t0ken"},
                "body": {"defaults": {"model": "llama3.2"}},
            }
        ],
        server=DEV,
    )
    async with http.get(f"{gateway}/_console/routes") as response:
        text = await response.text()
    for secret in ("pa55word", "user:", "k3y", "t0ken"):
        assert secret not in text
    (route,) = orjson.loads(text)["routes"]
    assert route["upstream"] == "https://llm.internal:8443/v1/chat"
    assert route["injected_headers"] == ["Authorization"]
    assert route["body_defaults"] == {"model": "llama3.2"}


# -- a route with streams: POST creates a stream and reads its URL ---------------------------------

COUNTED = [b'{"n": %d}\n' % n for n in range(1, 6)]


def streams_route(upstream: str, **events: Any) -> dict[str, Any]:
    return {
        "path": "/chat",
        "upstream": upstream + "/chat",
        "events": {"data": "/n", **events},
        "resume": {},
        "streams": {},
    }


async def test_on_a_route_with_streams_post_creates_a_stream_and_an_eventsource_reads_its_url(
    browser, start_upstream, start_gateway
):
    seen: list[Seen] = []
    upstream = await start_upstream({"/chat": recorded(ndjson_handler(COUNTED, pause=0.05), seen)})
    gateway = await start_gateway([streams_route(upstream)], server=DEV)
    page = await open_console(browser, gateway, "/chat")
    cdp = await page.context.new_cdp_session(page)
    await cdp.send("Network.enable")
    requests: list[dict[str, Any]] = []

    def on_request(params: dict[str, Any]) -> None:
        requests.append(params)

    cdp.on("Network.requestWillBeSent", on_request)

    await page.check("input[name=method][value=POST]")
    await page.fill("#body", '{"messages": [{"content": "数到五"}]}')
    await page.click("#start")
    assert await wait_ended(page) == "end"

    rows = await table(page)
    # No tap on a stream: the upstream column says so for every row.
    assert [(row[2], row[3], row[5]) for row in rows] == [
        *[("—", "message", str(n)) for n in range(1, 6)],
        ("—", "end", ""),
    ]
    stream_url = re.fullmatch(
        r"POST /chat/streams → 201 (/chat/streams/[\w-]+)", await page.text_content("#url")
    )
    assert stream_url is not None
    key = stream_url[1].rsplit("/", 1)[1]
    assert [row[4] for row in rows] == [f"{key}-{n}" for n in range(1, 7)]
    (source,) = [r for r in requests if r.get("type") == "EventSource"]
    assert source["request"]["url"] == gateway + stream_url[1]
    assert [request.body for request in seen] == [{"messages": [{"content": "数到五"}]}]
    assert "_proxy_tap" not in seen[0].raw_query
    assert page.errors == []


async def test_stop_on_a_stream_deletes_it_the_upstream_request_closes_and_cancelled_is_shown(
    browser, start_upstream, start_gateway
):
    seen: list[Seen] = []
    slow = ndjson_handler([b'{"n": %d}\n' % n for n in range(1, 100)], pause=0.1)
    upstream = await start_upstream({"/chat": recorded(slow, seen)})
    gateway = await start_gateway([streams_route(upstream)], server=DEV)
    page = await open_console(browser, gateway, "/chat")
    await page.check("input[name=method][value=POST]")
    await page.click("#start")
    await page.wait_for_function("document.querySelectorAll('#events tbody tr').length >= 3")
    deletes: list[int] = []
    page.on(
        "response", lambda r: deletes.append(r.status) if r.request.method == "DELETE" else None
    )
    stopped = time.monotonic()
    await page.click("#stop")
    reason = await wait_ended(page)
    await eventually(lambda: seen[0].closed, "the upstream request is closed", within=3)
    assert time.monotonic() - stopped < 3
    assert reason.startswith("error cancelled: ")
    rows = await table(page)
    assert rows[-1][3] == "error"
    assert 3 <= len(rows) < 30
    assert deletes == [204]
    assert len(seen) == 1
    assert page.errors == []


async def test_on_a_route_with_streams_and_event_from_post_shows_every_named_event(
    browser, start_upstream, start_gateway
):
    upstream = await start_upstream({"/watch": ndjson_handler(TYPED)})
    route = {**WATCH_ROUTE, "upstream": upstream + "/watch", "resume": {}, "streams": {}}
    route["events"] = {"event_from": "/type", "complete_when": "/done"}  # resume: sequence ids
    gateway = await start_gateway([route], server=DEV)
    page = await open_console(browser, gateway, "/watch")
    await page.check("input[name=method][value=POST]")
    await page.click("#start")
    assert await wait_ended(page) == "end"
    assert [row[3] for row in await table(page)] == [
        "ADDED",
        "MODIFIED",
        "DELETED",
        "BOOKMARK",
        "end",
    ]
    assert page.errors == []


async def test_the_route_list_says_which_routes_have_streams(start_gateway, http):
    plain = {"path": "/plain", "upstream": "http://127.0.0.1:9/chat"}
    gateway = await start_gateway([plain, streams_route("http://127.0.0.1:9")], server=DEV)
    async with http.get(f"{gateway}/_console/routes") as response:
        routes = (await response.json())["routes"]
    assert [(r["path"], r["streams"]) for r in routes] == [("/plain", False), ("/chat", True)]


# -- the timeline of arrivals ----------------------------------------------------------------------

USAGE = {"prompt_tokens": "/prompt_eval_count", "completion_tokens": "/eval_count"}


def ollama_line(content: str, **fields: Any) -> bytes:
    message = {"role": "assistant", "content": content}
    return orjson.dumps({"model": "llama3.2", "message": message, "done": False, **fields}) + b"\n"


TOKENS = [ollama_line(f"t{n} ") for n in range(1, 16)]
DONE = ollama_line("", done=True, prompt_eval_count=26, eval_count=15)
# 10 tokens 50 ms apart, a 600 ms stall, 5 more and the done line: the 11th tick is the slow one.
PAUSES = [*[0.05] * 9, 0.6, *[0.05] * 5, 0]
FIRST_AFTER = 0.3

TICKS_JS = """() => [...document.querySelectorAll('#timeline-strip .tick')].map(t => ({
  ms: Number(t.dataset.ms), slow: t.classList.contains('slow'),
}))"""


def ms(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d)?) ms", text)
    assert match is not None, text
    return float(match[1])


async def test_the_timeline_has_a_tick_per_arrival_marks_the_stall_and_reads_the_tokens(
    browser, start_upstream, start_gateway, http
):
    lines = [*TOKENS, DONE]
    upstream = await start_upstream(
        {"/api/chat": ndjson_handler(lines, pause=PAUSES, first_after=FIRST_AFTER)}
    )
    route = {"path": "/api/chat", "upstream": upstream + "/api/chat", "usage": USAGE}
    gateway = await start_gateway([route], server=DEV)
    async with http.get(f"{gateway}/_console/routes") as response:
        (described,) = (await response.json())["routes"]
    assert described["usage"] == USAGE
    page = await open_console(browser, gateway, "/api/chat")
    await page.click("#start")

    # Live: the first ten ticks are drawn during the stall, before the stream ends.
    during = await (
        await page.wait_for_function(
            """() => {
              const ticks = document.querySelectorAll('#timeline-strip .tick').length;
              const ended = document.getElementById('end-reason').textContent;
              return ticks >= 10 && {ticks, ended};
            }"""
        )
    ).json_value()
    assert during == {"ticks": 10, "ended": NOT_ENDED}

    assert await wait_ended(page) == "end"
    await page.wait_for_function("document.getElementById('timeline-events').textContent === '16'")
    ticks = await page.evaluate(TICKS_JS)
    rows = await table(page)
    assert len(ticks) == len([row for row in rows if row[3] == "message"]) == 16
    arrivals = [tick["ms"] for tick in ticks]
    assert arrivals == sorted(arrivals)
    first = ms(await page.text_content("#timeline-first"))
    assert FIRST_AFTER * 1000 <= first < 10_000
    assert abs(first - arrivals[0]) < 1
    p50 = ms(await page.text_content("#timeline-gap-p50"))
    assert 25 <= p50 <= 200, p50
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    longest = ms(await page.text_content("#timeline-gap-max"))
    assert longest >= 550
    assert abs(longest - max(gaps)) < 1
    assert gaps.index(max(gaps)) == 9  # the gap before the 11th tick
    assert ms(await page.text_content("#timeline-gap-p99")) == longest  # 15 gaps: p99 is the max
    slow = [i for i, tick in enumerate(ticks) if tick["slow"]]
    assert 10 in slow
    assert len(slow) <= 2, slow  # a stall of the shared machine may mark one more
    assert await page.text_content("#timeline-tokens") == "26 prompt · 15 completion"
    assert page.errors == []

    artifacts = ROOT / "artifacts"
    artifacts.mkdir(exist_ok=True)
    await page.locator("#timeline").screenshot(path=artifacts / "console-timeline.png")


async def test_without_usage_pointers_the_timeline_shows_no_tokens(
    browser, start_upstream, start_gateway
):
    upstream = await start_upstream({"/api/chat": ndjson_handler([*TOKENS[:2], DONE])})
    gateway = await start_gateway(
        [{"path": "/api/chat", "upstream": upstream + "/api/chat"}], server=DEV
    )
    page = await open_console(browser, gateway, "/api/chat")
    await page.click("#start")
    assert await wait_ended(page) == "end"
    await page.wait_for_function("document.getElementById('timeline-events').textContent === '3'")
    assert await page.text_content("#timeline-tokens") == NO_FIGURE
    assert (
        await page.get_attribute("#timeline-tokens", "title") == "the route has no usage pointers"
    )
    assert len(await page.evaluate(TICKS_JS)) == 3
    assert page.errors == []


@pytest.mark.parametrize(
    ("data", "tokens"), [("line", "26 prompt · 15 completion"), ("/message/content", NO_FIGURE)]
)
async def test_on_a_stream_url_the_tokens_come_from_the_data_only_when_it_is_the_whole_line(
    browser, start_upstream, start_gateway, data, tokens
):
    upstream = await start_upstream({"/api/chat": ndjson_handler([*TOKENS, DONE])})
    route = {
        "path": "/api/chat",
        "upstream": upstream + "/api/chat",
        "events": {"data": data},
        "usage": USAGE,
        "resume": {},
        "streams": {},
    }
    gateway = await start_gateway([route], server=DEV)
    page = await open_console(browser, gateway, "/api/chat")
    await page.check("input[name=method][value=POST]")
    await page.click("#start")
    assert await wait_ended(page) == "end"
    await page.wait_for_function("document.getElementById('timeline-events').textContent === '16'")
    assert len(await page.evaluate(TICKS_JS)) == 16
    assert await page.text_content("#timeline-tokens") == tokens
    assert page.errors == []
