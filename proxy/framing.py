"""Line framing for NDJSON, JSON Lines and JSON text sequences, on bytes.

Strategy: the framer never decodes. ``feed()`` appends a chunk to at most one pending partial line,
splits on LF (in C, via ``bytes.split``) and returns every complete line with one trailing CR
dropped. Because only LF ends a line, a CRLF whose halves land in different chunks is still one
line end, and a multi-byte UTF-8 character cut by a chunk boundary is whole again before anyone
decodes it. ``flush()`` at end of input returns the last, unterminated line if there is one.

Every buffer has a bound: the pending partial line may never exceed ``max_line_bytes`` (plus one CR
whose LF may still come), so a line that never ends raises :class:`LineTooLong` as soon as it is
too long instead of growing without limit. That call still returns the lines completed before the
long one; the error is kept (``failure``) and raised by the next call, so it carries no lines.

Line numbers count every physical line from 1, empty ones included, so that an error can point at
the exact line of the upstream body.
"""

from __future__ import annotations

from typing import Final

from .errors import LineTooLong

__all__ = ["LineFramer"]

_UTF8_BOM: Final = b"\xef\xbb\xbf"
_RECORD_SEPARATOR: Final = b"\x1e"
_CR: Final = 0x0D


class LineFramer:
    """Incremental splitter of a byte stream into lines.

    ``json_seq=True`` frames RFC 7464 JSON text sequences the tolerant way: each line's leading
    ``0x1E`` record separator is removed.
    """

    __slots__ = (
        "_at_start",
        "_failure",
        "_json_seq",
        "_lines_seen",
        "_max_line_bytes",
        "_pending",
    )

    def __init__(self, max_line_bytes: int, *, json_seq: bool = False) -> None:
        if max_line_bytes < 1:
            raise ValueError("max_line_bytes must be at least 1")
        self._max_line_bytes = max_line_bytes
        self._json_seq = json_seq
        self._pending = bytearray()
        self._lines_seen = 0
        self._at_start = True
        self._failure: LineTooLong | None = None

    @property
    def failure(self) -> LineTooLong | None:
        """The line that was too long, once one was: every later call raises it."""
        return self._failure

    @property
    def lines_seen(self) -> int:
        """How many complete lines have been returned so far."""
        return self._lines_seen

    @property
    def pending_bytes(self) -> int:
        """Bytes held for a line that has not ended yet."""
        return len(self._pending)

    def feed(self, data: bytes) -> list[bytes]:
        """Take the next chunk of input; return the lines it completes, in order."""
        if self._failure is not None:
            raise self._failure
        if not data:
            return []
        pieces = data.split(b"\n")
        tail = pieces.pop()
        if pieces:
            # int needles are a memchr; a CR may also wait at the end of the pending bytes.
            may_have_cr = _CR in data or _CR in self._pending
            if self._pending:
                self._pending += pieces[0]
                pieces[0] = bytes(self._pending)
                self._pending.clear()
            lines = self._finish(pieces, may_have_cr)
        else:
            lines = []
        if tail and self._failure is None:
            self._pending += tail
            self._check_pending()
        return lines

    def flush(self) -> list[bytes]:
        """End of input: return the unterminated last line, if any."""
        if self._failure is not None:
            raise self._failure
        if not self._pending:
            return []
        last = bytes(self._pending)
        self._pending.clear()
        return self._finish([last], may_have_cr=True)

    def _finish(self, lines: list[bytes], may_have_cr: bool) -> list[bytes]:
        if self._at_start:
            self._at_start = False
            if lines[0].startswith(_UTF8_BOM):
                lines[0] = lines[0][len(_UTF8_BOM) :]
        limit = self._max_line_bytes
        # The common case, checked in C: no CR to drop, no RS to strip, every line within bounds.
        if not may_have_cr and not self._json_seq and max(map(len, lines)) <= limit:
            self._lines_seen += len(lines)
            return lines
        for index, line in enumerate(lines):
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) > limit:
                self._fail(LineTooLong(self._lines_seen + index + 1, limit))
                self._lines_seen += index  # the completed ones count, as on every other path
                return lines[:index]
            if self._json_seq and line.startswith(_RECORD_SEPARATOR):
                line = line[1:]
            lines[index] = line
        self._lines_seen += len(lines)
        return lines

    def _check_pending(self) -> None:
        size = len(self._pending)
        if self._at_start and _UTF8_BOM.startswith(bytes(self._pending[:3])):
            # A BOM, whole or so far in part, is dropped when the line completes: not content.
            size -= min(len(_UTF8_BOM), size)
        limit = self._max_line_bytes
        # One byte of slack for a "\r" whose "\n" is still on its way.
        if size > limit + 1 or (size == limit + 1 and self._pending[-1] != 0x0D):
            self._fail(LineTooLong(self._lines_seen + 1, limit))

    def _fail(self, error: LineTooLong) -> None:
        self._failure = error
        self._pending.clear()  # nothing more is read: the bound holds from here on
