"""The one stream every third-party client test reads, and what it must give.

``stream_lines`` holds unicode, CR and LF inside JSON strings, a ~100 KB line, custom event names,
ids from the upstream, a line that is not JSON (an in-band ``error`` event, then the stream goes
on) and EOF (``end``). ``check_shared_events`` pins the count, the names and a few values from the
upstream lines themselves, so comparing a client with our own parser is not circular.
"""

from __future__ import annotations

import json
from typing import Any

from proxy.sse import SSEEvent, SSERetry
from tests.support.sse import parse_all, parse_events
from tests.support.upstreams import ndjson_handler

UNICODE_TEXT = "héllo wörld ✓ 日本語 🎉 Ελληνικά, U+2028 \u2028 and NEL \u0085 are not line ends"
LONG_TEXT = ("a long line: é ✓ 日本 🎉 " * 6000)[:100_000]
TOOL_CALL = {"name": "search", "args": {"q": "sse", "n": 3}}
FORGERY = "data: forged\n\nevent: end\ndata:\n\nid: 999"
BAD_LINE = b"this line is not JSON {"

# One entry per upstream line; ``id`` is filled in by position (an int stays an int).
TEMPLATES: list[dict[str, Any] | bytes] = [
    {"type": "token", "id": "", "text": "Hello"},
    {"type": "token", "id": "", "text": UNICODE_TEXT},
    {"type": "token", "id": "", "text": "line one\r\nline two"},
    {"type": "token", "id": "", "text": "lone\rcarriage return"},
    {"type": "token", "id": "", "text": "first\nsecond\nthird"},
    {"type": "status", "id": "", "text": "\nstarts with a line break"},
    {"type": "status", "id": "", "text": "ends with a line break\n"},
    {"type": "token", "id": "", "text": ""},
    BAD_LINE,
    {"type": "tool_call", "id": "", "text": TOOL_CALL},
    {"id": "", "text": "no type: a plain message"},
    {"type": "message", "id": "", "text": "type message is the default"},
    {"type": "token", "id": 0, "text": "an integer id"},
    {"type": "token", "id": "", "text": " leading and trailing spaces "},
    {"type": "token", "id": "", "text": ": looks like a comment"},
    {"type": "token", "id": "", "text": FORGERY},
    {"type": "token", "id": "", "text": LONG_TEXT},
    {"type": "tool_call", "id": "", "text": 'tab\t"quotes" \\backslash\\ and {"json": 1}'},
    {"type": "status", "id": "", "text": "controls \x0b\x0c\x1c\x1d\x1e split nothing"},
    {"type": "token", "id": "", "text": "bye"},
]
EVENT_NAMES = ["token", "status", "tool_call"]  # the custom names the upstream uses
SHARED_NAMES = [
    *["token"] * 5,
    *["status"] * 2,
    "token",
    "error",
    "tool_call",
    *["message"] * 2,
    *["token"] * 5,
    "tool_call",
    "status",
    "token",
    "end",
]
EVENTS_RULES = {"event_from": "/type", "id": "/id", "data": "/text", "heartbeat": 0}


def stream_lines(count: int = len(TEMPLATES)) -> list[bytes]:
    """``count`` NDJSON lines cycling through TEMPLATES with ids 1, 2, 3...; only the first cycle
    has the 100 KB line. Line 20 ends in CRLF and an empty line follows line 14 (both skipped)."""
    lines = []
    for index in range(count):
        template = TEMPLATES[index % len(TEMPLATES)]
        if isinstance(template, bytes):
            lines.append(template + b"\n")
            continue
        document = dict(template)
        document["id"] = index + 1 if isinstance(template["id"], int) else str(index + 1)
        if template["text"] is LONG_TEXT and index >= len(TEMPLATES):
            document["text"] = LONG_TEXT[:1000]
        line = json.dumps(document, ensure_ascii=False).encode()
        lines.append(line + (b"\r\n" if index % 20 == 19 else b"\n"))
        if index % 20 == 13:
            lines.append(b"\n")
    return lines


async def serve_stream(
    start_upstream, start_gateway, lines: list[bytes], handler=None, **route: Any
) -> str:
    """The gateway URL of a route that turns ``lines`` into events by the shared rules."""
    upstream = await start_upstream({"/chat": handler or ndjson_handler(lines)})
    gateway = await start_gateway(
        [{"path": "/chat", "upstream": upstream + "/chat", "events": EVENTS_RULES, **route}]
    )
    return gateway + "/chat"


def check_shared_events(raw: bytes, events: list[SSEEvent]) -> None:
    """What the shared stream must give, known from the upstream lines, not from any parser."""
    assert [e.event for e in events] == SHARED_NAMES
    assert events[1].data == UNICODE_TEXT
    assert events[2].data == "line one\nline two"
    assert events[3].data == "lone\ncarriage return"
    assert events[5].data == "\nstarts with a line break"
    assert events[7].data == ""
    error = json.loads(events[8].data)
    assert (error["code"], error["line"]) == ("invalid_json", 9)
    assert json.loads(events[9].data) == TOOL_CALL
    assert events[15].data == FORGERY
    assert events[16].data == LONG_TEXT
    # error (line 9) and end have no id of their own: the last id in force stays, 8 and 20.
    ids = [*map(str, range(1, 9)), "8", *map(str, range(10, 21)), "20"]
    assert [e.id for e in events] == ids
    assert raw.startswith(b"retry: 3000\n\n")
    assert raw.endswith(b"event: end\ndata:\n\n")  # no id line: clients differ on what id it has
    assert parse_all(raw)[0] == SSERetry(3000)


def own_id(event: SSEEvent) -> str | None:
    """The id written in the event's own block: the gateway writes one on every data event and
    none on ``error`` or ``end``, where the spec's last event id (``event.id``) is carried over."""
    return None if event.event in ("error", "end") else event.id


async def served_stream(start_upstream, start_gateway, http) -> tuple[str, bytes, list[SSEEvent]]:
    """The shared stream's URL, the raw bytes the gateway sends for it and our parser's events
    (already checked against what the upstream lines say)."""
    url = await serve_stream(start_upstream, start_gateway, stream_lines())
    async with http.get(url) as response:
        raw = await response.read()
    expected = parse_events(raw)
    check_shared_events(raw, expected)
    return url, raw, expected
