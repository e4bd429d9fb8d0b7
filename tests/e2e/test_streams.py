"""Streams as resources over real sockets: ``POST {path}/streams`` hands a body of any size to a
stream URL, ``GET`` reads it (from the first event, or after ``Last-Event-ID``, or ``204`` once
whole), ``DELETE`` stops its upstream; with ``share`` equal requests read one upstream request.
With a real ``redis-server``: create on one gateway process, read and stop on another."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from proxy.config import parse_config
from proxy.errors import ConfigError
from tests.support.processes import start_gateway_process
from tests.support.sse import EventStream, parse_events
from tests.support.upstreams import Seen, json_body, ndjson_handler, recorded
from tests.support.waiting import eventually

LINES = [b'{"n": %d}\n' % n for n in range(1, 11)]
NUMBERS = [str(n) for n in range(1, 11)]


def streams_route(upstream: str, share: bool = False, **resume: Any) -> dict[str, Any]:
    return {
        "path": "/chat",
        "upstream": upstream + "/chat",
        "events": {"data": "/n", "retry": 200},
        "resume": {"linger": 5, **resume},
        "streams": {"share": share},
    }


class Upstream:
    """A fake upstream whose requests are recorded and whose open responses can be watched for
    being closed by the gateway."""

    def __init__(self, lines: list[bytes] = LINES, pause: float = 0.0) -> None:
        self.seen: list[Seen] = []
        self.closed: list[float] = []
        self.lines = lines
        self.pause = pause

    async def stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        try:
            for line in self.lines:
                await response.write(line)
                await asyncio.sleep(self.pause)
            await response.write_eof()
        except (ConnectionError, asyncio.CancelledError):
            self.closed.append(time.monotonic())
            raise
        return response


async def start(start_upstream, start_gateway, lines=LINES, pause=0.0, share=False, **resume):
    upstream = Upstream(lines, pause)
    base = await start_upstream({"/chat": recorded(upstream.stream, upstream.seen)})
    gateway = await start_gateway([streams_route(base, share, **resume)])
    return gateway, upstream


async def create(http: aiohttp.ClientSession, gateway: str, body: Any = None, **kw: Any) -> str:
    async with http.post(f"{gateway}/chat/streams", json=body or {}, **kw) as response:
        assert response.status == 201, await response.text()
        created = await response.json()
        assert response.headers["Location"] == created["url"]
    assert created["url"] == f"/chat/streams/{created['id']}"
    return str(created["url"])


# -- create, read, stop ---------------------------------------------------------------------------


async def test_a_post_of_a_large_body_becomes_a_stream_url_that_a_get_reads_from_the_start(
    start_upstream, start_gateway, http
):
    gateway, upstream = await start(start_upstream, start_gateway)
    history = [{"role": "user", "content": "长" * 70_000}]  # 210 KB of UTF-8
    url = await create(http, gateway, {"messages": history})
    assert json.loads(upstream.seen[0].raw_body)["messages"] == history
    # The upstream has been read into the store meanwhile: nothing is lost before the reader.
    await asyncio.sleep(0.2)
    async with http.get(gateway + url) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events = parse_events(await response.read())
    assert [e.data for e in events] == [*NUMBERS, ""]
    assert events[-1].event == "end"
    key = url.rsplit("/", 1)[1]
    assert [e.id for e in events[:-1]] == [f"{key}-{n}" for n in range(1, 11)]
    assert len(upstream.seen) == 1


async def test_a_stream_id_is_128_random_bits_url_safe(start_upstream, start_gateway, http):
    gateway, _ = await start(start_upstream, start_gateway)
    ids = {(await create(http, gateway)).rsplit("/", 1)[1] for _ in range(5)}
    assert len(ids) == 5
    for key in ids:
        assert len(key) >= 22  # 22 base64url characters carry 132 bits, 128 of them random
        assert set(key) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


async def test_a_reconnect_reads_after_its_last_event_id_and_gets_204_at_the_end(
    start_upstream, start_gateway, http
):
    gateway, _ = await start(start_upstream, start_gateway, pause=0.05)
    url = await create(http, gateway)
    async with http.get(gateway + url) as response:
        first = await EventStream(response).read_events(4)
    async with http.get(gateway + url, headers={"Last-Event-ID": first[-1].id}) as response:
        rest = parse_events(await response.read())
    assert [e.data for e in first + rest] == [*NUMBERS, ""]
    async with http.get(gateway + url, headers={"Last-Event-ID": rest[-1].id}) as response:
        assert response.status == 204


async def test_several_readers_at_once_each_get_every_event_in_order(
    start_upstream, start_gateway, http
):
    gateway, upstream = await start(start_upstream, start_gateway, pause=0.02)
    url = await create(http, gateway)

    async def read() -> list[str]:
        async with http.get(gateway + url) as response:
            return [e.data for e in parse_events(await response.read())]

    results = await asyncio.gather(*(read() for _ in range(20)))
    assert results == [[*NUMBERS, ""]] * 20
    assert len(upstream.seen) == 1


@pytest.mark.parametrize(
    "key", ["AAAAAAAAAAAAAAAAAAAAAA", "short", "not%20a%20key%20at%20all%20really"]
)
async def test_an_unknown_stream_is_404_stream_not_found_and_costs_no_upstream_request(
    start_upstream, start_gateway, http, key
):
    gateway, upstream = await start(start_upstream, start_gateway)
    for method in ("GET", "DELETE"):
        async with http.request(method, f"{gateway}/chat/streams/{key}") as response:
            assert response.status == 404
            assert (await response.json())["error"]["code"] == "stream_not_found"
    assert upstream.seen == []


async def test_a_stream_is_found_only_under_the_route_that_made_it(
    start_upstream, start_gateway, http
):
    upstream = Upstream()
    base = await start_upstream({"/chat": upstream.stream})
    other = {**streams_route(base), "path": "/other"}
    gateway = await start_gateway([streams_route(base), other])
    url = await create(http, gateway)
    foreign = url.replace("/chat/", "/other/")
    for method in ("GET", "DELETE"):
        async with http.request(method, gateway + foreign) as response:
            assert response.status == 404
    async with http.get(gateway + url) as response:
        assert [e.data for e in parse_events(await response.read())] == [*NUMBERS, ""]


async def test_delete_stops_the_upstream_within_a_second_and_readers_get_cancelled(
    start_upstream, start_gateway, http
):
    gateway, upstream = await start(start_upstream, start_gateway, pause=0.5)
    url = await create(http, gateway)
    async with http.get(gateway + url) as response:
        stream = EventStream(response)
        await stream.read_events(1)
        asked = time.monotonic()
        async with http.delete(gateway + url) as deleted:
            assert deleted.status == 204
        rest = await stream.read_to_end()
    assert rest[-1].event == "error"
    assert json.loads(rest[-1].data)["code"] == "cancelled"
    await eventually(lambda: bool(upstream.closed), "the upstream request is closed")
    assert upstream.closed[0] - asked < 1.0
    async with http.get(gateway + url, headers={"Last-Event-ID": rest[-1].id}) as response:
        assert response.status == 204


async def test_the_post_fails_as_the_route_does_before_any_stream_exists(
    start_upstream, start_gateway, http
):
    async def refuse(request: web.Request) -> web.Response:
        await json_body(request)
        return web.json_response({"error": "model not found"}, status=404)

    base = await start_upstream({"/chat": refuse})
    route = {**streams_route(base), "limits": {"max_body_bytes": 1000}}
    gateway = await start_gateway([route])
    async with http.post(f"{gateway}/chat/streams", json={}) as response:
        assert response.status == 404
        error = (await response.json())["error"]
        assert error["upstream_status"] == 404
        assert "Location" not in response.headers
    async with http.post(f"{gateway}/chat/streams", data=b"x" * 2000) as response:
        assert response.status == 413
        assert (await response.json())["error"]["code"] == "body_too_large"
    async with http.post(
        f"{gateway}/chat/streams", json={}, headers={"Origin": "http://elsewhere.example"}
    ) as response:
        assert response.status == 403


async def test_a_stream_nobody_reads_is_abandoned_after_linger(start_upstream, start_gateway, http):
    gateway, upstream = await start(start_upstream, start_gateway, pause=0.2, linger=0.5)
    url = await create(http, gateway)
    await eventually(lambda: bool(upstream.closed), "the upstream request is closed", within=5)
    async with http.get(gateway + url) as response:
        events = parse_events(await response.read())
    assert events[-1].event == "error"
    assert json.loads(events[-1].data)["code"] == "abandoned"


async def test_the_access_log_never_holds_a_whole_stream_url(
    start_upstream, start_gateway, http, caplog
):
    gateway, _ = await start(start_upstream, start_gateway)
    with caplog.at_level("INFO", logger="proxy.access"):
        url = await create(http, gateway)
        async with http.get(gateway + url) as response:
            await response.read()
        async with http.delete(gateway + url) as response:
            assert response.status == 204
        await asyncio.sleep(0.1)
    key = url.rsplit("/", 1)[1]
    logged = "\n".join(str(r.__dict__) for r in caplog.records)
    assert "/chat/streams/" + key[:4] in logged
    assert key not in logged


def test_streams_need_resume_and_a_path_whose_urls_are_its_own():
    base = {"path": "/chat", "upstream": "http://127.0.0.1:1/chat", "streams": {}}
    with pytest.raises(ConfigError, match="streams needs resume"):
        parse_config(json.dumps({"routes": [base]}))
    tail = {**base, "path": "/{tail:.*}", "resume": {}}
    with pytest.raises(ConfigError, match="spans segments"):
        parse_config(json.dumps({"routes": [tail]}))
    parse_config(json.dumps({"routes": [{**base, "path": "/m/{model}/chat", "resume": {}}]}))


# -- share -----------------------------------------------------------------------------------------


async def test_equal_requests_share_one_upstream_request_and_each_reader_gets_every_event(
    start_upstream, start_gateway, http
):
    gateway, upstream = await start(start_upstream, start_gateway, pause=0.05, share=True)

    async def read(body: Any) -> list[str]:
        async with http.post(f"{gateway}/chat", json=body) as response:
            assert response.status == 200
            return [e.data for e in parse_events(await response.read())]

    # Twenty at once: the first is still opening its upstream while the others arrive.
    results = await asyncio.gather(*(read({"q": "same"}) for _ in range(20)))
    assert results == [[*NUMBERS, ""]] * 20
    assert len(upstream.seen) == 1
    # Another body is another upstream request; and once a stream has ended, the same request
    # opens a new one.
    assert await read({"q": "other"}) == [*NUMBERS, ""]
    assert await read({"q": "same"}) == [*NUMBERS, ""]
    assert len(upstream.seen) == 3


async def test_a_late_joiner_gets_what_the_buffer_holds_from_the_start_then_live(
    start_upstream, start_gateway, http
):
    gateway, upstream = await start(start_upstream, start_gateway, pause=0.1, share=True)
    async with http.get(f"{gateway}/chat") as first:
        early = EventStream(first)
        await early.read_events(5)
        async with http.get(f"{gateway}/chat") as second:
            late = await EventStream(second).read_to_end()
        await early.read_to_end()
    assert [e.data for e in late] == [*NUMBERS, ""]
    assert len(upstream.seen) == 1


async def test_requests_with_other_credentials_never_share(start_upstream, start_gateway, http):
    upstream = Upstream(pause=0.05)
    base = await start_upstream({"/chat": recorded(upstream.stream, upstream.seen)})
    route = {**streams_route(base, share=True), "forward_headers": ["Authorization"]}
    gateway = await start_gateway([route])

    async def read(token: str) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        async with http.get(f"{gateway}/chat", headers=headers) as response:
            await response.read()

    await asyncio.gather(read("alice-token"), read("bob-token"), read("alice-token"))
    assert sorted(s.headers["Authorization"] for s in upstream.seen) == [
        "Bearer alice-token",
        "Bearer bob-token",
    ]


async def test_concurrent_equal_posts_get_one_stream_url(start_upstream, start_gateway, http):
    gateway, upstream = await start(start_upstream, start_gateway, pause=0.05, share=True)
    urls = await asyncio.gather(*(create(http, gateway, {"q": 1}) for _ in range(10)))
    assert len(set(urls)) == 1
    assert len(upstream.seen) == 1


async def test_a_shared_stream_that_fails_to_open_fails_its_joiners_and_the_next_request_retries(
    start_upstream, start_gateway, http
):
    calls: list[int] = []

    async def flaky(request: web.Request) -> web.StreamResponse:
        calls.append(1)
        if len(calls) == 1:
            await asyncio.sleep(0.3)  # joiners arrive while this one opens
            return web.json_response({"error": "overloaded"}, status=503)
        return await ndjson_handler(LINES)(request)

    base = await start_upstream({"/chat": flaky})
    gateway = await start_gateway([streams_route(base, share=True)])

    async def opener() -> int:
        async with http.get(f"{gateway}/chat") as response:
            await response.read()
            return response.status

    async def joiner() -> list[Any]:
        await asyncio.sleep(0.1)
        async with http.get(f"{gateway}/chat") as response:
            assert response.status == 200
            return parse_events(await response.read())

    status, joined = await asyncio.gather(opener(), joiner())
    assert status == 503
    assert joined[-1].event == "error"
    assert "503" in joined[-1].data or "overloaded" in joined[-1].data
    async with http.get(f"{gateway}/chat") as response:
        assert [e.data for e in parse_events(await response.read())] == [*NUMBERS, ""]
    assert len(calls) == 2


# -- Redis: create on one process, read and stop on another ---------------------------------------


async def test_with_redis_create_on_one_process_read_and_delete_on_another(
    redis_url, start_upstream, tmp_path
):
    upstream = Upstream(lines=[b'{"n": %d}\n' % n for n in range(1, 1000)], pause=0.1)
    base = await start_upstream({"/chat": recorded(upstream.stream, upstream.seen)})
    config = tmp_path / "gateway.yaml"
    route = streams_route(base, store=redis_url, linger=10)
    config.write_text(json.dumps({"routes": [route]}))
    first = await start_gateway_process("--config", str(config), "--port", "0")
    second = await start_gateway_process("--config", str(config), "--port", "0")
    try:
        async with aiohttp.ClientSession() as session:
            url = await create(session, first.base, {"q": 1})
            async with session.get(second.base + url) as response:
                stream = EventStream(response)
                seen = await stream.read_events(3)
                assert [e.data for e in seen] == ["1", "2", "3"]
                asked = time.monotonic()
                async with session.delete(second.base + url) as deleted:
                    assert deleted.status == 204
                rest = await stream.read_to_end()
            assert json.loads(rest[-1].data)["code"] == "cancelled"
            await eventually(lambda: bool(upstream.closed), "the first process closes upstream")
            assert upstream.closed[0] - asked < 1.0
    finally:
        for gateway in (first, second):
            assert await gateway.stop() == 0


async def test_with_redis_fifty_readers_over_two_processes_share_one_upstream_request(
    redis_url, start_upstream, tmp_path
):
    upstream = Upstream(pause=0.1)
    base = await start_upstream({"/chat": recorded(upstream.stream, upstream.seen)})
    config = tmp_path / "gateway.yaml"
    config.write_text(json.dumps({"routes": [streams_route(base, True, store=redis_url)]}))
    first = await start_gateway_process("--config", str(config), "--port", "0")
    second = await start_gateway_process("--config", str(config), "--port", "0")
    try:
        async with aiohttp.ClientSession() as session:

            async def read(gateway: str) -> list[str]:
                async with session.post(f"{gateway}/chat", json={"watch": "pods"}) as response:
                    return [e.data for e in parse_events(await response.read())]

            bases = [first.base, second.base] * 25
            results = await asyncio.gather(*(read(base) for base in bases))
        assert results == [[*NUMBERS, ""]] * 50
        assert len(upstream.seen) == 1
    finally:
        for gateway in (first, second):
            assert await gateway.stop() == 0


async def test_with_redis_equal_requests_on_two_routes_never_share(
    redis_url, start_upstream, start_gateway, http
):
    # Two routes may send the same upstream request and make other events of it: a stream is
    # shared only within the route that made it, whatever store the routes have in common.
    upstream = Upstream(pause=0.05)
    base = await start_upstream({"/chat": recorded(upstream.stream, upstream.seen)})
    tokens = {**streams_route(base, True, store=redis_url), "path": "/tokens"}
    lines = {**streams_route(base, True, store=redis_url), "path": "/lines"}
    lines["events"] = {"data": "line", "retry": 200}
    gateway = await start_gateway([tokens, lines])

    async def read(path: str) -> list[str]:
        async with http.post(f"{gateway}{path}", json={"watch": "pods"}) as response:
            assert response.status == 200, await response.text()
            return [e.data for e in parse_events(await response.read())]

    first = asyncio.create_task(read("/tokens"))
    await eventually(lambda: len(upstream.seen) == 1, "the first route's stream is open")
    second = await read("/lines")
    assert second == [line.decode().strip() for line in LINES] + [""]
    assert await first == [*NUMBERS, ""]
    assert len(upstream.seen) == 2


async def test_a_reader_that_does_not_read_is_cut_off_without_slowing_the_others(
    start_upstream, start_gateway, http, caplog
):
    # A hundred lines of 64 KB, one each 20 ms: two seconds and 6.4 MB of stream, far more
    # than the socket buffers of a client that reads nothing hold.
    pad = "x" * 64_000
    lines = [b'{"n": %d, "pad": "%s"}\n' % (n, pad.encode()) for n in range(1, 101)]
    upstream = Upstream(lines, pause=0.02)
    base = await start_upstream({"/chat": recorded(upstream.stream, upstream.seen)})
    route = {**streams_route(base, share=True), "events": {"data": "line"}}
    route["events"]["id"] = "sequence"
    gateway = await start_gateway([route], server={"write_timeout": 0.5})
    port = int(gateway.rsplit(":", 1)[1])
    with caplog.at_level("INFO", logger="proxy.access"):
        stuck = socket.socket()
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect(("127.0.0.1", port))
        stuck.sendall(b"GET /chat HTTP/1.1\r\nHost: x\r\n\r\n")
        await eventually(lambda: len(upstream.seen) == 1, "the stream is open")
        started = time.monotonic()
        async with http.get(f"{gateway}/chat") as response:
            events = parse_events(await response.read())
        took = time.monotonic() - started
        await eventually(
            lambda: any(
                getattr(r, "stream", None) and r.stream.ended == "write_timeout"
                for r in caplog.records
            ),
            "the stuck reader is cut off",
        )
        stuck.close()
    assert len(events) == 101  # every line, then the end
    assert took < 2.0 + 1.5  # the stream's own two seconds, and no wait on the stuck reader
    assert len(upstream.seen) == 1


async def test_with_redis_each_process_reads_a_stream_from_redis_once_for_all_its_readers(
    redis_url, start_upstream, tmp_path
):
    import redis.asyncio as redis

    lines = [b'{"n": %d}\n' % n for n in range(1, 21)]
    upstream = Upstream(lines, pause=0.1)
    base = await start_upstream({"/chat": recorded(upstream.stream, upstream.seen)})
    config = tmp_path / "gateway.yaml"
    config.write_text(json.dumps({"routes": [streams_route(base, store=redis_url, linger=10)]}))
    first = await start_gateway_process("--config", str(config), "--port", "0")
    second = await start_gateway_process("--config", str(config), "--port", "0")
    server = redis.from_url(redis_url)
    readers_per_process = 40
    try:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=30)
        ) as session:
            url = await create(session, first.base, {"q": 1})
            await server.config_resetstat()
            clients: list[int] = []

            async def watch_clients() -> None:
                while True:
                    clients.append(int((await server.info("clients"))["connected_clients"]))
                    await asyncio.sleep(0.05)

            async def read(gateway: str) -> list[str]:
                async with session.get(gateway + url) as response:
                    return [e.data for e in parse_events(await response.read())]

            watcher = asyncio.create_task(watch_clients())
            bases = [first.base, second.base] * readers_per_process
            results = await asyncio.gather(*(read(base) for base in bases))
            watcher.cancel()
        stats = await server.info("commandstats")
    finally:
        await server.aclose()
        for gateway in (first, second):
            assert await gateway.stop() == 0
    assert results == [[str(n) for n in range(1, 21)] + [""]] * (2 * readers_per_process)
    calls = {name.removeprefix("cmdstat_"): stat["calls"] for name, stat in stats.items()}
    reads = calls.get("xread", 0) + calls.get("xrange", 0)
    delivered = 20 * 2 * readers_per_process
    # A read per reader would be at least one per event each (1,600); one tail per process
    # reads each event about once, a few times over for its wake-ups.
    assert reads < delivered / 10, calls
    # Whether the stream exists: one lookup per process for the 40 that opened it at once.
    assert calls.get("hmget", 0) <= 4, calls
    # Connections: each process's pool (producer, tail, lease, pub/sub) and this test's own,
    # whatever the number of readers (it was one per reader that opened the URL at once).
    assert max(clients) < 20, clients
