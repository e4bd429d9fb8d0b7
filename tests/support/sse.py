"""The SSE reader of the tests: what a spec-following client dispatches, from a whole body or from
an open response event by event.

It is the gateway's own ``SSEParser``, which the unit and conformance tests hold to the spec and
to Chromium; tests that must not trust it read with a browser or a third-party client instead.
"""

from __future__ import annotations

import asyncio

import aiohttp

from proxy.sse import SSEEvent, SSEParser, SSERetry

__all__ = ["EventStream", "parse_all", "parse_events"]


def parse_events(raw: bytes) -> list[SSEEvent]:
    """Events a spec-following client dispatches from ``raw`` (retry lines left out)."""
    parser = SSEParser()
    return [item for item in parser.feed(raw) if isinstance(item, SSEEvent)]


def parse_all(raw: bytes) -> list[SSEEvent | SSERetry]:
    return SSEParser().feed(raw)


class EventStream:
    """An open SSE response, read event by event."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.parser = SSEParser()
        self.events: list[SSEEvent] = []

    async def read_events(self, count: int, within: float = 5.0) -> list[SSEEvent]:
        """The first ``count`` events, once they have arrived (``within`` seconds per read)."""
        while len(self.events) < count:
            chunk = await asyncio.wait_for(self.response.content.readany(), within)
            assert chunk, f"the stream ended after {len(self.events)} events"
            self.events += [e for e in self.parser.feed(chunk) if isinstance(e, SSEEvent)]
        return self.events[:count]

    async def read_to_end(self, within: float = 5.0) -> list[SSEEvent]:
        """Every event of the stream, once it has ended."""
        while chunk := await asyncio.wait_for(self.response.content.readany(), within):
            self.events += [e for e in self.parser.feed(chunk) if isinstance(e, SSEEvent)]
        return self.events

    def close(self) -> None:
        self.response.close()  # a real socket close: the body was not read to its end
