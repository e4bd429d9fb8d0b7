"""Real Node SSE clients read the gateway's stream: npm `eventsource`, `eventsource-parser` and
`@microsoft/fetch-event-source`, each run by `node` on a script in tests/node/.

Every client reads one shared stream (``stream_lines``): unicode, CR and LF inside JSON strings,
a ~100 KB line, custom event names, ids from the upstream, a line that is not JSON (an in-band
``error`` event, then the stream goes on) and EOF (``end``). The expected events are what our own
parser makes of the raw bytes the gateway sent; ``check_shared_events`` also pins the count, the
names and a few values from the upstream lines themselves, so the comparison is not circular.
The stream and its checks live in tests/support/shared_stream.py, shared with
test_python_clients.py.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.support.shared_stream import (
    EVENT_NAMES,
    check_shared_events,
    own_id,
    serve_stream,
    served_stream,
    stream_lines,
)
from tests.support.sse import parse_events
from tests.support.upstreams import ndjson_handler

NODE_TIMEOUT = 20  # seconds; each script needs well under one


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
    url, _, expected = await served_stream(start_upstream, start_gateway, http)

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
