"""Real Node SSE clients read the gateway's stream: npm `eventsource`, `eventsource-parser` and
`@microsoft/fetch-event-source`, each run by `node` on a script in tests/node/.

Every client reads one shared stream (``stream_lines``): unicode, CR and LF inside JSON strings,
a ~100 KB line, custom event names, ids from the upstream, a line that is not JSON (an in-band
``error`` event, then the stream goes on) and EOF (``end``). The expected events are what our own
parser makes of the raw bytes the gateway sent; ``check_shared_events`` also pins the count, the
names and a few values from the upstream lines themselves, so the comparison is not circular.
test_python_clients.py imports the stream from here.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from aiohttp import web
from conftest import ndjson_handler, parse_all, parse_events

from proxy.sse import SSEEvent, SSERetry

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
NODE_TIMEOUT = 20  # seconds; each script needs well under one
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


async def run_node(node_dir: Path, script: str, *args: str) -> list[Any]:
    """Runs a script in tests/node and returns its stdout, one JSON value per line (split on LF
    only: JSON.stringify leaves U+2028 and U+0085 raw, which str.splitlines would cut at)."""
    process = await asyncio.create_subprocess_exec(
        "node",
        str(node_dir / script),
        *args,
        cwd=node_dir,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(NODE_TIMEOUT):
            stdout, stderr = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode == 0, stderr.decode()
    return [json.loads(line) for line in stdout.decode().split("\n") if line]


async def test_eventsource_dispatches_every_gateway_event_with_its_name_data_and_id(
    node_modules, start_upstream, start_gateway, http
):
    url = await serve_stream(start_upstream, start_gateway, stream_lines())
    async with http.get(url) as response:
        raw = await response.read()
    expected = parse_events(raw)
    check_shared_events(raw, expected)

    got = await run_node(node_modules, "eventsource_client.mjs", url, *EVENT_NAMES)

    assert [(e["type"], e["data"]) for e in got] == [(e.event, e.data) for e in expected]
    # eventsource 4.1.1 sets MessageEvent.lastEventId to the block's own id, or "" when the block
    # has none; the spec (and Chromium) give the last id in force. Only error/end lack an id.
    assert [e["lastEventId"] for e in got] == [own_id(e) or "" for e in expected]


async def test_eventsource_parser_agrees_with_ours_on_a_long_stream_cut_at_random(
    node_modules, start_upstream, start_gateway, http, tmp_path
):
    url = await serve_stream(start_upstream, start_gateway, stream_lines(2000))
    async with http.get(url) as response:
        raw = await response.read()
    expected = [{"type": e.event, "data": e.data, "lastEventId": e.id} for e in parse_events(raw)]
    assert len(expected) == 2001
    assert sum(e["type"] == "error" for e in expected) == 100
    (tmp_path / "stream.sse").write_bytes(raw)
    seeds = ["1", "2", "3", "42", "2024"]

    runs = await run_node(node_modules, "parse_chunks.mjs", str(tmp_path / "stream.sse"), *seeds)

    assert [run["seed"] for run in runs] == [int(seed) for seed in seeds]
    for run in runs:
        assert run["chunks"] > 1000
        assert run["retries"] == [3000]
        assert run["events"] == expected, f"seed {run['seed']}"


async def test_fetch_event_source_posts_body_and_header_and_reads_the_same_events(
    node_modules, start_upstream, start_gateway, http
):
    lines = stream_lines()
    received: list[tuple[Any, str | None]] = []

    async def recording(request: web.Request) -> web.StreamResponse:
        received.append((await request.json(), request.headers.get("X-Tenant")))
        return await ndjson_handler(lines)(request)

    url = await serve_stream(
        start_upstream,
        start_gateway,
        lines,
        handler=recording,
        methods=["POST"],
        forward_headers=["X-Tenant"],
    )
    body = {"messages": [{"role": "user", "content": "héllo ✓"}], "stream": True}
    async with http.post(url, json=body, headers={"X-Tenant": "acme"}) as response:
        raw = await response.read()
    expected = parse_events(raw)
    check_shared_events(raw, expected)

    got = await run_node(
        node_modules, "fetch_event_source_client.mjs", url, json.dumps(body), "X-Tenant", "acme"
    )

    assert received == [(body, "acme"), (body, "acme")]
    # fetch-event-source calls onmessage for every blank line: the retry-only block comes first,
    # as a message with empty data and no name (a spec client dispatches nothing for it).
    assert got[0] == {"event": "", "data": "", "id": "", "retry": 3000}
    # Its data join drops leading empty data lines ("\nx" arrives as "x"), and like sseclient-py
    # it reports only the id written in the block, not the last one in force.
    assert [(e["event"] or "message", e["data"], e["id"] or None) for e in got[1:]] == [
        (e.event, e.data.lstrip("\n"), own_id(e)) for e in expected
    ]
    assert got[6]["data"] == "starts with a line break"
