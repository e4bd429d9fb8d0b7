"""Upstream lines (or upstream SSE events) to the client's event-stream bytes, per route rules.

Strategy: one :class:`StreamConverter` per client stream holds the little state a stream has (the
line number, the ``sequence`` id) and turns a whole batch of lines into one ``bytes`` so the relay
writes each upstream chunk once. The route's rules come as a plain frozen :class:`EventRules` (the
config model makes one; nothing here imports it) and are read once, in ``__init__``, into
precomputed byte prefixes.

``data: line`` without pointers is the hot path: the upstream bytes go out as they are, with no JSON
parsing. They are still checked: a line that is not UTF-8 is decoded with replacement (the stream is
UTF-8 by definition), and a stray CR inside a line becomes a second ``data:`` line rather than an
event boundary. When a JSON Pointer is configured, each line is parsed with orjson; a line that is
not JSON, or lacks what a pointer needs, becomes an ``error`` event naming its line number, and the
stream goes on. Empty (or all-whitespace) lines are skipped, as NDJSON allows.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson

from .errors import PointerNotFound, StreamError
from .pointer import JsonPointer
from .redaction import redact
from .sse import (
    SSEEvent,
    SSERetry,
    encode_comment,
    encode_data,
    encode_event,
    encode_retry,
    sanitize_id,
    sanitize_name,
)
from .usage import UsageTally

_EVENT_HEAD_CACHE_SIZE: Final = 1024
_CR: Final = 0x0D
_LF: Final = 0x0A

__all__ = ["EventRules", "StreamConverter"]


@dataclass(frozen=True, slots=True, kw_only=True)
class EventRules:
    """How a route's upstream units become events: the ``events:`` options, already validated
    and parsed (``EventsConfig.rules`` makes them, and holds every default and check; the
    meaning of each option is documented there and in docs/configuration.md)."""

    event: str
    event_from: JsonPointer | None
    id: Literal["sequence", "none"] | JsonPointer
    data: Literal["line"] | JsonPointer
    end_event: str | None
    error_event: str
    retry: int | None
    error_from: JsonPointer | None
    complete_when: JsonPointer | None


class _LineError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class StreamConverter:
    __slots__ = (
        "_complete",
        "_complete_when",
        "_data_pointer",
        "_default_event",
        "_end_event",
        "_error_event",
        "_error_from",
        "_event_from",
        "_event_heads",
        "_event_prefix",
        "_id_pointer",
        "_last_sse_id",
        "_line_number",
        "_needs_json",
        "_retry",
        "_secrets",
        "_sequence",
        "_use_sequence",
        "usage",
    )

    def __init__(
        self,
        rules: EventRules,
        *,
        last_event_id: str | None = None,
        secrets: Collection[str] = (),
        usage: UsageTally | None = None,
    ) -> None:
        self.usage = usage
        """Token counts read from the lines, for a route with ``usage``."""
        self._default_event = rules.event
        self._event_prefix = b"" if rules.event == "message" else f"event: {rules.event}\n".encode()
        self._event_from = rules.event_from
        self._event_heads: dict[str, bytes] = {}
        self._use_sequence = rules.id == "sequence"
        self._id_pointer = rules.id if isinstance(rules.id, JsonPointer) else None
        self._data_pointer = rules.data if isinstance(rules.data, JsonPointer) else None
        self._complete_when = rules.complete_when
        self._complete = rules.complete_when is None
        self._error_from = rules.error_from
        # Error events quote upstream text (error_from, a failure's message): never a secret.
        self._secrets = secrets
        # Fixed per route; read on every batch, so decided once here.
        self._needs_json = (
            self._data_pointer is not None
            or self._event_from is not None
            or self._id_pointer is not None
            or self._complete_when is not None
            or self._error_from is not None
        )
        self._end_event = rules.end_event
        self._error_event = rules.error_event
        self._retry = rules.retry
        # A reconnecting client sends the last id it saw; a sequence goes on from there, so ids
        # never run backwards in the browser (its lastEventId would otherwise repeat).
        self._sequence = _sequence_after(last_event_id)
        self._line_number = 0
        self._last_sse_id = ""

    @property
    def needs_json(self) -> bool:
        return self._needs_json

    @property
    def complete(self) -> bool:
        """False while a ``complete_when`` route has not yet seen its terminal line."""
        return self._complete

    @property
    def sequence(self) -> int:
        """The id of the last event sent (in ``sequence`` mode: its number)."""
        return self._sequence

    def start(self) -> bytes:
        """What the stream opens with: the ``retry`` the route asks for, if any."""
        return encode_retry(self._retry) if self._retry is not None else b""

    def framed_lines(self, lines: list[bytes]) -> bytes:
        """:meth:`lines` for lines from :class:`LineFramer` (so none holds an LF).

        The common batch (every line ASCII, no CR, none empty or starting with whitespace) is
        checked and encoded with C-level calls; anything else takes the line-by-line path.
        """
        if self.usage is not None:
            self.usage.scan(lines)
        if not lines or self.needs_json:
            return self._encode_lines(lines)
        # min() finds an empty line or one that starts with a space or control byte (all sort
        # below "!"), which might be blank; JSON never starts that way.
        if min(lines)[:1] <= b" ":
            return self._encode_lines(lines)
        blob = b"".join(lines)
        if not blob.isascii() or _CR in blob:
            return self._encode_lines(lines)
        count = len(lines)
        prefix = self._event_prefix
        if self._use_sequence:
            first = self._sequence + 1
            out = b"".join(
                [
                    b"id: %d\n%sdata: %s\n\n" % (number, prefix, line)
                    for number, line in zip(range(first, first + count), lines, strict=True)
                ]
            )
        else:
            head = prefix + b"data: "
            out = head + (b"\n\n" + head).join(lines) + b"\n\n"
        self._sequence += count
        self._line_number += count
        return out

    def lines(self, lines: list[bytes]) -> bytes:
        """Every line of a batch as encoded events, in order, as one buffer."""
        if self.usage is not None:
            self.usage.scan(lines)
        return self._encode_lines(lines)

    def _encode_lines(self, lines: list[bytes]) -> bytes:
        if not lines:
            return b""
        if self.needs_json:
            return self._json_lines(lines)
        # The hot path: locals instead of attributes, one %-format (one allocation) per event.
        out: list[bytes] = []
        append = out.append
        sequence = self._sequence
        use_sequence = self._use_sequence
        prefix = self._event_prefix
        for line in lines:
            if not line or line.isspace():
                continue
            if not line.isascii():
                line = _as_utf8(line)
            sequence += 1
            # An int needle is a memchr; a bytes needle goes the slow way (10x on short lines).
            if _CR in line or _LF in line:  # LF only in a whole application/json document
                head = b"id: %d\n%s" % (sequence, prefix) if use_sequence else prefix
                append(head + encode_data(line) + b"\n")
            elif use_sequence:
                append(b"id: %d\n%sdata: %s\n\n" % (sequence, prefix, line))
            else:
                append(b"%sdata: %s\n\n" % (prefix, line))
        self._sequence = sequence
        self._line_number += len(lines)
        return b"".join(out)

    def sse(self, items: list[SSEEvent | SSERetry]) -> bytes:
        """Events from an upstream that already speaks SSE, re-encoded so framing stays ours."""
        out = []
        if self.usage is not None:
            self.usage.scan([item.data.encode() for item in items if isinstance(item, SSEEvent)])
        for item in items:
            if isinstance(item, SSERetry):
                out.append(encode_retry(item.milliseconds))
                continue
            event_id = None
            if item.id != self._last_sse_id:
                event_id = self._last_sse_id = item.id
            self._sequence += 1
            out.append(encode_event(item.data, event=item.event, event_id=event_id))
            if not self._complete:
                # Data that is not JSON (OpenAI's "[DONE]") is not the terminal line.
                with contextlib.suppress(orjson.JSONDecodeError):
                    self._check_complete(orjson.loads(item.data))
        return b"".join(out)

    def _check_complete(self, document: Any) -> None:
        assert self._complete_when is not None
        with contextlib.suppress(PointerNotFound):
            self._complete = self._complete_when.resolve(document) is True

    def error(self, code: str, message: str, **details: Any) -> bytes:
        """An error event: JSON data with a stable ``code`` and a readable ``message``."""
        message = redact(message, self._secrets)
        payload = orjson.dumps({"code": code, "message": message, **details})
        return encode_event(payload, event=self._error_event)

    def end_event(self) -> bytes:
        """What the upstream's EOF becomes: the event that tells the client the stream is complete
        (so it closes, not reconnects). A stream cut short of its terminal line raises
        ``incomplete`` instead: a truncated answer must not pass for a whole one."""
        if not self._complete:
            assert self._complete_when is not None
            raise StreamError(
                "the upstream stream ended without its terminal line "
                f"({self._complete_when.text} true)",
                code="incomplete",
            )
        return encode_event(b"", event=self._end_event) if self._end_event else b""

    @staticmethod
    def heartbeat() -> bytes:
        return encode_comment("ping")

    def _json_lines(self, lines: list[bytes]) -> bytes:
        """Pointer mode: each line parsed once; a bad line becomes an error event in its place."""
        out: list[bytes] = []
        append = out.append
        data_pointer = self._data_pointer
        use_sequence = self._use_sequence
        number = self._line_number
        for line in lines:
            number += 1
            if not line or line.isspace():
                continue
            try:
                document = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                append(
                    self._line_error(
                        "invalid_json", f"line {number} is not valid JSON: {exc}", number
                    )
                )
                continue
            if not self._complete:
                self._check_complete(document)
            if self._error_from is not None:
                failure = self._upstream_error(document)
                if failure is not None:
                    append(self._line_error("upstream_error", failure, number))
                    continue
            try:
                if data_pointer is None:
                    data = line  # orjson accepted it, so it is UTF-8 already
                else:
                    value = data_pointer.resolve(document)
                    data = value.encode() if type(value) is str else orjson.dumps(value)
                event_head = self._event_head(document, number)
                id_head = b"" if use_sequence else self._id_head(document, number)
            except PointerNotFound as exc:
                append(self._line_error("pointer_not_found", f"line {number}: {exc}", number))
                continue
            except _LineError as exc:
                append(self._line_error(exc.code, str(exc), number))
                continue
            self._sequence += 1
            if use_sequence:
                id_head = b"id: %d\n" % self._sequence
            if not data or _CR in data or _LF in data:
                append(id_head + event_head + encode_data(data) + b"\n")
            else:
                append(b"%s%sdata: %s\n\n" % (id_head, event_head, data))
        self._line_number = number
        return b"".join(out)

    def _line_error(self, code: str, message: str, number: int) -> bytes:
        return self.error(code, message, line=number)

    def _event_head(self, document: Any, number: int) -> bytes:
        """The ``event:`` line for a document (cached per name: streams reuse a few names)."""
        if self._event_from is None:
            return self._event_prefix
        try:
            value = self._event_from.resolve(document)
        except PointerNotFound:
            return self._event_prefix
        if type(value) is not str:
            raise _LineError(
                "invalid_event_name", f"line {number}: {self._event_from.text} is not a string"
            )
        head = self._event_heads.get(value)
        if head is None:
            name = sanitize_name(value) or self._default_event
            head = b"" if name == "message" else b"event: %s\n" % name.encode()
            if len(self._event_heads) < _EVENT_HEAD_CACHE_SIZE:
                self._event_heads[value] = head
        return head

    def _upstream_error(self, document: Any) -> str | None:
        assert self._error_from is not None
        try:
            value = self._error_from.resolve(document)
        except PointerNotFound:
            return None
        if value is None:
            return None
        return value if type(value) is str else orjson.dumps(value).decode()

    def _id_head(self, document: Any, number: int) -> bytes:
        """The ``id:`` line; none when the line lacks the member (the client keeps its last id:
        an id is optional in SSE, and a Kubernetes ERROR event has no resourceVersion)."""
        if self._id_pointer is None:
            return b""
        try:
            value = self._id_pointer.resolve(document)
        except PointerNotFound:
            return b""
        if type(value) is str or type(value) is int:
            return b"id: %s\n" % sanitize_id(str(value)).encode()
        raise _LineError(
            "invalid_event_id", f"line {number}: {self._id_pointer.text} is not a string or integer"
        )


def _sequence_after(last_event_id: str | None) -> int:
    if last_event_id and last_event_id.isascii() and last_event_id.isdigit():
        return int(last_event_id)
    return 0


def _as_utf8(line: bytes) -> bytes:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return line.decode("utf-8", "replace").encode("utf-8")
    return line
