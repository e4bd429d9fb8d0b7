"""The benchmark's upstream: an NDJSON server streaming Ollama-style chat lines, as fast as it can
or at a set rate.

``GET`` or ``POST /stream``. Parameters come from the query string, and a JSON object body goes over
them (the gateway turns its client's query into such a body, every value a string):

    kind     small: a ~150-byte token line | large: a ~2 KB line
    count    lines in the stream
    rate     lines per second; 0 = as fast as possible, many lines per write (about 64 KiB)
    phase    seconds before the first paced line, so that paced streams are spread evenly
    hold     seconds to stay open and silent after the last line (idle streams)
    gate, gate_n   send no line until gate_n streams carrying this gate id are open, so that a
             concurrent figure measures all of its streams running at once

``GET /stats``: ``{"requests": <stream requests so far>, "open": <streams open now>}``, so that a
figure can tell how many upstream requests a party made (the fan-out figure: one when shared).

A paced line carries its emit time: its content is ``tok@<time.time_ns()>``, so a client can find
it in NDJSON, in ``data: line`` events and in ``data: /message/content`` events alike.

Strategy: the as-fast-as-possible body is prebuilt once per kind, so the upstream spends its time in
``write`` and stays far from being the bottleneck of any party.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import time
from typing import Any, Final

import orjson
from aiohttp import web

__all__ = ["LINE_KINDS", "make_line", "raise_nofile"]

MODEL: Final = "llama3.1:8b-instruct-q4_K_M"
TOKENS: Final = [" the", " model", ",", " streams", " each", " token", " to", " a", " browser", "."]
PARAGRAPH: Final = (
    "## Streaming\\n\\nEach token is written to the socket as soon as the model produces it. "
    'A client that reads the body line by line sees \\"tokens\\" arrive one at a time, while a '
    "proxy that buffers shows nothing until the end.\\n\\n```python\\nfor line in response:\\n"
    '    print(json.loads(line)[\\"message\\"][\\"content\\"], end=\\"\\")\\n```\\n'
)
LARGE_CONTENT_BYTES: Final = 1900
WRITE_BYTES: Final = 64 * 1024
MAX_COUNT: Final = 50_000_000
MAX_HOLD_S: Final = 900.0
GATE_WAIT_S: Final = 60.0


def _created_at(index: int) -> str:
    seconds, millis = divmod(index, 1000)
    return f"2024-05-01T12:{(seconds // 60) % 60:02d}:{seconds % 60:02d}.{millis:03d}412345Z"


def _large_content() -> str:
    text = PARAGRAPH * (LARGE_CONTENT_BYTES // len(PARAGRAPH) + 1)
    return text[:LARGE_CONTENT_BYTES].rstrip("\\")


def make_line(kind: str, index: int, content: str | None = None) -> bytes:
    """One NDJSON line (with its LF). ``content`` replaces the token, e.g. for a timestamp."""
    if content is None:
        content = TOKENS[index % len(TOKENS)] if kind == "small" else _LARGE
    return (
        f'{{"model":"{MODEL}","created_at":"{_created_at(index)}",'
        f'"message":{{"role":"assistant","content":"{content}"}},"done":false}}\n'
    ).encode()


_LARGE: Final = _large_content()
LINE_KINDS: Final = ("small", "large")


class _Prebuilt:
    """One write's worth of lines per kind, and its prefixes for a stream's last short write."""

    def __init__(self, kind: str) -> None:
        first = make_line(kind, 0)
        self.per_write = max(1, WRITE_BYTES // len(first))
        self.lines = [make_line(kind, i) for i in range(self.per_write)]
        self.batch = b"".join(self.lines)

    def head(self, n: int) -> bytes:
        return b"".join(self.lines[:n])


class _Gates:
    """Streams that wait until ``n`` streams with the same gate id are open."""

    def __init__(self) -> None:
        self._gates: dict[str, tuple[asyncio.Event, list[int]]] = {}

    async def wait(self, gate: str, n: int) -> None:
        event, arrived = self._gates.setdefault(gate, (asyncio.Event(), [0]))
        arrived[0] += 1
        if arrived[0] >= n:
            event.set()
        with contextlib.suppress(TimeoutError):  # never hang: go on after GATE_WAIT_S
            await asyncio.wait_for(event.wait(), GATE_WAIT_S)


def _params(query: Any, body: dict[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {**query, **body}
    return {
        "kind": "large" if merged.get("kind") == "large" else "small",
        "count": min(MAX_COUNT, max(0, int(merged.get("count", 100)))),
        "rate": float(merged.get("rate", 0)),
        "phase": float(merged.get("phase", 0)),
        "hold": min(MAX_HOLD_S, float(merged.get("hold", 0))),
        "gate": str(merged.get("gate", "")),
        "gate_n": int(merged.get("gate_n", 1)),
    }


def create_app() -> web.Application:
    prebuilt = {kind: _Prebuilt(kind) for kind in LINE_KINDS}
    gates = _Gates()
    counts = {"requests": 0, "open": 0}

    async def stream(request: web.Request) -> web.StreamResponse:
        counts["requests"] += 1
        counts["open"] += 1
        try:
            return await _stream(request)
        finally:
            counts["open"] -= 1

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(counts)

    async def _stream(request: web.Request) -> web.StreamResponse:
        raw = await request.read() if request.can_read_body else b""
        body = orjson.loads(raw) if raw else {}
        p = _params(request.query, body if isinstance(body, dict) else {})
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        if p["gate"]:
            await gates.wait(p["gate"], p["gate_n"])
        if p["rate"] > 0:
            await _paced(response, p)
        else:
            await _burst(response, prebuilt[p["kind"]], p["count"])
        if p["hold"] > 0:
            await asyncio.sleep(p["hold"])
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_route("*", "/stream", stream)
    app.router.add_get("/stats", stats)
    return app


async def _burst(response: web.StreamResponse, pre: _Prebuilt, count: int) -> None:
    full, rest = divmod(count, pre.per_write)
    for _ in range(full):
        await response.write(pre.batch)
    if rest:
        await response.write(pre.head(rest))


async def _paced(response: web.StreamResponse, p: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    period = 1.0 / p["rate"]
    due = loop.time() + p["phase"]
    for index in range(p["count"]):
        await asyncio.sleep(max(0.0, due - loop.time()))
        due += period
        await response.write(make_line(p["kind"], index, f"tok@{time.time_ns()}"))


def raise_nofile() -> int:
    """Raise this process's open-file limit to its hard limit; return the new limit."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


async def _serve(host: str, port: int) -> None:
    # handler_cancellation: a stream whose reader left stops at once instead of writing on.
    runner = web.AppRunner(create_app(), access_log=None, handler_cancellation=True)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, backlog=4096)
        await site.start()
        bound = runner.addresses[0]
        print(f"upstream: listening on http://{bound[0]}:{bound[1]}", flush=True)
        await asyncio.Event().wait()  # until SIGTERM
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    raise_nofile()
    asyncio.run(_serve(args.host, args.port))


if __name__ == "__main__":
    main()
