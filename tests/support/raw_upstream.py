"""A scriptable upstream on raw asyncio sockets, and a count of what the gateway holds open.

Strategy: aiohttp's own server always frames its answers correctly, so the faults that matter at
the byte level (a bad chunk size line, a reset after half a line, headers followed by silence, a
listener that never accepts) are written here by hand. Each connection reads one request (recorded
verbatim: the request line's target as it came, the header lines in order, the body) and then plays
a *script*: a list of steps (send bytes, send one chunk in chunked framing, sleep, hold silent,
close with FIN, reset with RST). A script that runs out closes the connection.

The gateway runs in this same process (``start_gateway``), so its file descriptors, tasks and
sockets are this process's: :func:`snapshot` counts them and :func:`assert_back_to` polls until they
are back at a baseline taken before the request, which is how a test proves nothing leaked.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import psutil

__all__ = [
    "LAST_CHUNK",
    "Chunk",
    "Close",
    "FaultUpstream",
    "Hold",
    "RecordedRequest",
    "Reset",
    "Resources",
    "Send",
    "Sleep",
    "Step",
    "assert_back_to",
    "chunks",
    "drip",
    "head",
    "ndjson_script",
    "snapshot",
    "unaccepted_port",
]


# -- the script --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Send:
    """Raw bytes, exactly as given (a response head, a body without framing, garbage)."""

    data: bytes


@dataclass(frozen=True)
class Chunk:
    """One chunk in chunked transfer coding: ``<hex size>\\r\\n<data>\\r\\n``."""

    data: bytes


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Hold:
    """Send nothing until the peer closes its side (or ``seconds`` pass): a silent upstream that
    still notices when the gateway gives up on it."""

    seconds: float = 30.0


@dataclass(frozen=True)
class Close:
    """A clean close (FIN) after everything sent so far."""


@dataclass(frozen=True)
class Reset:
    """A TCP reset: SO_LINGER 0, then close. Bytes still in the kernel's send buffer are dropped,
    so put a short :class:`Sleep` before it when what was sent must arrive first."""


Step = Send | Chunk | Sleep | Hold | Close | Reset
LAST_CHUNK = Send(b"0\r\n\r\n")


def head(
    status: int = 200,
    *,
    reason: str = "OK",
    content_type: str | None = "application/x-ndjson",
    chunked: bool = True,
    headers: Sequence[tuple[str, str]] = (),
) -> Send:
    """A response head; with ``chunked`` the body must follow as :class:`Chunk` steps."""
    lines = [f"HTTP/1.1 {status} {reason}"]
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    lines += [f"{name}: {value}" for name, value in headers]
    return Send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))


def chunks(*pieces: bytes) -> list[Step]:
    return [Chunk(piece) for piece in pieces]


def drip(data: bytes, interval: float) -> list[Step]:
    """``data`` one byte per chunk, ``interval`` seconds apart."""
    steps: list[Step] = []
    for index in range(len(data)):
        steps += [Chunk(data[index : index + 1]), Sleep(interval)]
    return steps


def ndjson_script(*lines: bytes, content_type: str = "application/x-ndjson") -> list[Step]:
    """A well-formed chunked NDJSON answer, one chunk per line, then a close."""
    return [head(content_type=content_type), *chunks(*lines), LAST_CHUNK, Close()]


# -- the server --------------------------------------------------------------------------------


@dataclass
class RecordedRequest:
    method: str
    target: str
    """The request line's target exactly as it arrived (never decoded or normalized)."""
    version: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers_named(name)
        return ", ".join(values) if values else None

    def headers_named(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]


Script = Sequence[Step] | Callable[[RecordedRequest], Sequence[Step]]


@dataclass
class FaultUpstream:
    """``async with FaultUpstream(script) as upstream:`` then ``upstream.url("/path")``.

    ``script`` is played on every connection, or is called with the recorded request to give the
    steps (an upstream that echoes what it got). ``requests`` holds every request, ``sent`` every
    write as ``(time.monotonic() when it was handed to the kernel, bytes)``, ``outcomes`` how each
    connection ended: ``done``, ``peer_closed`` (in a :class:`Hold`), ``peer_gone`` (a write
    failed), ``reset``, ``no_request`` (the peer closed before a whole request arrived).
    """

    script: Script
    requests: list[RecordedRequest] = field(default_factory=list)
    sent: list[tuple[float, bytes]] = field(default_factory=list)
    outcomes: list[str] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _port: int = 0
    _open: dict[asyncio.Task[None], asyncio.StreamWriter] = field(default_factory=dict)

    @property
    def port(self) -> int:
        assert self._port, "not started"
        return self._port

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def __aenter__(self) -> FaultUpstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=1 << 20)
        self._port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        # Cut what is still open, so scripts that wait on their peer end by themselves (a
        # cancelled connection task makes asyncio's start_server log an error).
        for writer in self._open.values():
            writer.transport.abort()
        if self._open:
            await asyncio.wait(list(self._open), timeout=5)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._open[task] = writer
        outcome = "done"
        try:
            request = await _read_request(reader)
            if request is None:
                outcome = "no_request"
                return
            self.requests.append(request)
            steps = self.script(request) if callable(self.script) else self.script
            outcome = await self._play(steps, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            outcome = "peer_gone"
        finally:
            self.outcomes.append(outcome)
            if outcome != "reset":
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()
            del self._open[task]

    async def _play(
        self, steps: Sequence[Step], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> str:
        for step in steps:
            if isinstance(step, Send | Chunk):
                data = step.data
                if isinstance(step, Chunk):
                    data = b"%x\r\n%s\r\n" % (len(data), data)
                writer.write(data)
                await writer.drain()
                self.sent.append((time.monotonic(), data))
            elif isinstance(step, Sleep):
                await asyncio.sleep(step.seconds)
            elif isinstance(step, Hold):
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(step.seconds):
                        while await reader.read(65536):
                            pass  # anything more from the gateway is ignored
                        return "peer_closed"
            elif isinstance(step, Close):
                return "done"
            else:
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
                return "reset"
        return "done"


async def _read_request(reader: asyncio.StreamReader) -> RecordedRequest | None:
    try:
        raw_head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    request_line, *header_lines = raw_head[:-4].decode("latin-1").split("\r\n")
    method, target, version = request_line.split(" ", 2)
    headers = [
        (name.strip(), value.strip())
        for name, _, value in (line.partition(":") for line in header_lines)
    ]
    request = RecordedRequest(method, target, version, headers, b"")
    if (length := request.header("Content-Length")) is not None:
        request.body = await reader.readexactly(int(length))
    elif (request.header("Transfer-Encoding") or "").lower() == "chunked":
        body = bytearray()
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        await reader.readuntil(b"\r\n")  # no trailers from the gateway: just the last CRLF
        request.body = bytes(body)
    return request


@contextlib.contextmanager
def unaccepted_port() -> Iterator[int]:
    """A port whose listener never accepts and whose backlog is full, so a new connection's SYN
    goes unanswered: the only reliable connect timeout on loopback (a closed port refuses at
    once)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    address = listener.getsockname()
    fillers: list[socket.socket] = []
    try:
        for _ in range(4):  # Linux queues backlog + 1; a few more make sure it is full
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(address)
            fillers.append(filler)
        time.sleep(0.1)  # let the handshakes that will complete, complete
        yield address[1]
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


# -- resources held by this process (the gateway runs in it) -----------------------------------


@dataclass(frozen=True)
class Resources:
    fds: int
    tasks: int
    connections: int
    """This process's TCP sockets with one of the ports at either end, listeners left out."""


def snapshot(*ports: int) -> Resources:
    """What this process holds now; ``ports`` are the upstream's (and the gateway's) ports."""
    connections = sum(
        1
        for conn in psutil.Process().net_connections(kind="tcp")
        if conn.status != psutil.CONN_LISTEN
        and ((conn.laddr and conn.laddr.port in ports) or (conn.raddr and conn.raddr.port in ports))
    )
    return Resources(len(os.listdir("/proc/self/fd")), len(asyncio.all_tasks()), connections)


async def assert_back_to(baseline: Resources, *ports: int, within: float = 3.0) -> None:
    """Poll until the fds, tasks and sockets to ``ports`` are no more than at ``baseline``."""
    deadline = time.monotonic() + within
    while True:
        now = snapshot(*ports)
        back = (
            now.fds <= baseline.fds
            and now.tasks <= baseline.tasks
            and now.connections <= baseline.connections
        )
        if back:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"leaked after {within} s: {now} against the baseline {baseline}")
        await asyncio.sleep(0.05)
