"""The gateway behind an HTTP/2 front (examples/nginx-http2.conf, examples/Caddyfile), proven with
Chromium.

A browser opens at most 6 HTTP/1.1 connections per origin and every open EventSource holds one, so
a seventh waits; aiohttp serves HTTP/1.1 only, so the answer is a front that speaks HTTP/2 to the
browser. Each test runs the example file as shipped (ports, certificate and paths replaced: see
tests/support/fronts.py) on loopback, in front of a real gateway and a real upstream that stamps
every line with the time it wrote it. The page is always same-origin with what it opens, as the
gateway's pages are; the certificate is made for the test and the page's browser context accepts it.
What is asserted is what Chromium reports (its EventSource events, DevTools' protocol of each
response) and what the upstream was asked.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from yarl import URL

from tests.support.browser import PageEventSource, fetch_stream
from tests.support.upstreams import Seen, ndjson_handler, recorded, stamped_handler

FRONTS = ["nginx", "caddy"]
STREAMS = 12
HTTP1_CONNECTIONS = 6  # Chromium's limit per origin (as every browser's)
INTERVAL = 0.1  # seconds between two upstream lines
EVENTS = 10  # each stream must have had this many within WAIT_MS of opening
WAIT_MS = 10_000


async def page_at(browser: Any, base: str) -> Any:
    """A page on ``base``'s own origin (``/healthz``), trusting the test's certificate."""
    context = await browser.new_context(ignore_https_errors=True)
    page = await context.new_page()
    page.set_default_timeout(15_000)
    await page.goto(f"{base}/healthz")
    return page


async def response_protocols(page: Any) -> dict[str, str]:
    """The protocol DevTools reports for each EventSource response (filled as they come)."""
    cdp = await page.context.new_cdp_session(page)
    await cdp.send("Network.enable")
    protocols: dict[str, str] = {}

    def on_response(params: dict[str, Any]) -> None:
        if params.get("type") == "EventSource":
            protocols[params["requestId"]] = params["response"].get("protocol")

    cdp.on("Network.responseReceived", on_response)
    return protocols


async def open_streams(page: Any, count: int) -> list[PageEventSource]:
    return [
        await PageEventSource.open(page, f"/tick?panel={i}", name=f"panel{i}") for i in range(count)
    ]


async def wait_for_streams_with(page: Any, streams: int, events: int) -> None:
    """Until ``streams`` of the page's EventSources have each had ``events`` messages."""
    await page.wait_for_function(
        """({streams, events}) => Object.values(window.streams)
            .filter((s) => s.log.filter((e) => e.type === "message").length >= events)
            .length >= streams""",
        arg={"streams": streams, "events": events},
        polling=20,
        timeout=WAIT_MS,
    )


async def arrivals(page: Any, streams: list[PageEventSource]) -> list[list[tuple[float, float]]]:
    """Per stream, each message's ``(sent, arrived)``: the upstream's stamp and the page's clock
    at dispatch, both wall-clock milliseconds of this machine."""
    # The harness logs performance.now(); this is its offset to Date.now(), the upstream's clock.
    offset = await page.evaluate("() => Date.now() - performance.now()")
    result = []
    for stream in streams:
        log = await stream.log()
        result.append(
            [
                (orjson.loads(e["data"])["sent_ms"], offset + e["t"])
                for e in log
                if e["type"] == "message"
            ]
        )
    return result


async def tick_gateway(start_upstream, start_gateway, seen: list[Seen]) -> str:
    """A gateway whose ``/tick`` streams a line every INTERVAL for longer than any test runs."""
    upstream = await start_upstream({"/tick": recorded(stamped_handler(INTERVAL, 600), seen)})
    return await start_gateway([{"path": "/tick", "upstream": upstream + "/tick"}])


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# -- 1. Twelve EventSources on one origin ----------------------------------------------------------


@pytest.mark.parametrize("kind", FRONTS)
async def test_twelve_eventsources_through_the_front_all_stream_at_once_over_http2(
    start_upstream, start_gateway, start_front, browser, kind
):
    seen: list[Seen] = []
    front = await start_front(kind, await tick_gateway(start_upstream, start_gateway, seen))
    page = await page_at(browser, front.base)
    protocols = await response_protocols(page)

    streams = await open_streams(page, STREAMS)
    await wait_for_streams_with(page, STREAMS, EVENTS)

    per_stream = await arrivals(page, streams)
    assert all(len(events) >= EVENTS for events in per_stream)
    first = [events[0][1] for events in per_stream]
    # All at once: the last stream's first event came within a second of the first stream's.
    assert max(first) - min(first) < 1000, first
    assert len(seen) == STREAMS
    await asyncio.sleep(0.1)  # DevTools' events travel apart from the page's own
    assert sorted(protocols.values()) == ["h2"] * STREAMS


async def test_the_same_page_straight_at_the_gateway_leaves_the_seventh_eventsource_waiting(
    start_upstream, start_gateway, browser
):
    seen: list[Seen] = []
    gateway = await tick_gateway(start_upstream, start_gateway, seen)
    page = await page_at(browser, gateway)
    protocols = await response_protocols(page)

    streams = await open_streams(page, STREAMS)
    await wait_for_streams_with(page, HTTP1_CONNECTIONS, EVENTS)
    await asyncio.sleep(3)  # 30 more lines for every stream that has a connection

    logs = [await stream.log() for stream in streams]
    flowing = [i for i, log in enumerate(logs) if log]
    assert len(flowing) == HTTP1_CONNECTIONS
    assert all(sum(e["type"] == "message" for e in logs[i]) >= 3 * EVENTS for i in flowing)
    # The other six have not even opened: their requests never left the browser.
    assert len(seen) == HTTP1_CONNECTIONS
    assert sorted(protocols.values()) == ["http/1.1"] * HTTP1_CONNECTIONS

    # A connection comes free when a page closes one of them, and a waiting one takes it.
    await page.evaluate("(name) => window.streams[name].es.close()", streams[flowing[0]].name)
    await wait_for_streams_with(page, HTTP1_CONNECTIONS, 3 * EVENTS + 5)
    logs = [await stream.log() for stream in streams]
    assert len([log for log in logs if log]) == HTTP1_CONNECTIONS + 1
    assert len(seen) == HTTP1_CONNECTIONS + 1


# -- 2. No buffering: each event crosses the front as it is written --------------------------------


@pytest.mark.parametrize("kind", FRONTS)
async def test_each_event_reaches_the_page_through_the_front_within_50_ms(
    start_upstream, start_gateway, start_front, browser, kind
):
    seen: list[Seen] = []
    front = await start_front(kind, await tick_gateway(start_upstream, start_gateway, seen))
    page = await page_at(browser, front.base)

    streams = await open_streams(page, 4)
    await wait_for_streams_with(page, 4, 3 * EVENTS)

    delays = [
        arrived - sent for events in await arrivals(page, streams) for sent, arrived in events
    ]
    p50, p90, worst = percentile(delays, 0.5), percentile(delays, 0.9), max(delays)
    figures = (
        f"{kind}: {len(delays)} events, p50 {p50:.1f} ms, p90 {p90:.1f} ms, max {worst:.1f} ms"
    )
    print(figures)
    assert min(delays) > -5, figures  # one clock: nothing arrives before it was sent
    # Upstream write to page dispatch: gateway, front and browser together. Live tokens need
    # tens of ms; a front that held events for its buffer or a flush timer would show seconds.
    assert p50 < 50, figures
    assert worst < 1000, figures


# -- 3. What the front passes through: Host, X-Forwarded-*, the raw path ---------------------------


async def echo_gateway(start_upstream, start_gateway, seen: list[Seen]) -> str:
    upstream = await start_upstream(
        {"/{tail:.*}": recorded(ndjson_handler([b'{"ok": true}\n']), seen)}
    )
    forward = ["X-Forwarded-For", "X-Forwarded-Proto"]
    return await start_gateway(
        [
            {"path": "/echo", "upstream": upstream + "/echo", "forward_headers": forward},
            {"path": "/u/{name}", "upstream": upstream + "/base/{name}/stream"},
            {"path": "/models/{tail:.*}", "upstream": upstream + "/api/{tail}"},
        ]
    )


async def post_from_the_page(page: Any) -> dict[str, Any]:
    """A POST from the page (which, unlike a same-origin GET, always carries ``Origin``)."""
    return await fetch_stream(
        page,
        "/echo",
        method="POST",
        headers={"Content-Type": "application/json"},
        body=orjson.dumps({"q": 1}).decode(),
    )


@pytest.mark.parametrize("kind", FRONTS)
async def test_through_the_front_a_same_origin_page_is_served_and_a_foreign_origin_is_not(
    start_upstream, start_gateway, start_front, browser, http, kind
):
    seen: list[Seen] = []
    front = await start_front(kind, await echo_gateway(start_upstream, start_gateway, seen))
    page = await page_at(browser, front.base)

    answer = await post_from_the_page(page)
    assert answer["status"] == 200, answer
    assert 'data: {"ok": true}' in answer["text"]
    [request] = seen
    assert request.headers["X-Forwarded-Proto"] == "https"
    assert request.headers["X-Forwarded-For"] == "127.0.0.1"

    headers = {"Origin": "https://elsewhere.example"}
    async with http.post(f"{front.base}/echo", json={}, headers=headers, ssl=False) as response:
        assert response.status == 403
        assert (await response.json())["error"]["code"] == "origin_not_allowed"
    assert len(seen) == 1


async def test_an_nginx_front_that_sends_host_without_its_port_breaks_same_origin_pages(
    start_upstream, start_gateway, start_front, browser
):
    # Why the example says $http_host: $host is the name alone, and the page's origin has a port.
    seen: list[Seen] = []
    gateway = await echo_gateway(start_upstream, start_gateway, seen)
    wrong = {"proxy_set_header Host $http_host;": "proxy_set_header Host $host;"}
    front = await start_front("nginx", gateway, wrong)
    page = await page_at(browser, front.base)

    answer = await post_from_the_page(page)
    assert answer["status"] == 403
    assert orjson.loads(answer["text"])["error"]["code"] == "origin_not_allowed"
    assert seen == []


@pytest.mark.parametrize("kind", FRONTS)
async def test_the_front_passes_the_raw_path_so_the_gateway_keeps_2f_and_refuses_dot_segments(
    start_upstream, start_gateway, start_front, http, kind
):
    # A browser resolves dot segments itself before it sends a request; other clients need not,
    # so these go from aiohttp, exactly as written (HTTP/1.1 to the same TLS listener).
    seen: list[Seen] = []
    front = await start_front(kind, await echo_gateway(start_upstream, start_gateway, seen))

    async def get(path: str) -> tuple[int, Any]:
        url = URL(front.base + path, encoded=True)
        async with http.get(url, ssl=False) as response:
            body = await response.read()
        return response.status, body

    status, _ = await get("/u/a%2Fb")
    assert status == 200
    assert [s.raw_path for s in seen] == ["/base/a%2Fb/stream"]  # one segment, still escaped

    # A front that resolved these would send /admin or / (404 from the gateway) instead; the
    # gateway sees each as sent and refuses it before any upstream request.
    for path in ["/models/a/../../admin", "/u/..", "/u/%2e%2e", "/u/..%2Fadmin"]:
        status, body = await get(path)
        assert (status, orjson.loads(body)["error"]["code"]) == (400, "invalid_path"), path
    # One that, decoded, climbs above the root is refused by nginx itself (its own 400 page);
    # Caddy passes it on to the gateway's 400. Either way no upstream hears of it.
    status, _ = await get("/u/..%2F..%2Fadmin")
    assert status == 400
    assert len(seen) == 1
