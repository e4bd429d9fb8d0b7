"""Chromium and streams as resources: a page POSTs a body of any size to ``{path}/streams``, reads
the stream URL of the ``201`` with a native ``EventSource`` (so DevTools shows every event), and
stops it with ``DELETE``; and the demo page at ``/`` does the same with its Ask and Stop buttons.

What is asserted is what the browser and the upstream observed: the events the page was
dispatched, what DevTools reported over CDP, the statuses the page got, and the request the
upstream received and when its connection was closed.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import web

from proxy.demo import demo_reply_tokens
from tests.support.browser import CLOSED, PageEventSource, messages
from tests.support.upstreams import Seen, recorded
from tests.support.waiting import eventually

# 70,000 CJK ideographs spread over the whole block, 3 bytes each in UTF-8: a chat history of
# about 210 KB, far past what a URL's query can carry (aiohttp refuses a request line over 8 KB).
CHINESE = "".join(chr(0x4E00 + (n * 7919) % 20902) for n in range(70_000))
HISTORY = [
    {"role": "system", "content": "你是一个乐于助人的助手。"},
    {"role": "user", "content": CHINESE},
    {"role": "assistant", "content": "好的\uff0c我读完了。🎉"},
    {"role": "user", "content": "请用一句话总结。"},
]

CREATE_JS = """
async ({collection, body}) => {
  const response = await fetch(collection, {
    method: "POST",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify(body),
  });
  return {status: response.status, location: response.headers.get("Location"),
          json: await response.json()};
}
"""
DELETE_JS = "async (url) => (await fetch(url, {method: 'DELETE'})).status"


class SlowUpstream:
    """NDJSON lines ``{"n": 1}``, ``{"n": 2}``, … written ``pause`` seconds apart; notes when a
    write finds the gateway gone (the handler's view of its connection being closed)."""

    def __init__(self, count: int, pause: float) -> None:
        self.count = count
        self.pause = pause
        self.seen: list[Seen] = []
        self.closed_at: float | None = None
        self.handler = recorded(self._stream, self.seen)

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        try:
            for n in range(1, self.count + 1):
                await asyncio.sleep(self.pause)
                await response.write(b'{"n": %d}\n' % n)
        except (ConnectionError, asyncio.CancelledError):
            self.closed_at = time.monotonic()
            raise
        await response.write_eof()
        return response


async def start(start_upstream, start_gateway, upstream: SlowUpstream) -> str:
    base = await start_upstream({"/chat": upstream.handler})
    route = {
        "path": "/chat",
        "upstream": base + "/chat",
        "body": {"defaults": {"model": "qwen", "stream": True}},
        "events": {"data": "/n", "retry": 300},
        "resume": {},
        "streams": {},
    }
    return await start_gateway([route])


async def same_origin_page(browser: Any, gateway: str) -> Any:
    page = await browser.new_page()
    page.set_default_timeout(15_000)
    await page.goto(f"{gateway}/healthz")
    return page


async def create(page: Any, body: Any) -> str:
    created = await page.evaluate(CREATE_JS, {"collection": "/chat/streams", "body": body})
    assert created["status"] == 201, created
    url = created["json"]["url"]
    assert created["location"] == url
    assert url == f"/chat/streams/{created['json']['id']}"
    return str(url)


async def test_a_200_kb_chinese_body_becomes_a_stream_that_devtools_shows_event_by_event(
    browser, start_upstream, start_gateway
):
    upstream = SlowUpstream(count=8, pause=0.05)
    gateway = await start(start_upstream, start_gateway, upstream)
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

    cdp.on("Network.requestWillBeSent", on_request)
    cdp.on("Network.eventSourceMessageReceived", on_message)

    url = await create(page, {"messages": HISTORY})
    stream = await PageEventSource.open(page, url)
    log = await stream.wait_for("end")
    await asyncio.wait_for(ended.wait(), 10)  # CDP events travel apart from the page's own

    # The upstream got the whole body, every character intact, with the route's defaults.
    (request,) = upstream.seen
    assert len(request.raw_body) > 200_000
    assert request.headers["Content-Type"] == "application/json"
    assert request.body == {"model": "qwen", "stream": True, "messages": HISTORY}

    key = url.rsplit("/", 1)[1]
    expected = [("message", str(n), f"{key}-{n}") for n in range(1, 9)]
    assert messages(log) == [*expected, ("end", "", f"{key}-9")]
    # DevTools: the stream URL is an EventSource request, and it reported each event once.
    (source,) = [r for r in sent if r.get("type") == "EventSource"]
    assert source["request"]["url"] == gateway + url
    assert {m["requestId"] for m in received} == {source["requestId"]}
    devtools = [(m["eventName"], m["data"], m["eventId"]) for m in received]
    assert devtools == messages(log)
    assert len(received) == upstream.count + 1  # every line the upstream sent, and `end`
    assert await stream.ready_state() == CLOSED
    assert len(upstream.seen) == 1


async def test_delete_from_the_page_closes_the_upstream_within_a_second_and_the_eventsource_gets_cancelled(
    browser, start_upstream, start_gateway
):
    upstream = SlowUpstream(count=200, pause=0.05)  # 10 s of lines if nobody stops it
    gateway = await start(start_upstream, start_gateway, upstream)
    page = await same_origin_page(browser, gateway)

    url = await create(page, {"messages": HISTORY})
    stream = await PageEventSource.open(page, url, close_on=("end", "error"))
    await stream.wait_until("(log) => log.filter((e) => e.type === 'message').length >= 3")
    asked = time.monotonic()
    assert await page.evaluate(DELETE_JS, url) == 204
    log = await stream.wait_for("error")

    await eventually(lambda: upstream.closed_at is not None, "the upstream request is closed")
    assert upstream.closed_at is not None
    assert upstream.closed_at - asked < 1.0
    *numbers, last = messages(log)
    assert [data for _, data, _ in numbers] == [str(n) for n in range(1, len(numbers) + 1)]
    assert 3 <= len(numbers) < upstream.count
    assert last[0] == "error"
    assert json.loads(last[1])["code"] == "cancelled"
    assert await stream.ready_state() == CLOSED
    # The stream is over for good: a reader after its last event is told to stop (204), and the
    # upstream was asked once.
    status_after = await page.evaluate(
        """async ([url, id]) => (await fetch(url, {headers: {"Last-Event-ID": id}})).status""",
        [url, last[2]],
    )
    assert status_after == 204
    assert len(upstream.seen) == 1


# -- the demo page --------------------------------------------------------------------------------

LONG_MESSAGE = (
    "请详细解释这个网关是如何把 NDJSON 转换成服务器发送事件的。" * 60
)  # ~1,800 characters


async def test_the_demo_page_answers_a_long_message_and_its_stop_button_stops_the_answer(
    browser, start_gateway
):
    demo_route = {
        "path": "/v1/chat",
        "upstream": "/demo/api/chat",
        # The demo's tokens 100 ms apart: an answer takes a few seconds, time enough to stop it.
        "body": {"defaults": {"model": "demo", "stream": True, "options": {"delay_ms": 100}}},
        "events": {"data": "/message/content", "retry": 3000},
        "resume": {"store": "memory"},
        "streams": {},
    }
    gateway = await start_gateway([demo_route], server={"demo": True})
    page = await browser.new_page(viewport={"width": 900, "height": 600})
    page.set_default_timeout(15_000)
    asked: list[tuple[str, str]] = []
    page.on(
        "response",
        lambda r: asked.append((r.request.method, r.status)) if "/streams" in r.url else None,
    )
    await page.goto(f"{gateway}/")
    await page.wait_for_selector("body[data-state=done]")  # the page's first question, on load

    await page.fill("#prompt", LONG_MESSAGE)
    await page.click("#send")
    await page.wait_for_selector("body[data-state=done]")
    tokens = demo_reply_tokens(LONG_MESSAGE)
    assert await page.text_content("#answer") == "".join(tokens)
    assert await page.text_content("#status") == f"done: {len(tokens) + 1} events"
    assert await page.is_disabled("#stop")

    await page.click("#send")
    await page.wait_for_function(
        "document.getElementById('status').textContent.includes('3 events')"
    )
    assert await page.is_enabled("#stop")
    await page.click("#stop")
    await page.wait_for_selector("body[data-state=stopped]")
    status = await page.text_content("#status")
    assert status.startswith("stopped after ")
    shown = await page.text_content("#answer")
    assert "".join(tokens).startswith(shown)
    assert len(tokens) > int(status.split()[2]) >= 3  # stopped mid-answer
    await asyncio.sleep(0.5)  # five tokens' time: nothing more arrives
    assert await page.text_content("#answer") == shown
    assert await page.is_disabled("#stop")
    # Three questions, each a POST (201) and its stream URL's GET (200); one DELETE (204).
    assert [a for a in asked if a[0] == "POST"] == [("POST", 201)] * 3
    assert [a for a in asked if a[0] == "DELETE"] == [("DELETE", 204)]
    assert [a for a in asked if a[0] == "GET"] == [("GET", 200)] * 3
