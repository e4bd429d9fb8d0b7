"""``framing: auto`` over real sockets, for backends that label NDJSON ``application/json``
(Kubernetes watch, etcd's ``/v3/watch``): each line is an event as it arrives, while a real
single document is still one event; a document that never ends leaves a hint in the log."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from proxy import sources
from tests.support.sse import EventStream, parse_events


def watch(lines: list[bytes], pause: float, then_wait: float = 0.0):
    """An upstream that writes ``lines`` labelled application/json, ``pause`` apart, noting
    when it wrote each, then stays open ``then_wait`` seconds."""
    written: list[float] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        for line in lines:
            await response.write(line)
            written.append(time.monotonic())
            await asyncio.sleep(pause)
        await asyncio.sleep(then_wait)
        await response.write_eof()
        return response

    return handler, written


async def test_a_watch_labelled_json_is_an_event_per_line_as_each_arrives(
    start_upstream, start_gateway, http
):
    lines = [b'{"type":"ADDED","object":{"n":%d}}\n' % n for n in range(1, 6)]
    handler, written = watch(lines, pause=0.3)
    upstream = await start_upstream({"/watch": handler})
    gateway = await start_gateway(
        [{"path": "/watch", "upstream": upstream + "/watch", "events": {"data": "/object/n"}}]
    )
    async with http.get(f"{gateway}/watch") as response:
        stream = EventStream(response)
        arrived = []
        for count in range(1, len(lines) + 1):
            event = (await stream.read_events(count))[-1]
            arrived.append((event.data, time.monotonic()))
        rest = await stream.read_to_end()
    assert [data for data, _ in arrived] == ["1", "2", "3", "4", "5"]
    assert [e.event for e in rest[len(lines) :]] == ["end"]
    # Each event within a generous bound of its line's write, long before the body ended.
    delays = [at - wrote for (_, at), wrote in zip(arrived, written, strict=True)]
    assert max(delays) < 0.25, delays


async def test_a_watch_s_first_line_is_an_event_while_the_watch_is_quiet(
    start_upstream, start_gateway, http
):
    # etcd sends its "created" line, then nothing until the first change.
    handler, _ = watch([b'{"result":{"created":true}}\n'], pause=0, then_wait=3)
    upstream = await start_upstream({"/watch": handler})
    gateway = await start_gateway([{"path": "/watch", "upstream": upstream + "/watch"}])
    async with http.get(f"{gateway}/watch") as response:
        (event,) = await EventStream(response).read_events(1, within=1.5)
    assert event.data == '{"result":{"created":true}}'


async def test_a_pretty_printed_document_is_still_one_event(start_upstream, start_gateway, http):
    async def document(request: web.Request) -> web.Response:
        return web.Response(
            body=b'{\n  "message": {"content": "whole answer"},\n  "done": true\n}\n',
            content_type="application/json",
        )

    upstream = await start_upstream({"/chat": document})
    gateway = await start_gateway(
        [{"path": "/chat", "upstream": upstream + "/chat", "events": {"data": "/message/content"}}]
    )
    async with http.get(f"{gateway}/chat") as response:
        events = parse_events(await response.read())
    assert [(e.event, e.data) for e in events] == [("message", "whole answer"), ("end", "")]


async def test_a_document_that_does_not_end_leaves_a_hint_to_set_framing(
    start_upstream, start_gateway, http, caplog, monkeypatch
):
    monkeypatch.setattr(sources, "DOCUMENT_HINT_AFTER", 0.3)
    # Pretty-printed NDJSON would look like this: the first line is no whole value.
    handler, _ = watch([b"{\n", b'  "n": 1\n', b"}\n"], pause=0.4)
    upstream = await start_upstream({"/pretty": handler})
    route = {"path": "/pretty", "upstream": upstream + "/pretty", "events": {"heartbeat": 0.1}}
    gateway = await start_gateway([route])
    with caplog.at_level("WARNING", logger="proxy"):
        async with http.get(f"{gateway}/pretty") as response:
            events = parse_events(await response.read())
    assert [e.data.replace("\n", "").replace(" ", "") for e in events] == ['{"n":1}', ""]
    hints = [r.getMessage() for r in caplog.records if "framing: ndjson" in r.getMessage()]
    assert len(hints) == 1, hints
    assert "route /pretty" in hints[0]


async def test_explicit_framing_json_gives_no_hint(
    start_upstream, start_gateway, http, caplog, monkeypatch
):
    monkeypatch.setattr(sources, "DOCUMENT_HINT_AFTER", 0.3)
    handler, _ = watch([b"{\n", b'  "n": 1\n', b"}\n"], pause=0.4)
    upstream = await start_upstream({"/doc": handler})
    route = {
        "path": "/doc",
        "upstream": upstream + "/doc",
        "framing": "json",
        "events": {"heartbeat": 0.1},
    }
    gateway = await start_gateway([route])
    with caplog.at_level("WARNING", logger="proxy"):
        async with http.get(f"{gateway}/doc") as response:
            await response.read()
    assert not [r for r in caplog.records if "framing: ndjson" in r.getMessage()]
