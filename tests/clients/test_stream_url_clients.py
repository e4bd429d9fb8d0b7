"""Third-party clients on a stream URL (``POST {path}/streams``, then ``GET`` the URL): they read
it, reconnect with the ``Last-Event-ID`` the gateway gave and get the rest with nothing repeated
or lost, and a reconnect after the stream's last event gets ``204``, which stops them.

npm ``eventsource`` is left to reconnect by itself (tests/node/stream_url_client.mjs prints what
it did); httpx-sse has no reconnect of its own, so the test reconnects the way its README says.
The upstream is a real aiohttp server that streams NDJSON with a pause after each line, and the
stream is read into the gateway's store whether or not anyone is reading, so one upstream request
serves every connection of a client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import httpx
import pytest
from httpx_sse import SSEError, aconnect_sse

from proxy.logs import StreamRecord
from tests.support.upstreams import Seen, ndjson_handler, recorded
from tests.support.waiting import eventually

COUNT = 8
LINES = [b'{"n": %d}\n' % n for n in range(1, COUNT + 1)]
RETRY_MS = 100  # the route's retry: how long a client waits before it reconnects
NODE_TIMEOUT = 20  # seconds; the Node client needs about one
BODY = {"messages": [{"role": "user", "content": "héllo ✓"}], "stream": True}


async def streams_gateway(start_upstream, start_gateway, pause: float) -> tuple[str, list[Seen]]:
    """A gateway whose ``/chat`` route has stream URLs, and the upstream's record of requests."""
    seen: list[Seen] = []
    base = await start_upstream({"/chat": recorded(ndjson_handler(LINES, pause=pause), seen)})
    route = {
        "path": "/chat",
        "upstream": base + "/chat",
        "events": {"data": "/n", "retry": RETRY_MS},
        "resume": {"linger": 5},
        "streams": {},
    }
    return await start_gateway([route]), seen


async def create_stream(http, gateway: str) -> tuple[str, str]:
    """POSTs ``BODY`` (with aiohttp); the stream's absolute URL and its key."""
    async with http.post(f"{gateway}/chat/streams", json=BODY) as response:
        assert response.status == 201, await response.text()
        created = await response.json()
    assert response.headers["Location"] == created["url"]
    return gateway + created["url"], created["id"]


def whole_stream(key: str) -> list[tuple[str, str, str]]:
    """``(name, data, id)`` of every event of the stream ``key``: one per upstream line, then
    ``end``, whose id is one past the last line's."""
    lines = [("message", str(n), f"{key}-{n}") for n in range(1, COUNT + 1)]
    return [*lines, ("end", "", f"{key}-{COUNT + 1}")]


def stream_gets(caplog: pytest.LogCaptureFixture) -> list[StreamRecord]:
    """The gateway's access records of GETs on a stream URL, in the order they ended."""
    records = [getattr(r, "stream", None) for r in caplog.records if r.name == "proxy.access"]
    return [
        r
        for r in records
        if isinstance(r, StreamRecord) and r.method == "GET" and "/streams/" in r.path
    ]


# -- a TCP path the test can cut ------------------------------------------------------------------


class CuttableRelay:
    """A TCP relay on loopback between a client and the gateway, byte for byte. ``cut()`` closes
    every connection it holds, on both sides, the way a dropped network path or a load balancer
    that restarts does: the client sees its response body end mid-chunk, the gateway sees its
    reader go. New connections are relayed as before."""

    def __init__(self, target: str) -> None:
        host, port = target.removeprefix("http://").split(":")
        self._target = (host, int(port))
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    def cut(self) -> None:
        for writer in self._writers:
            writer.close()
        self._writers.clear()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        gateway_reader, gateway_writer = await asyncio.open_connection(*self._target)
        self._writers += [client_writer, gateway_writer]
        pumps = [
            asyncio.create_task(self._pump(client_reader, gateway_writer)),
            asyncio.create_task(self._pump(gateway_reader, client_writer)),
        ]
        self._tasks.update(pumps)
        await asyncio.gather(*pumps)
        self._tasks.difference_update(pumps)

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # One side's EOF closes the other side whole: an HTTP client never half-closes while it
        # waits for an answer, so no half-close needs relaying.
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


# -- npm eventsource ------------------------------------------------------------------------------


async def test_eventsource_reconnects_after_a_cut_with_its_last_id_and_stops_on_204(
    node_modules, start_upstream, start_gateway, http, caplog
):
    """The client reads the stream URL through a relay; once it has printed three events the test
    cuts the relay's connections, mid-body. EventSource then reconnects by itself, after the
    route's ``retry``, with the id of the last event it got, and reads the rest (the upstream,
    8 lines 0.1 s apart, is normally still streaming into the store), then ``end``; the server's
    close of that response makes it reconnect once more, with the ``end`` event's id, and the
    gateway's ``204`` stops it for good: the Node process exits on its own.

    Why a relay: the cut must leave the stream alive, so neither a DELETE nor a route limit
    (both end the stream with an event) will do; the gateway has no switch to drop one reader.
    Closing the TCP path between the two, as a network does, is what a client really meets, and
    both ends see only a closed socket."""
    gateway, seen = await streams_gateway(start_upstream, start_gateway, pause=0.1)
    relay = CuttableRelay(gateway)
    relayed = await relay.start()
    url, key = await create_stream(http, gateway)
    lines: list[dict[str, Any]] = []
    process = await asyncio.create_subprocess_exec(
        "node",
        str(node_modules / "stream_url_client.mjs"),
        relayed + url.removeprefix(gateway),
        cwd=node_modules,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )

    async def read_stdout() -> None:
        assert process.stdout is not None
        while line := await process.stdout.readline():
            lines.append(json.loads(line))

    def events_seen() -> int:
        return sum(line["kind"] == "event" for line in lines)

    reading = asyncio.create_task(read_stdout())
    with caplog.at_level(logging.INFO, logger="proxy.access"):
        try:
            async with asyncio.timeout(NODE_TIMEOUT):
                await eventually(lambda: events_seen() >= 3, "the client got three events")
                relay.cut()
                await reading
                assert process.stderr is not None
                stderr = await process.stderr.read()
                assert await process.wait() == 0, stderr.decode()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            await asyncio.gather(reading, return_exceptions=True)
            await relay.close()
        await eventually(lambda: len(stream_gets(caplog)) == 3, "three GETs are logged")

    before = next(i for i, line in enumerate(lines) if line["kind"] == "error")
    cut_after = sum(line["kind"] == "event" for line in lines[:before])
    assert 3 <= cut_after < COUNT, "the cut fell mid-stream"
    expected = whole_stream(key)
    events = [{"kind": "event", "type": t, "data": d, "lastEventId": i} for t, d, i in expected]
    assert lines[:before] == [
        {"kind": "request", "lastEventId": None, "status": 200},
        {"kind": "open"},
        *events[:cut_after],
    ]
    # The body ended mid-chunk: undici's fetch fails it as "terminated", EventSource will
    # reconnect (readyState 0).
    cut_error = lines[before]
    assert (cut_error["code"], cut_error["readyState"]) == (None, 0)
    assert "terminated" in cut_error["message"]
    assert lines[before + 1 :] == [
        {"kind": "request", "lastEventId": expected[cut_after - 1][2], "status": 200},
        {"kind": "open"},
        *events[cut_after:],
        # The server closed the body after `end`: EventSource reconnects (no code, readyState 0)
        # with the end event's id, and the 204 fails the connection for good (readyState 2).
        {"kind": "error", "code": None, "message": None, "readyState": 0},
        {"kind": "request", "lastEventId": expected[-1][2], "status": 204},
        {
            "kind": "error",
            "code": 204,
            "message": "Server sent HTTP 204, not reconnecting",
            "readyState": 2,
        },
    ]
    # The gateway saw the cut as its reader leaving (499), then the two reconnects.
    assert [(r.status, r.ended) for r in stream_gets(caplog)] == [
        (499, "client_gone"),
        (200, "eof"),
        (204, "eof"),
    ]
    assert len(seen) == 1
    assert seen[0].body == BODY


# -- httpx-sse ------------------------------------------------------------------------------------


async def test_httpx_sse_stops_after_k_events_resumes_with_last_event_id_and_gets_204(
    start_upstream, start_gateway, http
):
    gateway, seen = await streams_gateway(start_upstream, start_gateway, pause=0.05)
    url, key = await create_stream(http, gateway)
    k = 3

    async with httpx.AsyncClient(timeout=10) as client:
        async with aconnect_sse(client, "GET", url) as source:
            assert source.response.status_code == 200
            first = []
            async for sse in source.aiter_sse():
                first.append(sse)
                if len(first) == 1 + k:
                    break  # leaving the block closes the connection mid-stream
        async with aconnect_sse(
            client, "GET", url, headers={"Last-Event-ID": first[-1].id}
        ) as source:
            assert source.response.status_code == 200
            rest = [sse async for sse in source.aiter_sse()]
        async with aconnect_sse(client, "GET", url, headers={"Last-Event-ID": rest[-1].id}) as done:
            assert done.response.status_code == 204
            assert await done.response.aread() == b""
            # httpx-sse does not know 204: iterating it fails on the missing content type,
            # so a client checks the status before it reads events.
            with pytest.raises(SSEError, match="text/event-stream"):
                [sse async for sse in done.aiter_sse()]

    # Each connection opens with a retry-only block, which httpx-sse dispatches as an empty
    # message (a spec client dispatches nothing for it).
    for opening in (first.pop(0), rest.pop(0)):
        assert (opening.event, opening.data, opening.id, opening.retry) == (
            "message",
            "",
            "",
            RETRY_MS,
        )
    assert [(sse.event, sse.data, sse.id) for sse in first + rest] == whole_stream(key)
    assert len(seen) == 1
    assert seen[0].body == BODY


async def test_httpx_sse_reader_of_a_deleted_stream_gets_an_error_event_coded_cancelled(
    start_upstream, start_gateway, http
):
    gateway, seen = await streams_gateway(start_upstream, start_gateway, pause=0.3)
    url, key = await create_stream(http, gateway)

    async with (
        httpx.AsyncClient(timeout=10) as client,
        aconnect_sse(client, "GET", url) as source,
    ):
        got = []
        async for sse in source.aiter_sse():
            got.append(sse)
            if sse.id == f"{key}-2":
                deleted = await client.delete(url)
                assert deleted.status_code == 204

    got.pop(0)  # the retry-only block, an empty message to httpx-sse
    assert [(sse.event, sse.data, sse.id) for sse in got[:2]] == [
        ("message", "1", f"{key}-1"),
        ("message", "2", f"{key}-2"),
    ]
    # At most the event already on its way may come between the DELETE and the error.
    assert len(got) in (3, 4)
    error = got[-1]
    assert error.event == "error"
    assert json.loads(error.data)["code"] == "cancelled"
    assert len(seen) == 1
    async with httpx.AsyncClient(timeout=10) as client:
        after = await client.get(url, headers={"Last-Event-ID": error.id})
        assert after.status_code == 204
