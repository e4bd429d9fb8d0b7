"""Upstream faults at the byte and socket level, each with the exact answer the client sees and
proof that the gateway let go of everything afterwards (no task, socket or file descriptor left).

The upstream is :class:`tests.support.raw_upstream.FaultUpstream` (raw asyncio sockets, a script
per test); the client closes its connection after each answer, so a baseline taken before the
request must come back exactly.
"""

from __future__ import annotations

import gc
import socket
import threading
import time
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import psutil
import pytest
from yarl import URL

from proxy.sse import SSEEvent, SSEParser
from tests.support.raw_upstream import (
    LAST_CHUNK,
    Chunk,
    Close,
    FaultUpstream,
    Hold,
    Reset,
    Send,
    Sleep,
    Step,
    assert_back_to,
    chunks,
    drip,
    head,
    ndjson_script,
    snapshot,
    unaccepted_port,
)
from tests.support.sse import parse_events


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    """A client that closes its connection after each answer, so it holds nothing in between."""
    connector = aiohttp.TCPConnector(force_close=True)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        yield session


@dataclass
class Answer:
    status: int
    content_type: str
    body: bytes

    @property
    def error(self) -> dict[str, Any]:
        assert self.content_type == "application/json", self
        return orjson.loads(self.body)["error"]

    @property
    def events(self) -> list[tuple[str, str]]:
        """``(event, data)``; an error event's data is shortened to its code."""
        assert self.content_type == "text/event-stream", self
        return [
            (e.event, orjson.loads(e.data)["code"] if e.event == "error" else e.data)
            for e in parse_events(self.body)
        ]


async def fetch(client: aiohttp.ClientSession, url: str, within: float = 5) -> Answer:
    async with client.get(url, timeout=aiohttp.ClientTimeout(total=within)) as response:
        return Answer(response.status, response.content_type, await response.read())


def port_of(url: str) -> int:
    port = URL(url).port
    assert port is not None
    return port


async def gateway_for(start_gateway, upstream_url: str, **route: Any) -> str:
    return await start_gateway([{"path": "/chat", "upstream": upstream_url, **route}])


# -- before the stream: an HTTP status and a JSON error --------------------------------------------


async def test_connection_refused_is_502_upstream_unreachable_and_leaks_nothing(
    start_gateway, client
):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening, then closed: refused
    gateway = await gateway_for(start_gateway, f"http://127.0.0.1:{port}/chat")
    baseline = snapshot(port, port_of(gateway))
    answer = await fetch(client, f"{gateway}/chat")
    assert (answer.status, answer.error["code"]) == (502, "upstream_unreachable")
    assert answer.error["upstream_status"] is None
    assert f"127.0.0.1:{port}" in answer.error["message"]
    await assert_back_to(baseline, port, port_of(gateway))


async def test_a_name_that_does_not_resolve_is_502_upstream_unreachable_and_leaks_nothing(
    start_gateway, client
):
    gateway = await gateway_for(start_gateway, "http://does-not-resolve.invalid/chat")
    baseline = snapshot(port_of(gateway))
    answer = await fetch(client, f"{gateway}/chat")
    assert (answer.status, answer.error["code"]) == (502, "upstream_unreachable")
    assert "does-not-resolve.invalid" in answer.error["message"]
    await assert_back_to(baseline, port_of(gateway))


async def test_a_listener_that_never_accepts_is_504_upstream_timeout_after_the_connect_timeout(
    start_gateway, client
):
    with unaccepted_port() as port:
        gateway = await gateway_for(
            start_gateway, f"http://127.0.0.1:{port}/chat", timeouts={"connect": 0.5}
        )
        baseline = snapshot(port, port_of(gateway))
        started = time.monotonic()
        answer = await fetch(client, f"{gateway}/chat")
        took = time.monotonic() - started
        assert (answer.status, answer.error["code"]) == (504, "upstream_timeout")
        assert answer.error["message"] == "no connection to the upstream within 0.5 s"
        assert 0.45 <= took < 3.0
        await assert_back_to(baseline, port, port_of(gateway))


LINE_1 = b'{"a": 1}\n'
PRE_STREAM_FAULTS = [
    pytest.param([Hold()], 504, "upstream_timeout", id="silent-before-the-status-line"),
    pytest.param(
        [Send(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"), Hold()],
        504,
        "upstream_timeout",
        id="silent-in-the-middle-of-the-head",
    ),
    pytest.param([Close()], 502, "upstream_error", id="closes-before-any-byte"),
    pytest.param(
        # Parsed in the same read as the head, the bad chunk fails the request itself.
        [Send(head().data + b"9\r\n" + LINE_1 + b"\r\nzz\r\n"), Hold()],
        502,
        "upstream_error",
        id="chunk-size-line-not-hex-in-the-heads-segment",
    ),
    pytest.param([Reset()], 502, "upstream_error", id="resets-before-any-byte"),
    pytest.param([Send(b"SSH-2.0-OpenSSH_9.2\r\n"), Close()], 502, "upstream_error", id="not-http"),
    pytest.param(
        [head(content_type="text/html; charset=utf-8"), *chunks(b"<h1>Sign in</h1>\n"), Hold()],
        502,
        "unsupported_content_type",
        id="html-login-page-with-status-200",
    ),
]


@pytest.mark.parametrize(("script", "status", "code"), PRE_STREAM_FAULTS)
async def test_fault_before_the_response_head_is_a_json_error_and_leaks_nothing(
    start_gateway, client, script: list[Step], status: int, code: str
):
    async with FaultUpstream(script) as upstream:
        gateway = await gateway_for(start_gateway, upstream.url("/chat"), timeouts={"read": 0.5})
        baseline = snapshot(upstream.port, port_of(gateway))
        answer = await fetch(client, f"{gateway}/chat")
        assert (answer.status, answer.error["code"]) == (status, code)
        await assert_back_to(baseline, upstream.port, port_of(gateway))
    assert len(upstream.requests) == 1  # no retry on a fresh connection


# -- after the stream started: the complete events, then one error event ---------------------------

# A chunked-framing violation after the head: aiohttp 3.14's client closes the transport but never
# wakes a pending read on response.content, and drops its sock_read timer; only a read that starts
# afterwards fails (RuntimeError "Connection closed."). The gateway's loop wakes at least once a
# second and maps that to upstream_closed.
MID_STREAM_FAULTS = [
    pytest.param(
        [head(), Hold()],
        [("error", "upstream_timeout")],
        id="headers-then-silence",
    ),
    pytest.param(
        [head(), Chunk(LINE_1 + b'{"a": 2'), Close()],
        [("message", '{"a": 1}'), ("error", "upstream_closed")],
        id="chunked-body-closed-mid-line",
    ),
    pytest.param(
        [
            head(chunked=False, headers=[("Content-Length", "40")]),
            Send(LINE_1 + b'{"a": 2'),
            Close(),
        ],
        [("message", '{"a": 1}'), ("error", "upstream_closed")],
        id="content-length-body-closed-mid-line",
    ),
    pytest.param(
        [head(), Chunk(LINE_1 + b'{"a": 2'), Sleep(0.1), Reset()],
        [("message", '{"a": 1}'), ("error", "upstream_closed")],
        id="tcp-reset-mid-line",
    ),
    pytest.param(
        [head(), Chunk(LINE_1), Sleep(0.1), Reset()],
        [("message", '{"a": 1}'), ("error", "upstream_closed")],
        id="tcp-reset-between-lines",
    ),
    pytest.param(
        [head(), Chunk(LINE_1), Sleep(0.1), Send(b"40\r\n" + b'{"a": 2}\n'), Close()],
        [("message", '{"a": 1}'), ("message", '{"a": 2}'), ("error", "upstream_closed")],
        id="chunk-shorter-than-its-size-then-close",  # its line was whole: it is delivered
    ),
    pytest.param(
        [head(), Chunk(LINE_1), Sleep(0.1), Send(b"zz\r\n" + b'{"a": 2}\n\r\n'), Hold()],
        [("message", '{"a": 1}'), ("error", "upstream_closed")],
        id="chunk-size-line-not-hex",
    ),
    pytest.param(
        [head(), Chunk(LINE_1), Sleep(0.1), Send(b"9\r\n" + b'{"a": 2}\nXX'), Hold()],
        [("message", '{"a": 1}'), ("message", '{"a": 2}'), ("error", "upstream_closed")],
        id="chunk-data-not-followed-by-crlf",
    ),
]


@pytest.mark.parametrize("heartbeat", [0, 0.2], ids=["no-heartbeat", "heartbeat"])
@pytest.mark.parametrize(("script", "expected"), MID_STREAM_FAULTS)
async def test_fault_after_the_head_gives_the_complete_events_then_one_error_event(
    start_gateway, client, script: list[Step], expected: list[tuple[str, str]], heartbeat: float
):
    # Heartbeats change how the pump waits (a deadline around each read), so both ways are run.
    async with FaultUpstream(script) as upstream:
        gateway = await gateway_for(
            start_gateway,
            upstream.url("/chat"),
            timeouts={"read": 0.5},
            events={"heartbeat": heartbeat},
        )
        baseline = snapshot(upstream.port, port_of(gateway))
        answer = await fetch(client, f"{gateway}/chat")
        assert answer.status == 200
        assert answer.events == expected
        await assert_back_to(baseline, upstream.port, port_of(gateway))


@pytest.mark.parametrize("resume", [None, {"linger": 5}], ids=["plain", "resumable"])
async def test_lines_buffered_before_the_upstream_breaks_are_sent_before_the_error(
    start_gateway, client, resume
):
    # The whole answer (head, a line, a chunk cut short) and the close arrive together: by the
    # time the gateway reads the body, aiohttp already holds both the line and the failure, and
    # its reads raise the failure before handing out what is buffered. A resumable route's
    # producer starts reading only after the head has been handled, so it met this every time.
    script = [Send(head().data + b"9\r\n" + LINE_1 + b'\r\n5\r\n{"a"'), Close()]
    async with FaultUpstream(script) as upstream:
        route: dict[str, Any] = {"events": {"data": "line"}}
        if resume is not None:
            route["resume"] = resume
        gateway = await gateway_for(start_gateway, upstream.url("/chat"), **route)
        answer = await fetch(client, f"{gateway}/chat")
    assert answer.status == 200
    assert answer.events == [("message", '{"a": 1}'), ("error", "upstream_closed")]


async def test_a_body_delimited_by_the_close_that_stops_mid_line_ends_like_a_whole_one(
    start_gateway, client
):
    # Without Content-Length or chunked framing, the close is the body's end (RFC 9112 6.3): the
    # cut cannot be seen, so the partial line is the last event. complete_when is what catches it.
    script = [head(chunked=False), Send(LINE_1 + b'{"a": 2'), Close()]
    async with FaultUpstream(script) as upstream:
        gateway = await start_gateway(
            [
                {"path": "/line", "upstream": upstream.url("/chat")},
                {
                    "path": "/done",
                    "upstream": upstream.url("/chat"),
                    "events": {"complete_when": "/done"},
                },
            ]
        )
        baseline = snapshot(upstream.port, port_of(gateway))
        line = await fetch(client, f"{gateway}/line")
        done = await fetch(client, f"{gateway}/done")
        assert line.events == [("message", '{"a": 1}'), ("message", '{"a": 2'), ("end", "")]
        assert done.events == [
            ("message", '{"a": 1}'),
            ("error", "invalid_json"),  # the cut line, now parsed for /done
            ("error", "incomplete"),
        ]
        await assert_back_to(baseline, upstream.port, port_of(gateway))


# -- limits on what one line may hold ------------------------------------------------------------


class PeakRss:
    """The process's highest RSS while it runs, sampled from a thread (no asyncio task, so the
    task count is not disturbed)."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._process = psutil.Process()
        self.start = self._process.memory_info().rss
        self.peak = self.start
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def stop(self) -> int:
        """Growth in bytes over the start."""
        self._stop.set()
        self._thread.join()
        return self.peak - self.start


async def test_a_10_mb_line_is_line_too_long_at_max_line_bytes_and_memory_stays_bounded(
    start_gateway, client
):
    # One framed 64 KiB chunk sent 160 times: the upstream itself allocates next to nothing.
    block = Send(b"10000\r\n" + b"x" * 65536 + b"\r\n")
    big_line = [Chunk(b'{"big": "'), *[block] * 160, Chunk(b'"}\n')]  # 10 MiB
    script = [head(), Chunk(LINE_1), *big_line, Chunk(b'{"a": 3}\n'), Hold()]
    async with FaultUpstream(script) as upstream:
        gateway = await gateway_for(
            start_gateway, upstream.url("/chat"), limits={"max_line_bytes": 1 << 20}
        )
        baseline = snapshot(upstream.port, port_of(gateway))
        gc.collect()
        rss = PeakRss()
        answer = await fetch(client, f"{gateway}/chat")
        growth = rss.stop()
        assert answer.events == [("message", '{"a": 1}'), ("error", "line_too_long")]
        error = orjson.loads(parse_events(answer.body)[-1].data)
        assert error["message"] == "line 2 is longer than max_line_bytes (1048576)"
        # About max_line_bytes (the pending line) plus aiohttp's read buffer; never the 10 MiB.
        assert growth < 3 * (1 << 20), f"RSS grew {growth / (1 << 20):.1f} MiB"
        await assert_back_to(baseline, upstream.port, port_of(gateway))
    assert upstream.outcomes in (["peer_gone"], ["peer_closed"])  # the gateway hung up first


@pytest.mark.parametrize(
    ("tail", "expected"),
    [
        pytest.param(
            b"y" * 4097, [("message", '{"a": 1}'), ("error", "line_too_long")], id="one-over"
        ),
        pytest.param(
            b"y" * 4096, [("message", '{"a": 1}'), ("error", "upstream_timeout")], id="at-limit"
        ),
    ],
)
async def test_a_line_that_never_ends_is_line_too_long_as_soon_as_it_passes_the_limit(
    start_gateway, client, tail: bytes, expected: list[tuple[str, str]]
):
    # No newline ever comes and the upstream stays open: only the limit can end this, not EOF.
    script = [head(), Chunk(LINE_1), *chunks(tail[:1000], tail[1000:]), Hold()]
    async with FaultUpstream(script) as upstream:
        gateway = await gateway_for(
            start_gateway,
            upstream.url("/chat"),
            limits={"max_line_bytes": 4096},
            timeouts={"read": 1.5},
            events={"heartbeat": 0},
        )
        baseline = snapshot(upstream.port, port_of(gateway))
        started = time.monotonic()
        answer = await fetch(client, f"{gateway}/chat")
        took = time.monotonic() - started
        assert answer.events == expected
        if expected[-1][1] == "line_too_long":
            assert took < 1.0  # at once, not at the read timeout
        await assert_back_to(baseline, upstream.port, port_of(gateway))


async def test_a_line_of_exactly_max_line_bytes_is_delivered(start_gateway, client):
    line = b"y" * 4096
    async with FaultUpstream(ndjson_script(line[:3000], line[3000:] + b"\n")) as upstream:
        gateway = await gateway_for(
            start_gateway, upstream.url("/chat"), limits={"max_line_bytes": 4096}
        )
        answer = await fetch(client, f"{gateway}/chat")
    assert answer.events == [("message", line.decode()), ("end", "")]


# -- bytes that are not what they should be --------------------------------------------------------

BAD_BYTES_LINES = [
    b'{"t": "ok \xc3\xa9"}\n',  # valid, its 2-byte character split by the drip
    b"\xff\xfe\x00garbage\x80\n",
    b'{"t": "\xed\xa0\x80 surrogate"}\n',
    b'{"t": "\xc0\xaf overlong"}\n',
    b'{"t": "cut \xe2\x82"}\n',
    b"\x00\x01\x02\x1b[31m\x7f\n",
    b'{"t": "after"}\n',
]


async def test_invalid_utf8_and_binary_garbage_dripped_byte_by_byte_never_end_the_stream(
    start_gateway, client
):
    script = [head(), *drip(b"".join(BAD_BYTES_LINES), 0.002), LAST_CHUNK, Close()]
    async with FaultUpstream(script) as upstream:
        gateway = await start_gateway(
            [
                {"path": "/line", "upstream": upstream.url("/chat")},
                {"path": "/pointer", "upstream": upstream.url("/chat"), "events": {"data": "/t"}},
            ]
        )
        baseline = snapshot(upstream.port, port_of(gateway))
        line = await fetch(client, f"{gateway}/line")
        pointer = await fetch(client, f"{gateway}/pointer")
        await assert_back_to(baseline, upstream.port, port_of(gateway))
    line.body.decode("utf-8")  # the event stream itself is always valid UTF-8
    assert line.events == [
        *[("message", raw[:-1].decode("utf-8", "replace")) for raw in BAD_BYTES_LINES],
        ("end", ""),
    ]
    assert pointer.events == [
        ("message", "ok é"),
        *[("error", "invalid_json")] * 5,
        ("message", "after"),
        ("end", ""),
    ]
    errors = [orjson.loads(e.data) for e in parse_events(pointer.body) if e.event == "error"]
    assert [error["line"] for error in errors] == [2, 3, 4, 5, 6]


def gzip_compressor() -> Any:
    return zlib.compressobj(wbits=16 + zlib.MAX_WBITS)


@pytest.mark.parametrize(
    ("encoding", "compressor"),
    [
        pytest.param("gzip", gzip_compressor, id="gzip"),
        pytest.param("deflate", lambda: zlib.compressobj(wbits=zlib.MAX_WBITS), id="deflate"),
        pytest.param("deflate", lambda: zlib.compressobj(wbits=-zlib.MAX_WBITS), id="raw-deflate"),
    ],
)
async def test_compressed_ndjson_is_decoded_line_by_line_as_it_arrives(
    start_gateway, client, encoding: str, compressor: Any
):
    lines = [b'{"n": 1}\n', b'{"n": 2, "t": "caf\xc3\xa9"}\n', b'{"n": 3}\n']
    squeeze = compressor()
    # A sync flush after each line puts it on the wire whole: a streaming upstream does this.
    pieces = [squeeze.compress(line) + squeeze.flush(zlib.Z_SYNC_FLUSH) for line in lines]
    pieces[-1] += squeeze.flush()
    script: list[Step] = [head(headers=[("Content-Encoding", encoding)])]
    for piece in pieces:
        script += [Chunk(piece), Sleep(0.2)]
    script += [LAST_CHUNK, Close()]
    async with FaultUpstream(script) as upstream:
        gateway = await gateway_for(start_gateway, upstream.url("/chat"))
        baseline = snapshot(upstream.port, port_of(gateway))
        arrivals = await timed_events(client, f"{gateway}/chat")
        await assert_back_to(baseline, upstream.port, port_of(gateway))
    assert [(e.event, e.data) for _, e in arrivals] == [
        ("message", '{"n": 1}'),
        ("message", '{"n": 2, "t": "café"}'),
        ("message", '{"n": 3}'),
        ("end", ""),
    ]
    # Each line's event came before the upstream sent the next line: decoded as a stream.
    chunk_times = [at for at, data in upstream.sent[1 : 1 + len(pieces)]]
    for (arrived, _), next_sent in zip(arrivals, chunk_times[1:], strict=False):
        assert arrived < next_sent
    assert upstream.requests[0].header("Accept-Encoding") is not None


async def test_a_corrupt_gzip_body_mid_stream_gives_the_decoded_events_then_upstream_closed(
    start_gateway, client
):
    squeeze = gzip_compressor()
    first = squeeze.compress(LINE_1) + squeeze.flush(zlib.Z_SYNC_FLUSH)
    script = [
        head(headers=[("Content-Encoding", "gzip")]),
        Chunk(first),
        Sleep(0.1),
        Chunk(b"\xff" * 32),  # not deflate data
        Hold(),
    ]
    async with FaultUpstream(script) as upstream:
        gateway = await gateway_for(start_gateway, upstream.url("/chat"), timeouts={"read": 1})
        baseline = snapshot(upstream.port, port_of(gateway))
        answer = await fetch(client, f"{gateway}/chat")
        await assert_back_to(baseline, upstream.port, port_of(gateway))
    assert answer.events == [("message", '{"a": 1}'), ("error", "upstream_closed")]


# -- the end of the stream -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lines", "expected_end"),
    [
        pytest.param(
            [b'{"t": "a", "done": false}\n', b'{"t": "", "done": true}\n'],
            ("end", ""),
            id="with-the-done-line",
        ),
        pytest.param([b'{"t": "a", "done": false}\n'], ("error", "incomplete"), id="without"),
        pytest.param(
            [b'{"t": "a", "done": false}\n', b'{"t": "", "done": "true"}\n'],
            ("error", "incomplete"),
            id="done-as-a-string-is-not-true",
        ),
        pytest.param(
            [b'{"t": "a", "done": false}\n', b'{"t": "", "done": 1}\n'],
            ("error", "incomplete"),
            id="done-as-1-is-not-true",
        ),
    ],
)
async def test_a_stream_ends_with_end_only_after_its_done_line(
    start_gateway, client, lines: list[bytes], expected_end: tuple[str, str]
):
    async with FaultUpstream(ndjson_script(*lines)) as upstream:
        gateway = await gateway_for(
            start_gateway, upstream.url("/chat"), events={"data": "/t", "complete_when": "/done"}
        )
        baseline = snapshot(upstream.port, port_of(gateway))
        answer = await fetch(client, f"{gateway}/chat")
        await assert_back_to(baseline, upstream.port, port_of(gateway))
    data = [orjson.loads(line)["t"] for line in lines]
    assert answer.events == [*[("message", d) for d in data], expected_end]
    if expected_end[0] == "error":
        error = orjson.loads(parse_events(answer.body)[-1].data)
        assert (
            error["message"] == "the upstream stream ended without its terminal line (/done true)"
        )


# -- timing ----------------------------------------------------------------------------------------


async def timed_events(client: aiohttp.ClientSession, url: str) -> list[tuple[float, SSEEvent]]:
    """Each event with the ``time.monotonic()`` at which its last byte was read."""
    parser = SSEParser()
    arrivals: list[tuple[float, SSEEvent]] = []
    async with client.get(url, timeout=aiohttp.ClientTimeout(total=10)) as response:
        assert response.status == 200
        while chunk := await response.content.readany():
            now = time.monotonic()
            arrivals += [(now, e) for e in parser.feed(chunk) if isinstance(e, SSEEvent)]
    return arrivals


async def test_a_slow_drip_upstream_gets_each_event_out_as_its_last_byte_arrives(
    start_gateway, client
):
    lines = [b'{"n": 1}\n', b'{"n": 2}\n']
    script = [head(), *drip(b"".join(lines), 0.1), LAST_CHUNK, Close()]
    async with FaultUpstream(script) as upstream:
        gateway = await gateway_for(start_gateway, upstream.url("/chat"))
        baseline = snapshot(upstream.port, port_of(gateway))
        arrivals = await timed_events(client, f"{gateway}/chat")
        await assert_back_to(baseline, upstream.port, port_of(gateway))
    assert [e.data for _, e in arrivals] == ['{"n": 1}', '{"n": 2}', ""]
    newline_sent = [at for at, data in upstream.sent if data == b"1\r\n\n\r\n"]
    assert len(newline_sent) == 2
    for (arrived, _), sent in zip(arrivals, newline_sent, strict=False):
        assert 0 <= arrived - sent < 0.15, f"event arrived {arrived - sent:.3f} s after its byte"
