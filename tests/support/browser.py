"""Page-side harness for the Chromium tests: an EventSource whose every event is logged in the
page, and a fetch() that streams a response body to its end.

The page only records; the tests decide. Each logged event keeps what a page's script can see of it
(``type``, ``data``, ``lastEventId``, the ``readyState`` at dispatch) and when (``performance.now()``,
in ms), so the Python side can assert order, content and timing after waiting on a condition over
the log, never on a fixed sleep. An ``error`` event from the gateway is a ``MessageEvent`` with
``data``; the browser's own connection ``error`` is a plain ``Event``, logged with ``data: None``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CONNECTING, OPEN, CLOSED = 0, 1, 2  # EventSource.readyState
WAIT_MS = 15_000

# onopen / onmessage are the properties pages use; every other type needs addEventListener, which
# is exactly what the tests are about ("end", "error", names from events.event_from).
OPEN_EVENT_SOURCE_JS = """
({name, url, listen, closeOn}) => {
  const es = new EventSource(url);
  const log = [];
  window.streams = window.streams || {};
  window.streams[name] = {es, log};
  const record = (e) => log.push({
    type: e.type,
    data: e instanceof MessageEvent ? e.data : null,
    lastEventId: e instanceof MessageEvent ? e.lastEventId : null,
    readyState: es.readyState,
    t: performance.now(),
  });
  es.onopen = record;
  es.onmessage = record;
  for (const type of [...listen, "error"]) es.addEventListener(type, record);
  for (const type of closeOn) es.addEventListener(type, () => es.close());
}
"""

# A streaming fetch as SSE-over-fetch libraries do it: read response.body chunk by chunk and decode
# it as one UTF-8 stream (a character may be split across chunks).
FETCH_STREAM_JS = """
async ({url, init}) => {
  const response = await fetch(url, init);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let text = "";
  for (;;) {
    const {done, value} = await reader.read();
    if (done) break;
    text += decoder.decode(value, {stream: true});
  }
  text += decoder.decode();
  return {status: response.status, contentType: response.headers.get("content-type"), text};
}
"""


@dataclass(frozen=True)
class PageEventSource:
    """An ``EventSource`` living in ``page``, known there as ``window.streams[name]``."""

    page: Any
    name: str

    @classmethod
    async def open(
        cls,
        page: Any,
        url: str,
        *,
        listen: tuple[str, ...] = ("end",),
        close_on: tuple[str, ...] = ("end",),
        name: str = "es",
    ) -> PageEventSource:
        """``listen``: event types besides open/message/error to log; ``close_on``: types whose
        arrival makes the page call ``es.close()``, the way a page stops a finished stream."""
        arg = {"name": name, "url": url, "listen": list(listen), "closeOn": list(close_on)}
        await page.evaluate(OPEN_EVENT_SOURCE_JS, arg)
        return cls(page, name)

    async def wait_until(self, condition: str) -> list[dict[str, Any]]:
        """Wait until the JS arrow ``condition`` (``log => ...``) is true; return the log."""
        await self.page.wait_for_function(
            f"(name) => ({condition})(window.streams[name].log)",
            arg=self.name,
            polling=20,
            timeout=WAIT_MS,
        )
        return await self.log()

    async def wait_for(self, event_type: str) -> list[dict[str, Any]]:
        return await self.wait_until(f"(log) => log.some((e) => e.type === {event_type!r})")

    async def log(self) -> list[dict[str, Any]]:
        return await self.page.evaluate("(name) => window.streams[name].log", self.name)

    async def ready_state(self) -> int:
        return await self.page.evaluate("(name) => window.streams[name].es.readyState", self.name)


async def fetch_stream(page: Any, url: str, **init: Any) -> dict[str, Any]:
    """``fetch(url, init)`` in the page, its body read to the end: status, contentType, text."""
    return await page.evaluate(FETCH_STREAM_JS, {"url": url, "init": init})


def messages(log: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """The dispatched MessageEvents as ``(type, data, lastEventId)``: what the page was told."""
    return [(e["type"], e["data"], e["lastEventId"]) for e in log if e["data"] is not None]
