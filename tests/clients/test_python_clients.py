"""Real Python SSE clients read the gateway's stream: httpx-sse and sseclient-py.

Both read the shared stream of tests/support/shared_stream.py (unicode with U+2028 and NEL, CR
and LF inside JSON strings, a ~100 KB line, custom names, upstream ids, an in-band ``error``, then
``end``) and must give what our own parser gives from the same bytes, apart from their documented
differences.
"""

from __future__ import annotations

import asyncio

import httpx
from httpx_sse import aconnect_sse
from sseclient import SSEClient

from tests.support.shared_stream import own_id, served_stream


async def test_httpx_sse_reads_the_same_events_names_and_last_ids(
    start_upstream, start_gateway, http
):
    url, _, expected = await served_stream(start_upstream, start_gateway, http)

    async with (
        httpx.AsyncClient(timeout=10) as client,
        aconnect_sse(client, "GET", url) as source,
    ):
        got = [sse async for sse in source.aiter_sse()]

    # httpx-sse dispatches the retry-only block that opens the stream as an empty message;
    # a spec client (and our parser) dispatches nothing for a block without data.
    first = got.pop(0)
    assert (first.event, first.data, first.id, first.retry) == ("message", "", "", 3000)
    assert all(sse.retry is None for sse in got)
    assert [(sse.event, sse.data, sse.id) for sse in got] == [
        (e.event, e.data, e.id) for e in expected
    ]


def read_with_sseclient(url: str) -> list[tuple[str, str, str | None]]:
    """sseclient-py over the raw byte chunks of a blocking httpx stream (run in a thread)."""
    with httpx.Client(timeout=10) as client, client.stream("GET", url) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = SSEClient(response.iter_bytes()).events()
        return [(event.event, event.data, event.id) for event in events]


async def test_sseclient_py_reads_the_same_events_with_only_their_own_ids(
    start_upstream, start_gateway, http
):
    url, _, expected = await served_stream(start_upstream, start_gateway, http)

    got = await asyncio.to_thread(read_with_sseclient, url)

    # sseclient-py does not carry the last event id over: an event without an id line (here the
    # gateway's error and end events) has id None, where the spec keeps the last id in force.
    assert got == [(e.event, e.data, own_id(e)) for e in expected]
    assert [event_id for _, _, event_id in got[-2:]] == ["20", None]
