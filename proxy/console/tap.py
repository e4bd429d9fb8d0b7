"""The console's tap: each raw upstream unit (a line, an upstream SSE event, a JSON document) sent
just before the events it became, as an ``upstream-line`` event.

Strategy: :class:`TappedConverter` is a :class:`StreamConverter` that converts one unit at a time
and puts the tap event in front, so every decoder (lines, SSE, document) taps without knowing it.
The tap event's data says which event names the unit became: the console's ``EventSource`` adds a
listener for a name it has not seen before the event itself is dispatched (events are dispatched in
order), so a native EventSource shows every event, whatever ``event_from`` names it.
"""

from __future__ import annotations

from typing import Final

import orjson

from proxy.convert import StreamConverter
from proxy.sse import SSEEvent, SSEParser, SSERetry, encode_event

__all__ = ["CONSOLE_TAP_PARAM", "TAP_EVENT", "TappedConverter"]

CONSOLE_TAP_PARAM: Final = "_proxy_tap"
"""With the console on, a stream asked with this query parameter also carries each raw upstream
line as an ``upstream-line`` event (the console shows it beside the event it became)."""
TAP_EVENT: Final = "upstream-line"
RAW_TEXT_LIMIT: Final = 8 * 1024
"""Raw text shown per unit; the tap says the full size, the console is not a hex dump."""


class TappedConverter(StreamConverter):
    __slots__ = ()

    def framed_lines(self, lines: list[bytes]) -> bytes:
        return self.lines(lines)

    def lines(self, lines: list[bytes]) -> bytes:
        out = []
        for line in lines:
            out.append(_tapped(line, super().lines([line])))
        return b"".join(out)

    def sse(self, items: list[SSEEvent | SSERetry]) -> bytes:
        out = []
        for item in items:
            events = super().sse([item])
            out.append(events if isinstance(item, SSERetry) else _tapped(_as_text(item), events))
        return b"".join(out)


def _tapped(raw: bytes, events: bytes) -> bytes:
    names = [e.event for e in SSEParser().feed(events) if isinstance(e, SSEEvent)]
    text = raw[:RAW_TEXT_LIMIT].decode("utf-8", "replace")
    payload = orjson.dumps(
        {"raw": text, "bytes": len(raw), "truncated": len(raw) > RAW_TEXT_LIMIT, "events": names}
    )
    return encode_event(payload, event=TAP_EVENT) + events


def _as_text(event: SSEEvent) -> bytes:
    """An upstream SSE event as it would be written (the fields that made it)."""
    fields = [] if event.event == "message" else [f"event: {event.event}"]
    if event.id:
        fields.append(f"id: {event.id}")
    fields.extend(f"data: {line}" for line in event.data.split("\n"))
    return "\n".join(fields).encode()
