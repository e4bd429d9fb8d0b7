"""Client faults over real sockets: slowloris headers, a client that never reads, a half-closed
socket, a thousand clients that vanish at random moments, malformed HTTP. Each ends with the
gateway still serving, and without leftovers (upstream connections, descriptors)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import time

import psutil
from aiohttp import web

from tests.support.processes import start_gateway_process
from tests.support.sse import parse_events
from tests.support.upstreams import ndjson_handler
from tests.support.waiting import eventually


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def connections_to(port: int) -> int:
    return sum(
        1
        for c in psutil.Process().net_connections(kind="tcp")
        if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
    )


async def raw_request(
    port: int, request: bytes
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    return reader, writer


async def test_slowloris_headers_get_408_json_and_the_gateway_goes_on(tmp_path):
    config = tmp_path / "gateway.yaml"
    config.write_text(
        json.dumps(
            {
                "server": {"demo": True, "header_timeout": 1},
                "routes": [{"path": "/a", "upstream": "/demo/api/chat"}],
            }
        )
    )
    gateway = await start_gateway_process("--config", str(config), "--port", "0")
    port = int(gateway.base.rsplit(":", 1)[1])
    try:
        started = time.monotonic()
        reader, writer = await raw_request(port, b"GET /a HTTP/1.1\r\nHost: x\r\n")
        for _ in range(3):  # a header byte now and then, never the blank line
            await asyncio.sleep(0.2)
            writer.write(b"X")
        answer = await asyncio.wait_for(reader.read(), 5)
        elapsed = time.monotonic() - started
        writer.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 Request Timeout")
        assert json.loads(body)["error"]["code"] == "request_timeout"
        assert 0.9 <= elapsed < 3
        # A well-behaved client on a new connection is served as usual.
        reader, writer = await raw_request(
            port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 200 OK")
        writer.close()
    finally:
        assert await gateway.stop() == 0


async def test_a_client_that_never_reads_is_cut_off_after_write_timeout_and_so_is_the_upstream(
    start_upstream, start_gateway
):
    upstream_done = asyncio.Event()
    written = 0
    line = b'{"pad": "' + b"x" * 4000 + b'"}\n'

    async def firehose(request: web.Request) -> web.StreamResponse:
        nonlocal written
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        try:
            while True:
                await response.write(line)
                written += len(line)
        except (ConnectionResetError, asyncio.CancelledError):
            upstream_done.set()
            raise

    upstream = await start_upstream({"/fire": firehose})
    gateway = await start_gateway(
        [{"path": "/fire", "upstream": upstream + "/fire"}], server={"write_timeout": 0.5}
    )
    port = int(gateway.rsplit(":", 1)[1])
    process = psutil.Process()
    rss_before = process.memory_info().rss
    started = time.monotonic()
    _, writer = await raw_request(port, b"GET /fire HTTP/1.1\r\nHost: x\r\n\r\n")
    # The client reads nothing: the buffers fill, the gateway's write blocks, and half a second
    # later the gateway gives up on the client and closes the upstream request.
    await asyncio.wait_for(upstream_done.wait(), 10)
    assert time.monotonic() - started < 5
    assert written < 50 * 1024 * 1024  # backpressure held: the upstream was paused, not drained
    assert process.memory_info().rss - rss_before < 64 * 1024 * 1024
    writer.close()


async def test_a_half_closed_client_counts_as_gone_and_its_upstream_request_is_closed(
    start_upstream, start_gateway, http
):
    # A client that shuts its sending side is, for a stream that may run for minutes, one that
    # went away (nginx treats it the same): the gateway closes the upstream request at once.
    requests = 0
    closed = asyncio.Event()

    async def slow(request: web.Request) -> web.StreamResponse:
        nonlocal requests
        requests += 1
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        try:
            for n in range(1000):
                await response.write(b'{"n": %d}\n' % n)
                await asyncio.sleep(0.05)
        except (ConnectionResetError, asyncio.CancelledError):
            closed.set()
            raise
        return response

    upstream = await start_upstream({"/s": slow})
    gateway = await start_gateway([{"path": "/s", "upstream": upstream + "/s"}])
    port = int(gateway.rsplit(":", 1)[1])
    reader, writer = await raw_request(port, b"GET /s HTTP/1.1\r\nHost: x\r\n\r\n")
    await reader.readuntil(b"data: ")  # the stream is under way
    writer.write_eof()
    await asyncio.wait_for(closed.wait(), 3)
    writer.close()
    assert requests == 1
    async with http.get(f"{gateway}/s", timeout=None) as response:
        assert response.status == 200


async def test_a_thousand_clients_vanishing_at_random_leave_no_upstream_connection_or_fd(
    start_upstream, start_gateway
):
    async def slow(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        for n in range(1000):
            await response.write(b'{"n": %d}\n' % n)
            await asyncio.sleep(0.02)
        return response

    upstream = await start_upstream({"/slow": slow})
    upstream_port = int(upstream.rsplit(":", 1)[1])
    gateway = await start_gateway([{"path": "/slow", "upstream": upstream + "/slow"}])
    port = int(gateway.rsplit(":", 1)[1])
    rng = random.Random(7)
    await asyncio.sleep(0.1)
    fds_before = open_fds()

    async def vanish() -> None:
        reader, writer = await raw_request(port, b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        moment = rng.choice(["at_once", "after_headers", "mid_stream"])
        if moment != "at_once":
            await reader.readuntil(b"\r\n\r\n")
        if moment == "mid_stream":
            await asyncio.sleep(rng.uniform(0, 0.3))
            await reader.read(rng.randint(1, 4096))
        if rng.random() < 0.5:
            writer.transport.abort()  # RST
        else:
            writer.close()

    for _ in range(10):  # 1,000 clients, 100 at a time (the machine's fd limit is shared)
        await asyncio.gather(*(vanish() for _ in range(100)))
    await eventually(
        lambda: connections_to(upstream_port) == 0, "no connection to the upstream left", 10
    )
    await eventually(lambda: open_fds() <= fds_before + 2, "the descriptors back to before", 10)
    # And the gateway still streams.
    reader, writer = await raw_request(
        port, b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200 OK")
    writer.close()


async def test_malformed_http_gets_400_and_the_gateway_goes_on(start_upstream, start_gateway, http):
    upstream = await start_upstream({"/s": ndjson_handler([b'{"n": 1}\n'])})
    gateway = await start_gateway([{"path": "/s", "upstream": upstream + "/s"}])
    port = int(gateway.rsplit(":", 1)[1])
    for garbage in (
        b"NOT HTTP AT ALL\r\n\r\n",
        b"GET /s HTTP/9.9\r\nHost: x\r\n\r\n",
        b"GET /s HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"GET /s HTTP/1.1\r\nBad Header Line\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello on plain HTTP
    ):
        reader, writer = await raw_request(port, garbage)
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        status_line = answer.split(b"\r\n", 1)[0]
        assert status_line.startswith(b"HTTP/1."), garbage
        assert b" 400 " in status_line, garbage
    async with http.get(f"{gateway}/s") as response:
        assert [e.data for e in parse_events(await response.read())] == ['{"n": 1}', ""]
