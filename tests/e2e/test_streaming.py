"""The streaming guarantees on real sockets: flushed at once, bounded, closed with the client."""

from __future__ import annotations

import asyncio
import time

import orjson
from aiohttp import web

from proxy.sse import SSEEvent, SSEParser
from tests.support.sse import parse_events
from tests.support.upstreams import ndjson_handler


async def open_raw_stream(
    gateway: str, path: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A bare TCP client: sends the EventSource request and reads only the response head."""
    host, port = gateway.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n"
        "Cache-Control: no-cache\r\n\r\n".encode()
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200"), head
    return reader, writer


async def test_each_event_is_flushed_before_the_upstream_sends_the_next_line(
    start_upstream, start_gateway, http
):
    released: list[asyncio.Event] = [asyncio.Event() for _ in range(3)]

    async def lockstep(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        for index, gate in enumerate(released):
            await response.write(orjson.dumps({"n": index}) + b"\n")
            # The next line is only sent once the client has parsed this one.
            await asyncio.wait_for(gate.wait(), 5)
        await response.write_eof()
        return response

    upstream = await start_upstream({"/chat": lockstep})
    gateway = await start_gateway(
        [{"path": "/chat", "upstream": upstream + "/chat", "events": {"heartbeat": 0}}]
    )
    async with http.get(f"{gateway}/chat") as response:
        parser = SSEParser()
        seen: list[str] = []
        for index, gate in enumerate(released):
            started = time.perf_counter()
            while len(seen) <= index:
                chunk = await asyncio.wait_for(response.content.readany(), 2)
                seen += [e.data for e in parser.feed(chunk) if isinstance(e, SSEEvent)]
            assert seen[index] == orjson.dumps({"n": index}).decode()
            assert time.perf_counter() - started < 1.0
            gate.set()
        rest = parse_events(await response.read())
    assert [e.event for e in rest] == ["end"]


async def test_chunk_boundaries_inside_utf8_and_between_cr_and_lf_do_not_matter(
    start_upstream, start_gateway, http
):
    pieces = [
        b'{"t": "caf\xc3',
        b'\xa9"}\r',
        b'\n{"t": "\xe2\x82',
        b'\xac"}',
        b"\r\n",
        b'{"t": "last"}',
    ]

    upstream = await start_upstream({"/chat": ndjson_handler(pieces, pause=0.03)})
    gateway = await start_gateway(
        [
            {
                "path": "/chat",
                "upstream": upstream + "/chat",
                "events": {"data": "/t", "heartbeat": 0},
            }
        ]
    )
    async with http.get(f"{gateway}/chat") as response:
        events = parse_events(await response.read())
    assert [(e.event, e.data) for e in events] == [
        ("message", "café"),
        ("message", "€"),
        ("message", "last"),
        ("end", ""),
    ]


async def test_line_over_max_line_bytes_is_an_error_event_not_an_allocation(
    start_upstream, start_gateway, http
):
    sent = {"bytes": 0, "closed_early": False}

    async def huge_line(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        await response.write(b'{"ok": 1}\n{"ok": 2}\n{"big": "')
        try:
            for _ in range(1600):  # 100 MB that never ends the line
                await response.write(b"x" * 65536)
                sent["bytes"] += 65536
        except (ConnectionResetError, asyncio.CancelledError):
            sent["closed_early"] = True
            raise
        return response

    upstream = await start_upstream({"/chat": huge_line})
    gateway = await start_gateway(
        [{"path": "/chat", "upstream": upstream + "/chat", "limits": {"max_line_bytes": 1 << 20}}]
    )
    async with http.get(f"{gateway}/chat") as response:
        events = parse_events(await response.read())
    assert [e.data for e in events[:2]] == ['{"ok": 1}', '{"ok": 2}']
    assert events[2].event == "error"
    error = orjson.loads(events[2].data)
    assert error["code"] == "line_too_long"
    assert "line 3" in error["message"]
    assert len(events) == 3  # no end event after an error
    await asyncio.sleep(0.5)
    assert sent["closed_early"]
    assert sent["bytes"] < 50 * (1 << 20)


async def test_client_that_stops_reading_pauses_the_upstream(start_upstream, start_gateway):
    written = {"bytes": 0}
    line = orjson.dumps({"pad": "x" * 16000}) + b"\n"

    async def firehose(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        for _ in range(40000):  # 640 MB offered, far more than any sane buffer
            await response.write(line)
            written["bytes"] += len(line)
        return response

    upstream = await start_upstream({"/chat": firehose})
    gateway = await start_gateway(
        [{"path": "/chat", "upstream": upstream + "/chat", "events": {"heartbeat": 0}}]
    )
    reader, writer = await open_raw_stream(gateway, "/chat")
    try:
        await reader.read(65536)  # the stream has started; now the client reads nothing more
        await asyncio.sleep(1.5)
        plateau = written["bytes"]
        await asyncio.sleep(1.0)
        # Backpressure: nothing moved while the client was not reading, and what did move is
        # bounded by socket and stream buffers, nowhere near what the upstream offered.
        assert written["bytes"] == plateau
        assert plateau < 64 * (1 << 20)
        # Reading again resumes the flow.
        for _ in range(200):
            await reader.read(1 << 20)
        assert written["bytes"] > plateau
    finally:
        writer.close()


async def test_client_that_goes_away_closes_a_silent_upstream_within_a_second(
    start_upstream, start_gateway
):
    closed_at: list[float] = []
    started = asyncio.Event()

    async def slow(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        await response.write(b'{"token": "first"}\n')
        started.set()
        try:
            await asyncio.sleep(30)  # thinking, silently
        except asyncio.CancelledError:
            closed_at.append(time.perf_counter())
            raise
        return response

    upstream = await start_upstream({"/chat": slow})
    gateway = await start_gateway([{"path": "/chat", "upstream": upstream + "/chat"}])
    reader, writer = await open_raw_stream(gateway, "/chat")
    body = b""
    while b'"first"' not in body:
        body += await asyncio.wait_for(reader.read(4096), 5)
    await started.wait()
    writer.close()
    left_at = time.perf_counter()
    for _ in range(30):
        if closed_at:
            break
        await asyncio.sleep(0.05)
    assert closed_at, "the upstream request was still open 1.5 s after the client left"
    assert closed_at[0] - left_at < 1.0


async def test_client_that_goes_away_mid_flow_closes_a_busy_upstream(start_upstream, start_gateway):
    closed = asyncio.Event()

    async def busy(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        try:
            for n in range(100000):
                await response.write(b'{"n": %d}\n' % n)
                await asyncio.sleep(0.001)
        except (asyncio.CancelledError, ConnectionResetError):
            closed.set()
            raise
        return response

    upstream = await start_upstream({"/chat": busy})
    gateway = await start_gateway([{"path": "/chat", "upstream": upstream + "/chat"}])
    reader, writer = await open_raw_stream(gateway, "/chat")
    await asyncio.wait_for(reader.read(4096), 5)
    writer.close()
    await asyncio.wait_for(closed.wait(), 1.0)


async def test_heartbeat_comment_after_silence_and_none_when_disabled(
    start_upstream, start_gateway, http
):
    async def pause(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        await response.write(b'{"a": 1}\n')
        await asyncio.sleep(0.75)
        await response.write(b'{"a": 2}\n')
        await response.write_eof()
        return response

    upstream = await start_upstream({"/chat": pause})
    gateway = await start_gateway(
        [
            {"path": "/beat", "upstream": upstream + "/chat", "events": {"heartbeat": 0.2}},
            {"path": "/quiet", "upstream": upstream + "/chat", "events": {"heartbeat": 0}},
        ]
    )
    async with http.get(f"{gateway}/beat") as response:
        raw = await response.read()
    assert 2 <= raw.count(b": ping\n\n") <= 4
    assert [e.data for e in parse_events(raw)] == ['{"a": 1}', '{"a": 2}', ""]
    async with http.get(f"{gateway}/quiet") as response:
        assert b": ping" not in await response.read()


async def test_upstream_that_dies_mid_stream_gives_an_error_event(
    start_upstream, start_gateway, http
):
    async def dies(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        await response.write(b'{"a": 1}\n{"a": 2')
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.abort()  # chunked body never terminated: the connection just drops
        return response

    upstream = await start_upstream({"/chat": dies})
    gateway = await start_gateway([{"path": "/chat", "upstream": upstream + "/chat"}])
    async with http.get(f"{gateway}/chat") as response:
        events = parse_events(await response.read())
    assert events[0].data == '{"a": 1}'
    assert events[-1].event == "error"
    assert orjson.loads(events[-1].data)["code"] == "upstream_closed"
    assert "end" not in [e.event for e in events]


async def test_upstream_silent_mid_stream_past_read_timeout_gives_an_error_event(
    start_upstream, start_gateway, http
):
    async def stalls(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        await response.write(b'{"a": 1}\n')
        await asyncio.sleep(10)
        return response

    upstream = await start_upstream({"/chat": stalls})
    gateway = await start_gateway(
        [
            {
                "path": "/chat",
                "upstream": upstream + "/chat",
                "timeouts": {"read": 0.4},
                "events": {"heartbeat": 0.1},
            }
        ]
    )
    started = time.perf_counter()
    async with http.get(f"{gateway}/chat") as response:
        raw = await response.read()
    assert time.perf_counter() - started < 3
    events = parse_events(raw)
    assert events[0].data == '{"a": 1}'
    error = orjson.loads(events[-1].data)
    assert (events[-1].event, error["code"]) == ("error", "upstream_timeout")
    assert b": ping" in raw  # heartbeats went out while waiting; they do not reset the read timeout


async def test_upstream_connections_are_reused_by_the_one_client_session(
    start_upstream, start_gateway, http
):
    peers: list[object] = []

    async def record(request: web.Request) -> web.Response:
        assert request.transport is not None
        peers.append(request.transport.get_extra_info("peername"))
        return web.Response(body=b'{"a": 1}\n', content_type="application/x-ndjson")

    upstream = await start_upstream({"/chat": record})
    gateway = await start_gateway([{"path": "/chat", "upstream": upstream + "/chat"}])
    for _ in range(3):
        async with http.get(f"{gateway}/chat") as response:
            await response.read()
    assert len(peers) == 3
    assert len(set(peers)) == 1  # one pool, one kept-alive connection


async def test_no_heartbeat_while_events_keep_flowing(start_upstream, start_gateway, http):
    steady = ndjson_handler([b'{"n": %d}\n' % n for n in range(20)], pause=0.05)
    upstream = await start_upstream({"/chat": steady})
    gateway = await start_gateway(
        [{"path": "/chat", "upstream": upstream + "/chat", "events": {"heartbeat": 0.2}}]
    )
    async with http.get(f"{gateway}/chat") as response:
        raw = await response.read()
    assert b": ping" not in raw
    assert len(parse_events(raw)) == 21
