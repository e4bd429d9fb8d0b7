"""The soak's upstream: numbered NDJSON lines at a set pace, with the faults a client asks for.

``POST /numbered`` (the gateway turns its client's query into this JSON body, every value a
string) streams ``{"n": 1, "sid": ...}`` .. ``{"n": count, ...}``, ``rate`` lines per second, in
chunked transfer coding, one chunk per line. ``fault`` with ``at`` replaces line ``at``:

    bad_json   a line that is not JSON (the gateway sends an ``invalid_json`` error, goes on)
    too_long   a line longer than the route's max_line_bytes (``line_too_long``, the stream ends)
    close      nothing: the connection is closed (FIN) in the middle of the chunked body,
               after every earlier line has been handed to the kernel (``upstream_closed``)

``GET /stats`` answers what it has served: streams, lines, faults, and how many responses are
still being written (0 once the gateway has let go of every stream it opened).

Strategy: raw asyncio streams, not aiohttp's server, because a close in the middle of a body is
exactly what a well-behaved server never does. Connections are kept alive between responses (the
gateway pools them) and closed after ``IDLE_S`` seconds without a request, so that after a soak
the gateway's pooled upstream sockets go away on their own and its descriptor count can return
to where it started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections import Counter
from typing import Any, Final

import orjson

from .upstream import raise_nofile

__all__ = ["LONG_LINE_BYTES", "main"]

IDLE_S: Final = 2.0
LONG_LINE_BYTES: Final = 8192
MAX_COUNT: Final = 100_000
HEAD: Final = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n"
)


class Upstream:
    def __init__(self) -> None:
        self.stats: Counter[str] = Counter()
        self.writing = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats["connections"] += 1
        try:
            while True:
                try:
                    async with asyncio.timeout(IDLE_S):
                        head = await reader.readuntil(b"\r\n\r\n")
                except (TimeoutError, asyncio.IncompleteReadError):
                    return
                method, path, headers = _parse_head(head)
                length = int(headers.get("content-length", "0"))
                body = await reader.readexactly(length) if length else b""
                if path == "/stats":
                    await self._answer(writer, orjson.dumps({**self.stats, "open": self.writing}))
                elif method == "POST" and path == "/numbered":
                    if not await self._numbered(writer, orjson.loads(body)):
                        return  # closed on purpose, or the gateway went away
                else:
                    await self._answer(writer, b'{"error": "not found"}', b"404 Not Found")
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, writer: asyncio.StreamWriter, body: bytes, status: bytes = b"200 OK"):
        writer.write(
            b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (status, len(body), body)
        )
        await writer.drain()

    async def _numbered(self, writer: asyncio.StreamWriter, params: dict[str, Any]) -> bool:
        """One stream; True if it ended cleanly (the connection can take another request)."""
        sid = str(params.get("sid", ""))
        count = min(MAX_COUNT, int(params.get("count", 10)))
        period = 1.0 / max(0.1, float(params.get("rate", 20)))
        fault = str(params.get("fault", "none"))
        at = int(params.get("at", 0))
        self.stats["streams"] += 1
        self.writing += 1
        loop = asyncio.get_running_loop()
        try:
            writer.write(HEAD)
            due = loop.time()
            for n in range(1, count + 1):
                due += period
                await asyncio.sleep(max(0.0, due - loop.time()))
                if n == at and fault == "close":
                    self.stats["fault_close"] += 1
                    await writer.drain()  # every earlier line is with the kernel: it arrives
                    return False
                if n == at and fault == "bad_json":
                    self.stats["fault_bad_json"] += 1
                    line = b'{"n": %d, "sid": oops\n' % n
                elif n == at and fault == "too_long":
                    self.stats["fault_too_long"] += 1
                    line = b'{"n": %d, "pad": "%s"}\n' % (n, b"x" * LONG_LINE_BYTES)
                else:
                    line = b'{"n": %d, "sid": "%s"}\n' % (n, sid.encode())
                writer.write(b"%x\r\n%s\r\n" % (len(line), line))
                self.stats["lines"] += 1
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return True
        finally:
            self.writing -= 1


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    request_line, *lines = head.decode("latin-1").split("\r\n")
    method, target, _version = request_line.split(" ", 2)
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        if name:
            headers[name.strip().lower()] = value.strip()
    return method, target.split("?", 1)[0], headers


async def _serve(host: str, port: int) -> None:
    upstream = Upstream()
    server = await asyncio.start_server(upstream.serve, host, port, backlog=4096)
    bound = server.sockets[0].getsockname()
    print(f"soak-upstream: listening on http://{bound[0]}:{bound[1]}", flush=True)
    async with server:
        await server.serve_forever()  # until SIGTERM


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.soak_upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    raise_nofile()
    asyncio.run(_serve(args.host, args.port))


if __name__ == "__main__":
    main()
