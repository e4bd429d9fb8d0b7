"""One log line per stream, at its end: readable in a developer's terminal, JSON in production.

Strategy: the handler fills a :class:`StreamRecord` as the stream goes (the upstream's status, when
the first event went out, how it ended); the ``access_log`` middleware times the request, takes
the final status and writes the record once, through the ``proxy.access`` logger, as a structured
``extra``. The two formatters only render it. The query string is never logged: it is where a
browser's ``EventSource`` has to put its body, and sometimes a credential.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Final

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from .timeline import Timeline

__all__ = [
    "STREAM_RECORD",
    "DevFormatter",
    "JsonFormatter",
    "StreamRecord",
    "access_log",
    "configure_logging",
]

access = logging.getLogger("proxy.access")


@dataclass(slots=True)
class StreamRecord:
    method: str
    path: str
    route: str | None = None
    status: int = 0
    upstream_status: int | None = None
    events: int = 0
    bytes: int = 0
    first_event_ms: float | None = None
    duration_ms: float = 0.0
    ended: str = "eof"
    gap_p50_ms: float | None = None
    """The median gap between the writes that carried events (for an LLM: inter-token latency),
    as the upper bound of its bucket."""
    gap_p99_ms: float | None = None
    gap_max_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    started: float = field(default_factory=time.monotonic, repr=False)
    timeline: Timeline = field(default_factory=Timeline, repr=False)

    def first_event_now(self) -> None:
        if self.first_event_ms is None:
            self.first_event_ms = round((time.monotonic() - self.started) * 1000, 1)

    def note_gaps(self) -> None:
        """The timeline's figures into the record's fields, at the stream's end."""
        timeline = self.timeline
        if timeline.gaps:
            self.gap_p50_ms = _ms(timeline.percentile(0.5))
            self.gap_p99_ms = _ms(timeline.percentile(0.99))
            self.gap_max_ms = _ms(timeline.longest)

    def as_fields(self) -> dict[str, object]:
        """The log line's fields; the LLM figures only where the stream has them."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        del fields["started"], fields["timeline"]
        for name in _ONLY_WHEN_KNOWN:
            if fields[name] is None:
                del fields[name]
        return fields


_ONLY_WHEN_KNOWN: Final = (
    "gap_p50_ms",
    "gap_p99_ms",
    "gap_max_ms",
    "prompt_tokens",
    "completion_tokens",
)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


STREAM_RECORD: Final = web.RequestKey("stream_record", StreamRecord)


def access_log(
    skip: frozenset[str], on_end: Callable[[StreamRecord], None] | None = None
) -> Middleware:
    """The middleware that writes one line per request, except for the paths in ``skip``
    (health checks, which would drown the rest), and hands each record to ``on_end`` (metrics)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in skip:
            return await handler(request)
        record = StreamRecord(request.method, request.path)
        request[STREAM_RECORD] = record
        try:
            response = await handler(request)
        except asyncio.CancelledError:
            record.ended = "client_gone"  # handler_cancellation: the client closed first
            finish(record, 499)
            raise
        except web.HTTPException as exc:
            finish(record, exc.status)
            raise
        if isinstance(response, web.Response) and isinstance(response.body, bytes):
            record.bytes = len(response.body)  # a stream's handler counted its own
        finish(record, response.status)
        return response

    def finish(record: StreamRecord, status: int) -> None:
        record.status = record.status or status
        record.note_gaps()
        record.duration_ms = round((time.monotonic() - record.started) * 1000, 1)
        access.info("stream", extra={"stream": record})
        if on_end is not None:
            on_end(record)

    return middleware


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "msg", ...}`` per line; a stream's fields are top level."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        stream = getattr(record, "stream", None)
        if isinstance(stream, StreamRecord):
            line.update(stream.as_fields())
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line).decode()


_RESET: Final = "\x1b[0m"
_DIM: Final = "\x1b[2m"
_RED: Final = "\x1b[31m"
_GREEN: Final = "\x1b[32m"
_YELLOW: Final = "\x1b[33m"


class DevFormatter(logging.Formatter):
    """``16:20:01 GET /v1/chat 200 ← 200  36 events  first 62 ms  2.31 s  eof``, coloured when
    the output is a terminal; an LLM stream adds its tokens (``26→298 tokens``) and its gaps'
    p50/p99 (``gap ≤100/250 ms``)."""

    def __init__(self, colour: bool) -> None:
        super().__init__()
        self._colour = colour

    def format(self, record: logging.LogRecord) -> str:
        clock = time.strftime("%H:%M:%S", time.localtime(record.created))
        stream = getattr(record, "stream", None)
        if not isinstance(stream, StreamRecord):
            text = f"{clock} {record.levelname.lower():7} {record.name}: {record.getMessage()}"
            if record.exc_info:
                text += "\n" + self.formatException(record.exc_info)
            return text
        ok = stream.ended == "eof"
        status = self._paint(str(stream.status), _status_colour(stream.status))
        if stream.route is None:  # not a stream: the console's files, a 404, the demo upstream
            return (
                f"{self._paint(clock, _DIM)} {stream.method} {stream.path} {status}"
                f"  {_duration(stream.duration_ms)}" + ("" if ok else f"  {stream.ended}")
            )
        upstream = f" ← {stream.upstream_status}" if stream.upstream_status is not None else ""
        first = (
            f"first {stream.first_event_ms:.0f} ms" if stream.first_event_ms is not None else "-"
        )
        llm = ""
        if stream.completion_tokens is not None:
            llm = f"  {stream.prompt_tokens or 0}→{stream.completion_tokens} tokens"
        if stream.gap_p50_ms is not None:
            llm += f"  gap ≤{stream.gap_p50_ms:.0f}/{stream.gap_p99_ms:.0f} ms"
        return (
            f"{self._paint(clock, _DIM)} {stream.method} {stream.path} {status}{upstream}"
            f"  {stream.events} events  {first}{llm}  {_duration(stream.duration_ms)}"
            f"  {self._paint(stream.ended, _GREEN if ok else _RED)}"
        )

    def _paint(self, text: str, colour: str) -> str:
        return f"{colour}{text}{_RESET}" if self._colour else text


def _status_colour(status: int) -> str:
    if status >= 500:
        return _RED
    return _YELLOW if status >= 400 else _GREEN


def _duration(milliseconds: float) -> str:
    return f"{milliseconds:.0f} ms" if milliseconds < 1000 else f"{milliseconds / 1000:.2f} s"


def configure_logging(log_format: str, level: str, stream: IO[str] | None = None) -> None:
    """Root logging for the process: every line in the one format, to stdout."""
    out = stream if stream is not None else sys.stdout
    handler = logging.StreamHandler(out)
    colour = log_format == "dev" and out.isatty()
    handler.setFormatter(JsonFormatter() if log_format == "json" else DevFormatter(colour))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
