"""Stream limits, ``max_duration`` and the drain at shutdown, end to end on loopback sockets.

Limits are checked against real upstreams that count their requests, so "refused before the
upstream" is something the upstream itself reports. The SIGTERM tests run ``python -m proxy`` as a
user would, with a config file, and watch the process exit; the drain window is made observable
with a client that never reads, whose stream cannot end until the drain gives up on it.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from proxy import create_app, make_runner, parse_config
from proxy.app import STREAMS
from proxy.sse import SSEEvent
from tests.support.processes import GatewayProcess, start_gateway_process
from tests.support.sse import EventStream
from tests.support.upstreams import Handler, Seen, ndjson_handler, recorded
from tests.support.waiting import eventually

SHUTTING_DOWN = {
    "error": {
        "code": "shutting_down",
        "message": "this gateway is shutting down; retry, and another replica will answer",
    }
}


# -- upstreams that report what happened to their requests -----------------------------------------


def line(n: int) -> bytes:
    return b'{"n": %d}\n' % n


def closed(seen: list[Seen]) -> int:
    """How many of the upstream's requests the gateway closed before their answer ended."""
    return sum(request.closed for request in seen)


def silent_after_first_line() -> Handler:
    """The first line, then silence for longer than any test runs."""
    return ndjson_handler([line(0)], pause=60)


def drip(every: float) -> Handler:
    """A line every ``every`` seconds, for far longer than any test runs."""
    return ndjson_handler([line(n) for n in range(1, 100_000)], pause=every)


class Firehose:
    """16 KB lines as fast as the gateway takes them; ``written`` counts the bytes written."""

    big = orjson.dumps({"pad": "x" * 16000}) + b"\n"

    def __init__(self) -> None:
        self.written = 0

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        for _ in range(100_000):
            await response.write(self.big)
            self.written += len(self.big)
        return response


# -- clients ----------------------------------------------------------------------------------------


async def open_stream(http: aiohttp.ClientSession, url: str, **kwargs: Any) -> EventStream:
    """A stream that is open for sure: its first event has arrived."""
    response = await http.get(url, **kwargs)
    assert response.status == 200, await response.text()
    stream = EventStream(response)
    await stream.read_events(1)
    return stream


async def refused(http: aiohttp.ClientSession, url: str) -> tuple[int, str | None, Any]:
    async with http.get(url) as response:
        return response.status, response.headers.get("Retry-After"), await response.json()


async def admitted_within(seconds: float, http: aiohttp.ClientSession, url: str) -> None:
    """Retries ``url`` while it answers 503 (a slot is released when its handler ends, a moment
    after the client leaves); the admitted stream is read to its first event and closed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        response = await http.get(url)
        try:
            if response.status == 200:
                await EventStream(response).read_events(1)
                return
            assert response.status == 503, await response.text()
        finally:
            response.close()
        assert loop.time() < deadline, f"no stream admitted within {seconds} s"
        await asyncio.sleep(0.05)


def error_of(event: SSEEvent) -> dict[str, Any]:
    assert event.event == "error", event
    return json.loads(event.data)


def too_many(message: str) -> dict[str, Any]:
    return {"error": {"code": "too_many_streams", "message": message}}


# -- a real gateway process -------------------------------------------------------------------------


@pytest.fixture
async def gateway_process(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """``await start(config) -> GatewayProcess``: ``python -m proxy --config`` on any port."""
    started: list[GatewayProcess] = []

    async def start(config: dict[str, Any]) -> GatewayProcess:
        path = tmp_path / "cfg.yaml"
        path.write_text(json.dumps(config))  # JSON is YAML
        gateway = await start_gateway_process("--config", str(path), "--port", "0")
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        await gateway.stop()


# -- per-route and gateway limits -------------------------------------------------------------------


async def test_route_at_max_streams_refuses_with_503_before_the_upstream_until_a_stream_closes(
    start_upstream, start_gateway, http
):
    silent: list[Seen] = []
    upstream = await start_upstream(
        {
            "/silent": recorded(silent_after_first_line(), silent),
            "/quick": ndjson_handler([line(1), line(2)]),
        }
    )
    gateway = await start_gateway(
        [
            {"path": "/limited", "upstream": upstream + "/silent", "limits": {"max_streams": 2}},
            {"path": "/other", "upstream": upstream + "/quick"},
        ]
    )
    first = await open_stream(http, gateway + "/limited")
    second = await open_stream(http, gateway + "/limited")
    try:
        assert await refused(http, gateway + "/limited") == (
            503,
            "1",
            too_many("route /limited has its maximum of 2 open streams"),
        )
        assert len(silent) == 2  # the refused request never reached the upstream

        async with http.get(gateway + "/other") as response:
            assert response.status == 200
            events = EventStream(response)
            assert [(e.event, e.data) for e in await events.read_to_end()] == [
                ("message", '{"n": 1}'),
                ("message", '{"n": 2}'),
                ("end", ""),
            ]

        first.close()
        await eventually(lambda: closed(silent) == 1, "the upstream of the closed stream ended")
        await admitted_within(5, http, gateway + "/limited")
        assert len(silent) == 3
    finally:
        first.close()
        second.close()


async def test_gateway_max_streams_counts_streams_of_all_routes(
    start_upstream, start_gateway, http
):
    silent: list[Seen] = []
    upstream = await start_upstream({"/silent": recorded(silent_after_first_line(), silent)})
    gateway = await start_gateway(
        [
            {"path": "/a", "upstream": upstream + "/silent"},
            {"path": "/b", "upstream": upstream + "/silent"},
        ],
        server={"max_streams": 2},
    )
    on_a = await open_stream(http, gateway + "/a")
    on_b = await open_stream(http, gateway + "/b")
    try:
        full = (503, "1", too_many("the gateway has its maximum of 2 open streams"))
        assert await refused(http, gateway + "/a") == full
        assert await refused(http, gateway + "/b") == full
        assert len(silent) == 2

        on_b.close()
        await eventually(lambda: closed(silent) == 1, "the upstream of the closed stream ended")
        await admitted_within(5, http, gateway + "/a")
        assert len(silent) == 3
    finally:
        on_a.close()
        on_b.close()


async def test_requests_that_fail_before_streaming_do_not_keep_their_slot(
    start_upstream, start_gateway, http
):
    async def broken(request: web.Request) -> web.Response:
        return web.json_response({"error": "model not loaded"}, status=500)

    upstream = await start_upstream({"/broken": broken})
    gateway = await start_gateway(
        [{"path": "/chat", "upstream": upstream + "/broken", "limits": {"max_streams": 1}}]
    )
    for _ in range(3):
        async with http.get(gateway + "/chat") as response:
            assert response.status == 500
            assert (await response.json())["error"]["code"] == "upstream_status"
    for _ in range(3):
        async with http.get(gateway + "/chat", params={"body": "not json"}) as response:
            assert response.status == 400
            assert (await response.json())["error"]["code"] == "invalid_json"


# -- max_duration -----------------------------------------------------------------------------------


async def test_stream_past_max_duration_ends_with_an_error_event_and_closes_the_upstream(
    start_upstream, start_gateway, http
):
    seen: list[Seen] = []
    upstream = await start_upstream({"/drip": recorded(drip(0.1), seen)})
    gateway = await start_gateway(
        [{"path": "/chat", "upstream": upstream + "/drip", "limits": {"max_duration": 0.5}}]
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with http.get(gateway + "/chat") as response:
        assert response.status == 200
        events = await EventStream(response).read_to_end()
    elapsed = loop.time() - started
    assert 0.5 <= elapsed < 2.0
    *messages, last = events
    assert 2 <= len(messages) <= 8
    assert [e.data for e in messages] == [
        line(n).decode().strip() for n in range(1, len(messages) + 1)
    ]
    assert error_of(last) == {
        "code": "max_duration",
        "message": "the stream reached its maximum of 0.5 s",
    }
    await eventually(lambda: closed(seen) == 1, "the upstream request was closed", within=2)


async def test_stream_that_finishes_within_max_duration_ends_normally(
    start_upstream, start_gateway, http
):
    upstream = await start_upstream({"/short": ndjson_handler([line(1), line(2)], pause=0.05)})
    gateway = await start_gateway(
        [{"path": "/chat", "upstream": upstream + "/short", "limits": {"max_duration": 0.5}}]
    )
    async with http.get(gateway + "/chat") as response:
        events = await EventStream(response).read_to_end()
    assert [(e.event, e.data) for e in events] == [
        ("message", '{"n": 1}'),
        ("message", '{"n": 2}'),
        ("end", ""),
    ]


async def test_ndjson_passthrough_past_max_duration_ends_with_an_error_line(
    start_upstream, start_gateway, http
):
    seen: list[Seen] = []
    upstream = await start_upstream({"/drip": recorded(drip(0.1), seen)})
    gateway = await start_gateway(
        [{"path": "/chat", "upstream": upstream + "/drip", "limits": {"max_duration": 0.5}}]
    )
    async with http.get(gateway + "/chat", headers={"Accept": "application/x-ndjson"}) as response:
        assert response.status == 200
        assert response.content_type == "application/x-ndjson"
        body = await asyncio.wait_for(response.read(), 5)
    *lines, last = body.split(b"\n")[:-1]
    assert body.endswith(b"\n")
    assert lines == [line(n).strip() for n in range(1, len(lines) + 1)]
    assert len(lines) >= 2
    assert orjson.loads(last) == {
        "error": {"code": "max_duration", "message": "the stream reached its maximum of 0.5 s"}
    }
    await eventually(lambda: closed(seen) == 1, "the upstream request was closed", within=2)


# -- health and readiness ---------------------------------------------------------------------------


async def test_readyz_and_healthz_answer_200_while_serving(start_gateway, http):
    gateway = await start_gateway([])
    async with http.get(gateway + "/readyz") as response:
        assert (response.status, await response.json()) == (200, {"status": "ready"})
    async with http.get(gateway + "/healthz") as response:
        assert (response.status, (await response.json())["status"]) == (200, "ok")


# -- the drain --------------------------------------------------------------------------------------


async def test_drain_tells_open_streams_shutting_down_and_refuses_new_ones(start_upstream, http):
    """In process, with an upstream that is silent when the drain comes: nothing is being read or
    written, and the stream must still end at once."""
    seen: list[Seen] = []
    upstream = await start_upstream({"/silent": recorded(silent_after_first_line(), seen)})
    config = {"routes": [{"path": "/chat", "upstream": upstream + "/silent"}]}
    app = create_app(parse_config(json.dumps(config), {}))
    runner = make_runner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        gateway = f"http://127.0.0.1:{runner.addresses[0][1]}"
        sse = await open_stream(http, gateway + "/chat")
        raw = await http.get(gateway + "/chat", headers={"Accept": "application/x-ndjson"})
        assert await asyncio.wait_for(raw.content.readline(), 5) == line(0)

        assert app[STREAMS].drain() == 2

        events = await sse.read_to_end(within=2)
        assert [(e.event, e.data) for e in events[:-1]] == [("message", '{"n": 0}')]
        assert error_of(events[-1]) == SHUTTING_DOWN["error"]
        assert await asyncio.wait_for(raw.read(), 2) == orjson.dumps(SHUTTING_DOWN) + b"\n"
        await eventually(lambda: closed(seen) == 2, "both upstream requests were closed", within=2)

        async with http.get(gateway + "/readyz") as response:
            assert (response.status, await response.json()) == (503, {"status": "draining"})
        assert await refused(http, gateway + "/chat") == (503, "1", SHUTTING_DOWN)
        assert len(seen) == 2
    finally:
        await runner.cleanup()


async def test_sigterm_tells_each_open_stream_shutting_down_and_exits_0(
    start_upstream, gateway_process, http
):
    seen: list[Seen] = []
    upstream = await start_upstream({"/drip": recorded(drip(0.2), seen)})
    running = await gateway_process(
        {
            "server": {"drain_seconds": 5},
            "routes": [{"path": "/chat", "upstream": upstream + "/drip"}],
        }
    )
    process, gateway = running.process, running.base
    streams = [await open_stream(http, gateway + "/chat") for _ in range(2)]
    try:
        for stream in streams:
            await stream.read_events(3)
        loop = asyncio.get_running_loop()
        signalled = loop.time()
        process.send_signal(signal.SIGTERM)

        for stream in streams:
            *messages, last = await stream.read_to_end(within=5)
            assert loop.time() - signalled < 2.0
            count = len(messages)
            assert [(e.event, e.id, e.data) for e in messages] == [
                ("message", str(n), line(n).decode().strip()) for n in range(1, count + 1)
            ]
            assert error_of(last) == SHUTTING_DOWN["error"]
            assert last.id == str(count)  # the last id in force: a reconnect resumes after it
        await eventually(lambda: closed(seen) == 2, "both upstream requests were closed", within=3)

        assert await asyncio.wait_for(process.wait(), 7) == 0
        assert loop.time() - signalled < 5 + 2
    finally:
        for stream in streams:
            stream.close()


async def test_during_the_drain_readyz_fails_new_streams_get_503_and_a_stuck_client_is_cut_off(
    start_upstream, gateway_process, http
):
    """A client that never reads keeps its handler blocked in a write, so the drain lasts its
    whole ``drain_seconds``: long enough to look at the gateway while it drains, and the proof
    that such a client cannot hold the process up."""
    seen: list[Seen] = []
    fire = Firehose()
    upstream = await start_upstream({"/fire": recorded(fire, seen)})
    running = await gateway_process(
        {
            "server": {"drain_seconds": 2},
            "routes": [{"path": "/chat", "upstream": upstream + "/fire"}],
        }
    )
    process, gateway = running.process, running.base
    host, port = gateway.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(f"GET /chat HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200"), head
        # Read nothing more; wait until the buffers are full and the upstream is held back.
        plateau = -1
        for _ in range(30):
            if fire.written == plateau:
                break
            plateau = fire.written
            await asyncio.sleep(0.3)
        assert plateau > 0
        assert fire.written == plateau, "the upstream was never held back by the stuck client"

        loop = asyncio.get_running_loop()
        signalled = loop.time()
        process.send_signal(signal.SIGTERM)
        await eventually(lambda: closed(seen) == 1, "the upstream request was closed", within=2)

        async with http.get(gateway + "/readyz") as response:
            assert (response.status, await response.json()) == (503, {"status": "draining"})
        async with http.get(gateway + "/healthz") as response:
            assert response.status == 200
        assert await refused(http, gateway + "/chat") == (503, "1", SHUTTING_DOWN)
        assert len(seen) == 1
        assert process.returncode is None  # all of that was seen inside the drain window

        # serve() promises an exit "within server.drain_seconds"; a second is left for the
        # interpreter's own exit and for cancelling what the drain could not end.
        assert await asyncio.wait_for(process.wait(), 6) == 0
        elapsed = loop.time() - signalled
        log = running.stdout
        assert 2 - 0.2 <= elapsed < 2 + 1, f"exited {elapsed:.2f} s after SIGTERM; log:\n{log}"
    finally:
        writer.close()
