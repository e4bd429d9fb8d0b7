"""The load client: a separate process that takes jobs as JSON lines on stdin and answers each with
one JSON line on stdout, so that one warm process serves a whole run.

It counts, it does not parse: events are terminators (``\\n\\n`` for SSE parties, ``\\n`` for
NDJSON ones), bytes are bytes. Every job reports the client's own CPU seconds, so the report can
show the client is not the bottleneck. Every job runs under a time limit; every loop ends with its
stream.

Jobs (``type``):
    stream      n concurrent streams of one URL, read to the end; gated=True times them from the
                moment the last one got its headers (the upstream holds the body until all are open)
    latency     one stream per URL; arrival time minus the ``@<time_ns>`` stamp in each event
    ttfe        n streams one after another, each on a new connection: time to the first data event
    idle_open   open n streams and keep them open, counting heartbeats; idle_stats, idle_close
"""

from __future__ import annotations

import asyncio
import re
import resource
import sys
import time
from typing import Any, Final

import aiohttp
import orjson

from .upstream import raise_nofile

STAMP: Final = re.compile(rb"@(\d{19})")
PING: Final = b": ping"
MAX_ERRORS: Final = 5


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _headers(sse: bool) -> dict[str, str]:
    return {"Accept": "text/event-stream" if sse else "application/x-ndjson"}


def _session(limit: int = 0, force_close: bool = False) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=0, force_close=force_close)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=120)
    return aiohttp.ClientSession(
        connector=connector, timeout=timeout, read_bufsize=1 << 18, auto_decompress=False
    )


async def _open(
    session: aiohttp.ClientSession, url: str, sse: bool, ramp: asyncio.Semaphore | None
) -> aiohttp.ClientResponse:
    # The ramp bounds connections being set up at once, so no listen backlog overflows (a dropped
    # SYN costs a 1 s retransmit and would be measured as the party's slowness).
    if ramp is None:
        response = await session.get(url, headers=_headers(sse))
    else:
        async with ramp:
            response = await session.get(url, headers=_headers(sse))
    if response.status != 200:
        text = (await response.read())[:200]
        response.release()
        raise RuntimeError(f"HTTP {response.status}: {text!r}")
    return response


async def _read_counting(
    session: aiohttp.ClientSession, url: str, sse: bool, ramp: asyncio.Semaphore
) -> tuple[float, float, float, int, int]:
    started = time.perf_counter()
    response = await _open(session, url, sse, ramp)
    headers_at = time.perf_counter()
    term = b"\n\n" if sse else b"\n"
    count = nbytes = 0
    last_was_lf = False
    try:
        async for chunk in response.content.iter_any():
            nbytes += len(chunk)
            count += chunk.count(term)
            if sse and last_was_lf and chunk[0] == 0x0A:
                count += 1  # a blank line split across two chunks
            last_was_lf = chunk[-1] == 0x0A
    finally:
        response.release()
    return started, headers_at, time.perf_counter(), count, nbytes


async def job_stream(job: dict[str, Any]) -> dict[str, Any]:
    ramp = asyncio.Semaphore(job.get("connect_limit", 64))
    async with _session() as session:
        results = await asyncio.gather(
            *(_read_counting(session, job["url"], job["sse"], ramp) for _ in range(job["n"])),
            return_exceptions=True,
        )
    ok = [r for r in results if isinstance(r, tuple)]
    errors = [repr(r) for r in results if not isinstance(r, tuple)]
    if not ok:
        return {"streams_ok": 0, "errors": errors[:MAX_ERRORS], "error_count": len(errors)}
    t0 = max(r[1] for r in ok) if job.get("gated") else min(r[0] for r in ok)
    return {
        "streams_ok": len(ok),
        "errors": errors[:MAX_ERRORS],
        "error_count": len(errors),
        "terminators": sum(r[3] for r in ok),
        "bytes": sum(r[4] for r in ok),
        "seconds": max(r[2] for r in ok) - t0,
    }


async def _stamped(
    session: aiohttp.ClientSession, url: str, sse: bool, ramp: asyncio.Semaphore, out: list[int]
) -> None:
    response = await _open(session, url, sse, ramp)
    term = b"\n\n" if sse else b"\n"
    pending = b""
    try:
        async for chunk in response.content.iter_any():
            arrived = time.time_ns()
            pending += chunk
            cut = pending.rfind(term)
            if cut < 0:
                continue
            complete, pending = pending[: cut + len(term)], pending[cut + len(term) :]
            out.extend(arrived - int(m.group(1)) for m in STAMP.finditer(complete))
    finally:
        response.release()


def _quantiles(values: list[float], points: int = 200) -> list[float]:
    ordered = sorted(values)
    last = len(ordered) - 1
    return [ordered[round(last * i / points)] for i in range(points + 1)]


async def job_latency(job: dict[str, Any]) -> dict[str, Any]:
    latencies_ns: list[int] = []
    ramp = asyncio.Semaphore(job.get("connect_limit", 64))
    async with _session() as session:
        results = await asyncio.gather(
            *(_stamped(session, url, job["sse"], ramp, latencies_ns) for url in job["urls"]),
            return_exceptions=True,
        )
    errors = [repr(r) for r in results if isinstance(r, BaseException)]
    ms = [ns / 1e6 for ns in latencies_ns]
    return {
        "samples": len(ms),
        "errors": errors[:MAX_ERRORS],
        "error_count": len(errors),
        "quantiles_ms": _quantiles(ms) if ms else [],
    }


def _has_event(seen: bytes, sse: bool) -> bool:
    """Whether ``seen`` holds a whole data event (an SSE ``retry:`` block alone is none)."""
    if not sse:
        return b"\n" in seen
    blocks = seen.split(b"\n\n")[:-1]
    return any(b.startswith(b"data:") or b"\ndata:" in b for b in blocks)


async def _first_event_s(session: aiohttp.ClientSession, url: str, sse: bool) -> float:
    started = time.perf_counter()
    response = await _open(session, url, sse, None)
    first: float | None = None
    seen = b""
    try:
        async for chunk in response.content.iter_any():
            if first is None:
                seen += chunk
                if _has_event(seen, sse):
                    first = time.perf_counter() - started
    finally:
        response.release()
    if first is None:
        raise RuntimeError("the stream ended without an event")
    return first


async def job_ttfe(job: dict[str, Any]) -> dict[str, Any]:
    times_ms: list[float] = []
    errors: list[str] = []
    async with _session(force_close=True) as session:  # a new connection for every stream
        for _ in range(job["n"]):
            try:
                times_ms.append(1000 * await _first_event_s(session, job["url"], job["sse"]))
            except (aiohttp.ClientError, RuntimeError) as exc:
                errors.append(repr(exc))
    return {
        "samples": len(times_ms),
        "errors": errors[:MAX_ERRORS],
        "error_count": len(errors),
        "quantiles_ms": _quantiles(times_ms) if times_ms else [],
    }


class IdleStreams:
    """Streams held open across jobs; each counts the heartbeats it receives."""

    def __init__(self) -> None:
        self.session: aiohttp.ClientSession | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.pings: list[int] = []
        self.alive = 0

    async def open(self, job: dict[str, Any]) -> dict[str, Any]:
        self.session = _session()
        ramp = asyncio.Semaphore(job.get("connect_limit", 64))
        opened: list[asyncio.Future[None]] = []
        started = time.perf_counter()
        for index in range(job["n"]):
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            opened.append(future)
            self.pings.append(0)
            self.tasks.append(asyncio.create_task(self._hold(job, index, ramp, future)))
        results = await asyncio.gather(*opened, return_exceptions=True)
        errors = [repr(r) for r in results if isinstance(r, BaseException)]
        return {
            "opened": len(results) - len(errors),
            "errors": errors[:MAX_ERRORS],
            "error_count": len(errors),
            "seconds": time.perf_counter() - started,
        }

    async def _hold(
        self, job: dict[str, Any], index: int, ramp: asyncio.Semaphore, opened: asyncio.Future[None]
    ) -> None:
        assert self.session is not None
        try:
            response = await _open(self.session, job["url"], job["sse"], ramp)
        except (aiohttp.ClientError, RuntimeError, OSError) as exc:
            opened.set_exception(exc)
            return
        self.alive += 1
        seen = b""
        try:
            async for chunk in response.content.iter_any():
                if not opened.done():
                    seen += chunk
                    if _has_event(seen, job["sse"]):
                        opened.set_result(None)
                self.pings[index] += chunk.count(PING)
        except aiohttp.ClientError as exc:
            if not opened.done():
                opened.set_exception(exc)
        finally:
            self.alive -= 1
            response.release()
            if not opened.done():
                opened.set_exception(RuntimeError("the stream ended before its first event"))

    def stats(self) -> dict[str, Any]:
        return {
            "alive": self.alive,
            "pings": sum(self.pings),
            "streams_with_ping": sum(1 for p in self.pings if p),
        }

    async def close(self) -> dict[str, Any]:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.session is not None:
            await self.session.close()
        self.session, self.tasks, self.pings = None, [], []
        return {}


async def _run_job(job: dict[str, Any], idle: IdleStreams) -> dict[str, Any]:
    kind = job["type"]
    if kind == "stream":
        return await job_stream(job)
    if kind == "latency":
        return await job_latency(job)
    if kind == "ttfe":
        return await job_ttfe(job)
    if kind == "idle_open":
        return await idle.open(job)
    if kind == "idle_stats":
        return idle.stats()
    if kind == "idle_close":
        return await idle.close()
    raise ValueError(f"unknown job type {kind!r}")


async def serve_jobs() -> None:
    raise_nofile()
    idle = IdleStreams()
    loop = asyncio.get_running_loop()
    print("client: ready", flush=True)
    try:
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            job = orjson.loads(line)
            cpu_before, wall_before = _cpu_s(), time.perf_counter()
            try:
                async with asyncio.timeout(job.get("timeout", 120)):
                    result = await _run_job(job, idle)
            except TimeoutError:
                result = {"error": f"job timed out after {job.get('timeout', 120)} s"}
            result["client_cpu_s"] = _cpu_s() - cpu_before
            result["client_wall_s"] = time.perf_counter() - wall_before
            sys.stdout.write(orjson.dumps(result).decode() + "\n")
            sys.stdout.flush()
    finally:
        await idle.close()


if __name__ == "__main__":
    asyncio.run(serve_jobs())
