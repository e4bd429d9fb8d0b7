"""Upstream body bytes to client event-stream bytes, one decoder per framing.

Strategy: a decoder pairs a framer or parser (bytes to units) with the stream's
:class:`~proxy.convert.StreamConverter` (units to encoded events). ``feed(chunk)`` returns the
events the chunk completes; ``flush()`` at the upstream's EOF returns the rest and the end event.
Like the framer under it, a decoder that meets a :class:`~proxy.errors.StreamError` returns what
was complete before it, keeps it as ``failure`` and raises it on the next call: the caller sends
what it got, then looks at ``failure``. The decoder for a framing comes from :data:`DECODERS`,
a table keyed by framing (h11 picks its body readers the same way).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Protocol

import orjson

from .convert import StreamConverter
from .errors import LineTooLong, StreamError
from .framing import LineFramer
from .sse import SSEParser

__all__ = ["DECODERS", "BodyDecoder", "LinesOrDocument", "body_decoder"]

_UTF8_BOM: Final = b"\xef\xbb\xbf"


class BodyDecoder(Protocol):
    @property
    def failure(self) -> StreamError | None: ...

    @property
    def holding_document(self) -> bool:
        """Bytes are held for a document whose kind ``framing: auto`` guessed (see
        :class:`LinesOrDocument`)."""
        ...

    def feed(self, chunk: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


class _Decoder:
    """What every decoder shares: the converter, and the failure that ends the stream."""

    __slots__ = ("_converter", "failure")

    def __init__(self, converter: StreamConverter) -> None:
        self._converter = converter
        self.failure: StreamError | None = None

    @property
    def holding_document(self) -> bool:
        return False

    def _raise_failure(self) -> None:
        if self.failure is not None:
            raise self.failure

    def _end_event(self) -> bytes:
        try:
            return self._converter.end_event()
        except StreamError as exc:
            self.failure = exc
            return b""


class LinesToEvents(_Decoder):
    """NDJSON, JSON Lines or JSON text sequences: one event per line."""

    __slots__ = ("_framer",)

    def __init__(self, converter: StreamConverter, max_line_bytes: int, *, json_seq: bool = False):
        super().__init__(converter)
        self._framer = LineFramer(max_line_bytes, json_seq=json_seq)

    def feed(self, chunk: bytes) -> bytes:
        self._raise_failure()
        output = self._converter.framed_lines(self._framer.feed(chunk))
        self.failure = self._framer.failure
        return output

    def flush(self) -> bytes:
        self._raise_failure()
        output = self._converter.framed_lines(self._framer.flush())
        self.failure = self._framer.failure
        return output if self.failure else output + self._end_event()


class EventsToEvents(_Decoder):
    """An upstream that already speaks SSE: parsed, bounded, and re-encoded."""

    __slots__ = ("_parser",)

    def __init__(self, converter: StreamConverter, max_line_bytes: int):
        super().__init__(converter)
        self._parser = SSEParser(max_line_bytes)

    def feed(self, chunk: bytes) -> bytes:
        self._raise_failure()
        output = self._converter.sse(self._parser.feed(chunk))
        self.failure = self._parser.failure
        return output

    def flush(self) -> bytes:
        self._raise_failure()
        cut_off = self._parser.in_event
        self._parser.flush()
        if cut_off:
            self.failure = StreamError(
                "the upstream event stream ended in the middle of an event", code="incomplete_event"
            )
            return b""
        return self._end_event()


class DocumentToEvent(_Decoder):
    """A plain ``application/json`` answer: the whole body, bounded, becomes one event."""

    __slots__ = ("_body", "_max_bytes")

    def __init__(self, converter: StreamConverter, max_bytes: int):
        super().__init__(converter)
        self._max_bytes = max_bytes
        self._body = bytearray()

    def feed(self, chunk: bytes) -> bytes:
        self._raise_failure()
        self._body += chunk
        if len(self._body) > self._max_bytes:
            self.failure = LineTooLong(1, self._max_bytes)
            self._body.clear()
        return b""

    def flush(self) -> bytes:
        self._raise_failure()
        return self._converter.lines([bytes(self._body)]) + self._end_event()


class LinesOrDocument(_Decoder):
    """``application/json`` under ``framing: auto``: one document, or NDJSON under a JSON label
    (Kubernetes watch and etcd label theirs so). The bytes decide, at the first line that is not
    blank: if it is a whole JSON value, the body is NDJSON from there on (a document is one
    value, so a body with more after it is no document); if it is not (the ``{`` of a
    pretty-printed document), the body is one document, read to its end. A single-line document
    is the same event either way, so deciding at its line break changes nothing for it, and a
    watch's first line is an event at once instead of never."""

    __slots__ = ("_head", "_max_line_bytes", "_then")

    def __init__(self, converter: StreamConverter, max_line_bytes: int):
        super().__init__(converter)
        self._max_line_bytes = max_line_bytes
        self._head = bytearray()
        self._then: BodyDecoder | None = None

    @property
    def holding_document(self) -> bool:
        """Bytes are held for a document (or for the first line, which decides): a stream the
        label does not say is NDJSON, seen as one document that never ends, would show here."""
        return self._then is None or isinstance(self._then, DocumentToEvent)

    def feed(self, chunk: bytes) -> bytes:
        self._raise_failure()
        if self._then is not None:
            return self._forward(self._then.feed(chunk))
        self._head += chunk
        decided = _first_line_is_a_value(self._head) if b"\n" in chunk else None
        if decided is None:
            # Blank lines do not count against the bound: whitespace before a value is no line.
            limit = self._max_line_bytes
            if len(self._head) > limit and len(self._head.lstrip()) > limit:
                self.failure = LineTooLong(1, self._max_line_bytes)
                self._head.clear()
            return b""
        return self._start(LinesToEvents if decided else DocumentToEvent)

    def flush(self) -> bytes:
        self._raise_failure()
        if self._then is None:
            self._start(DocumentToEvent)  # no line break at all: one document
        assert self._then is not None
        return self._forward(self._then.flush())

    def _start(self, decoder: Callable[[StreamConverter, int], BodyDecoder]) -> bytes:
        self._then = decoder(self._converter, self._max_line_bytes)
        head = bytes(self._head)
        self._head.clear()
        return self._forward(self._then.feed(head)) if head else b""

    def _forward(self, output: bytes) -> bytes:
        assert self._then is not None
        self.failure = self._then.failure
        return output


def _first_line_is_a_value(head: bytes | bytearray) -> bool | None:
    """Whether the first non-blank line of ``head`` is a whole JSON value; None until one has
    ended."""
    start = 0
    while (end := head.find(b"\n", start)) >= 0:
        line = bytes(head[start:end]).removeprefix(_UTF8_BOM).strip()
        if line:
            try:
                orjson.loads(line)
            except orjson.JSONDecodeError:
                return False
            return True
        start = end + 1
    return None


DecoderFactory = Callable[[StreamConverter, int], BodyDecoder]

DECODERS: Final[dict[str, DecoderFactory]] = {
    "ndjson": LinesToEvents,
    "json-seq": lambda converter, limit: LinesToEvents(converter, limit, json_seq=True),
    "sse": EventsToEvents,
    "json": DocumentToEvent,
    "json-or-ndjson": LinesOrDocument,
}
"""Framing (as :func:`proxy.upstream.choose_framing` names it) to its decoder."""


def body_decoder(framing: str, converter: StreamConverter, max_line_bytes: int) -> BodyDecoder:
    return DECODERS[framing](converter, max_line_bytes)
