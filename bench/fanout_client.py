"""The fan-out readers: one process holding many SSE connections to one URL, taking jobs as JSON
lines on stdin like the load client (bench/client.py), answering each with one JSON line.

Strategy: thousands of readers at 20 events/s each are 100,000 arrivals a second, more than an
aiohttp client per connection can take on this machine's spare core; so a reader is a bare
``asyncio.Protocol`` (one ``data_received`` per chunk, no parsing beyond a regex for the emit
stamps), the process runs on uvloop when it is installed, and the bench spreads the readers over
several such processes. Each reports its CPU so the report can show whether readers kept up.

Jobs (``type``):
    open    n connections, ``GET path`` each; answers when every one has its first stamped event
    window  latency of every event emitted in [t0_ns, t1_ns) (arrival - emit stamp, same clock),
            and arrivals in that span, with this process's CPU seconds inside the span; answers
            once every reader has an event emitted at or after t1_ns (a stream is in order, so
            it then has every event of the span: none is left out for being late), or after
            catch_up_s, saying how many readers were still behind
    close   close every connection
"""

from __future__ import annotations

import asyncio
import re
import resource
import sys
import time
from typing import Any, Final

import orjson

from .upstream import raise_nofile

STAMP: Final = re.compile(rb"@(\d{19})")
BIN_NS: Final = 10_000
"""Latencies are kept as a histogram of 10 us bins, summed over the processes by the bench."""
MAX_ERRORS: Final = 5


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Readers:
    """Every connection's counts, and the window being measured."""

    def __init__(self) -> None:
        self.transports: list[asyncio.Transport] = []
        self.protocols: list[Reader] = []
        self.t0 = self.t1 = 0
        self.arrived = 0
        self.histogram: dict[int, int] = {}
        self.lost = 0

    def stamps(self, now: int, stamps: list[bytes]) -> None:
        t0, t1 = self.t0, self.t1
        if t0 <= now < t1:
            self.arrived += len(stamps)
        histogram = self.histogram
        for text in stamps:
            emitted = int(text)
            if t0 <= emitted < t1:
                key = (now - emitted) // BIN_NS
                histogram[key] = histogram.get(key, 0) + 1


class Reader(asyncio.Protocol):
    """One SSE connection: the response head checked, then stamps counted per complete event."""

    def __init__(self, readers: Readers, request: bytes) -> None:
        self._readers = readers
        self._request = request
        self._head = b""
        self._in_body = False
        self._pending = b""
        self.last = 0  # the newest emit stamp read
        self.first: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self._request)  # type: ignore[attr-defined]  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        now = time.time_ns()
        if not self._in_body:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            status = self._head[: self._head.find(b"\r\n")]
            if not status.startswith(b"HTTP/1.1 200"):
                self._fail(f"response {status!r}")
                return
            data, self._in_body, self._head = self._head[end + 4 :], True, b""
        if self._pending:
            data = self._pending + data
        cut = data.rfind(b"\n\n")
        if cut < 0:
            self._pending = data
            return
        self._pending = data[cut + 2 :]  # chunked framing's CRLF at most, or part of an event
        stamps = STAMP.findall(data, 0, cut)
        if stamps:
            self._readers.stamps(now, stamps)
            self.last = int(stamps[-1])
            if not self.first.done():
                self.first.set_result(None)

    def _fail(self, why: str) -> None:
        if not self.first.done():
            self.first.set_exception(RuntimeError(why))

    def connection_lost(self, exc: Exception | None) -> None:
        self._readers.lost += 1
        self._fail(f"closed before the first event ({exc!r})")


async def job_open(readers: Readers, job: dict[str, Any]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    request = (
        f"GET {job['path']} HTTP/1.1\r\nHost: {job['host']}:{job['port']}\r\n"
        "Accept: text/event-stream\r\n\r\n"
    ).encode()
    # A bounded number of connections being set up at once: no listen backlog overflows.
    ramp = asyncio.Semaphore(job.get("connect_limit", 64))

    async def one() -> None:
        async with ramp:
            transport, reader = await loop.create_connection(
                lambda: Reader(readers, request), job["host"], job["port"]
            )
            readers.transports.append(transport)
            readers.protocols.append(reader)
            await asyncio.wait_for(reader.first, 30)

    started = time.perf_counter()
    results = await asyncio.gather(*(one() for _ in range(job["n"])), return_exceptions=True)
    errors = [repr(r) for r in results if isinstance(r, BaseException)]
    return {
        "opened": len(results) - len(errors),
        "errors": errors[:MAX_ERRORS],
        "error_count": len(errors),
        "seconds": time.perf_counter() - started,
    }


async def _sleep_until_ns(when: int) -> None:
    await asyncio.sleep(max(0.0, (when - time.time_ns()) / 1e9))


async def job_window(readers: Readers, job: dict[str, Any]) -> dict[str, Any]:
    readers.t0, readers.t1 = job["t0_ns"], job["t1_ns"]
    readers.arrived, readers.histogram = 0, {}
    lost_before = readers.lost
    await _sleep_until_ns(readers.t0)
    cpu0 = _cpu_s()
    await _sleep_until_ns(readers.t1)
    cpu1 = _cpu_s()
    deadline = time.monotonic() + job["catch_up_s"]
    while True:
        behind = sum(1 for r in readers.protocols if r.last < readers.t1)
        if not behind or time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.05)
    return {
        "behind": behind,
        "arrived": readers.arrived,
        "histogram": list(readers.histogram.items()),
        "bin_ns": BIN_NS,
        "cpu_s": cpu1 - cpu0,
        "lost": readers.lost - lost_before,
        "connections": len(readers.transports) - readers.lost,
    }


async def job_close(readers: Readers) -> dict[str, Any]:
    for transport in readers.transports:
        transport.close()
    readers.transports, readers.protocols, readers.lost = [], [], 0
    await asyncio.sleep(0.1)  # let the closes go out before the bench stops the gateway
    readers.lost = 0
    return {}


async def serve_jobs() -> None:
    raise_nofile()
    readers = Readers()
    loop = asyncio.get_running_loop()
    print("client: ready", flush=True)
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        job = orjson.loads(line)
        try:
            async with asyncio.timeout(job.get("timeout", 120)):
                if job["type"] == "open":
                    result = await job_open(readers, job)
                elif job["type"] == "window":
                    result = await job_window(readers, job)
                elif job["type"] == "close":
                    result = await job_close(readers)
                else:
                    raise ValueError(f"unknown job type {job['type']!r}")
        except TimeoutError:
            result = {"error": f"job timed out after {job.get('timeout', 120)} s"}
        sys.stdout.write(orjson.dumps(result).decode() + "\n")
        sys.stdout.flush()


def main() -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve_jobs())
    else:
        uvloop.run(serve_jobs())


if __name__ == "__main__":
    main()
