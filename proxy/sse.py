"""Server-Sent Events: an encoder and an incremental parser (WHATWG HTML, "Server-sent events").

Encoding strategy: nothing from upstream may forge framing. ``event`` and ``id`` values lose every
CR and LF (and ``id`` its NULs, which would make browsers ignore it); a ``data`` value is split on
CRLF, CR and LF into one ``data:`` line per piece, which a client joins back with ``\\n``. Output is
bytes, ready for the socket.

Parsing strategy: h11-style, no I/O. ``feed(bytes)`` returns the events (and ``retry`` changes) the
bytes complete; ``flush()`` at end of input. Lines are cut on bytes (CRLF, LF or a lone CR; a CR at
the end of a chunk waits to see whether an LF follows), then each line is decoded as UTF-8 with
replacement, as browsers do. Every buffer has a bound: a line, or an event's accumulated data,
longer than ``max_bytes`` is a :class:`LineTooLong`: that call returns what was complete before it,
and the next call raises it (``failure``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from .errors import LineTooLong

__all__ = [
    "SSEEvent",
    "SSEParser",
    "SSERetry",
    "encode_comment",
    "encode_event",
    "encode_retry",
    "sanitize_id",
    "sanitize_name",
]

_LINE_BREAKS_TEXT: Final = re.compile(r"\r\n|\r|\n")
_NAME_FORBIDDEN: Final = re.compile(r"[\r\n]")
_ID_FORBIDDEN: Final = re.compile(r"[\r\n\x00]")


def sanitize_name(name: str) -> str:
    """An event name with every CR and LF removed."""
    # The membership tests are C-speed and almost always false; the regex runs only when needed.
    if "\r" in name or "\n" in name:
        return _NAME_FORBIDDEN.sub("", name)
    return name


def sanitize_id(event_id: str) -> str:
    """An event id with CR, LF and NUL removed (browsers ignore an id that contains NUL)."""
    if "\r" in event_id or "\n" in event_id or "\x00" in event_id:
        return _ID_FORBIDDEN.sub("", event_id)
    return event_id


def encode_data(data: bytes) -> bytes:
    """``data:`` lines for UTF-8 ``data``, one per line of it; ``data:`` alone when it is empty."""
    if not data:
        return b"data:\n"
    if 0x0D in data or 0x0A in data:  # int needles: memchr
        # bytes.splitlines() splits on exactly CRLF, CR and LF (unlike str's); it drops the
        # empty piece after a final line break, which must stay (a trailing newline in the data).
        pieces = data.splitlines()
        if data[-1] in b"\r\n":
            pieces.append(b"")
        return b"data: " + b"\ndata: ".join(pieces) + b"\n"
    return b"data: " + data + b"\n"


def encode_event(
    data: str | bytes, *, event: str | None = None, event_id: str | None = None
) -> bytes:
    """One complete event. ``data`` as bytes must be UTF-8 already.

    The ``message`` type is the default in every client, so it is not written out.
    """
    head = b"" if event_id is None else b"id: %s\n" % sanitize_id(event_id).encode()
    if event is not None and event != "message":
        head += b"event: %s\n" % sanitize_name(event).encode()
    payload = data.encode() if isinstance(data, str) else data
    return head + encode_data(payload) + b"\n"


def encode_comment(text: str) -> bytes:
    """A comment block (clients ignore it; proxies see traffic). Line breaks become spaces."""
    return b": " + _LINE_BREAKS_TEXT.sub(" ", text).encode() + b"\n\n"


def encode_retry(milliseconds: int) -> bytes:
    """A block that only sets the client's reconnection delay."""
    return b"retry: %d\n\n" % milliseconds


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """A dispatched event as a browser sees it: ``id`` is the last event id in force, or ""."""

    data: str
    event: str = "message"
    id: str = ""


@dataclass(frozen=True, slots=True)
class SSERetry:
    """A valid ``retry:`` field: the client's new reconnection delay."""

    milliseconds: int


_BOM: Final = b"\xef\xbb\xbf"


class SSEParser:
    """Incremental ``text/event-stream`` parser that agrees with the browser's EventSource."""

    __slots__ = (
        "_at_start",
        "_bom_glue",
        "_data",
        "_data_bytes",
        "_event_type",
        "_failure",
        "_id_buffer",
        "_last_event_id",
        "_max_bytes",
        "_pending",
        "_skip_lf",
        "_started_event",
    )

    def __init__(self, max_bytes: int = 1 << 20) -> None:
        self._max_bytes = max_bytes
        self._pending = bytearray()
        self._skip_lf = False
        self._at_start = True
        self._bom_glue = False
        self._data: list[str] = []
        self._data_bytes = 0
        self._event_type = ""
        self._id_buffer = ""
        self._last_event_id = ""
        self._started_event = False
        self._failure: LineTooLong | None = None

    @property
    def failure(self) -> LineTooLong | None:
        """The line or event that was too long, once one was: every later call raises it."""
        return self._failure

    @property
    def last_event_id(self) -> str:
        """The id a reconnecting browser would send: the one in force at the last dispatch."""
        return self._last_event_id

    @property
    def in_event(self) -> bool:
        """True while a block has fields but no blank line has ended it yet."""
        return self._started_event or bool(self._pending)

    def feed(self, data: bytes) -> list[SSEEvent | SSERetry]:
        """Take the next chunk of the stream; return what it completes, in order."""
        if self._failure is not None:
            raise self._failure
        if not data:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if data[:1] == b"\n":
                data = data[1:]
        buffer = self._pending
        buffer += data
        if self._at_start:
            if len(buffer) < len(_BOM) and _BOM.startswith(bytes(buffer)):
                return []  # might still be a BOM; wait for more
            self._at_start = False
            if buffer.startswith(_BOM):
                del buffer[: len(_BOM)]
                self._bom_glue = True
        out: list[SSEEvent | SSERetry] = []
        try:
            self._scan(buffer, out)
        except LineTooLong as exc:
            self._failure = exc
            self._pending.clear()
        return out

    def _scan(self, buffer: bytearray, out: list[SSEEvent | SSERetry]) -> None:
        start = 0
        end = len(buffer)
        # Chromium (Blink's EventSourceParser) does not look for a line break in the byte right
        # after a leading BOM: a CR or LF there starts the first line's content. The spec says
        # otherwise; browsers are what clients see, so we agree with Chromium.
        first = 1 if self._bom_glue else 0
        # Each find() result is kept until the scan passes it, so a chunk of many LF-only lines
        # is not rescanned for a CR that is not there.
        cr = buffer.find(b"\r", first)
        lf = buffer.find(b"\n", first)
        while True:
            if 0 <= cr < start:
                cr = buffer.find(b"\r", start)
            if 0 <= lf < start:
                lf = buffer.find(b"\n", start)
            if cr < 0 and lf < 0:
                break
            if cr < 0 or 0 <= lf < cr:
                self._line(bytes(buffer[start:lf]), out)
                start = lf + 1
            elif cr + 1 < end:
                self._line(bytes(buffer[start:cr]), out)
                start = cr + 2 if buffer[cr + 1] == 0x0A else cr + 1
            else:
                self._line(bytes(buffer[start:cr]), out)
                start = cr + 1
                self._skip_lf = True
        if start:
            self._bom_glue = False  # the first line is cut: the quirk is spent
        del buffer[:start]
        if len(buffer) > self._max_bytes:
            raise LineTooLong(None, self._max_bytes)

    def flush(self) -> list[SSEEvent | SSERetry]:
        """End of input. As in browsers, an event not ended by a blank line is not dispatched;
        ``in_event`` tells the caller that one was cut off."""
        if self._failure is not None:
            raise self._failure
        self._pending.clear()
        self._skip_lf = False
        return []

    def _line(self, raw: bytes, out: list[SSEEvent | SSERetry]) -> None:
        if len(raw) > self._max_bytes:
            raise LineTooLong(None, self._max_bytes)
        if not raw:
            self._dispatch(out)
            return
        line = raw.decode("utf-8", "replace")
        if line[0] == ":":
            return
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._started_event = True
            self._data_bytes += len(raw)
            if self._data_bytes > self._max_bytes:
                raise LineTooLong(None, self._max_bytes)
            self._data.append(value)
        elif name == "event":
            self._started_event = True
            self._event_type = value
        elif name == "id":
            self._started_event = True
            if "\x00" not in value:
                self._id_buffer = value
        elif name == "retry" and value.isascii() and value.isdigit():
            out.append(SSERetry(int(value)))
        # Any other field name is ignored, as the spec says.

    def _dispatch(self, out: list[SSEEvent | SSERetry]) -> None:
        # As the spec orders it: the id buffer becomes the last event ID even when no event is
        # dispatched for lack of data.
        self._last_event_id = self._id_buffer
        self._started_event = False
        data, self._data, self._data_bytes = self._data, [], 0
        event_type, self._event_type = self._event_type, ""
        if not data:
            return
        out.append(SSEEvent("\n".join(data), event_type or "message", self._last_event_id))
