"""Resumable streams over real sockets: a reconnect with ``Last-Event-ID`` gets what it missed
without a second upstream request, a finished stream answers 204 (Chromium's EventSource then
stops), a stream nobody reads is abandoned after ``linger``, and with Redis a reconnect that lands
on another gateway process resumes too (a real ``redis-server`` on loopback)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import orjson
import pytest

from proxy.resume.reader import parse_resume_id
from tests.support.processes import start_gateway_process
from tests.support.sse import EventStream, parse_events
from tests.support.upstreams import Seen, ndjson_handler, recorded
from tests.support.waiting import eventually

LINES = [b'{"n": %d}\n' % n for n in range(1, 11)]


def resume_route(upstream: str, **resume: Any) -> dict[str, Any]:
    return {
        "path": "/chat",
        "upstream": upstream + "/chat",
        "events": {"data": "/n", "retry": 200},
        "resume": {"linger": 5, **resume},
    }


async def test_a_reconnect_gets_the_rest_without_a_second_upstream_request(
    start_upstream, start_gateway, http
):
    requests: list[Seen] = []
    upstream = recorded(ndjson_handler(LINES, pause=0.1), requests)
    gateway = await start_gateway([resume_route(await start_upstream({"/chat": upstream}))])
    async with http.get(f"{gateway}/chat") as response:
        first = await EventStream(response).read_events(3)
    # The client left after three events; the upstream goes on into the replay buffer.
    key, third = parse_resume_id(first[-1].id)
    assert [e.data for e in first] == ["1", "2", "3"]
    assert third == 3
    assert [e.id for e in first] == [f"{key}-1", f"{key}-2", f"{key}-3"]

    async with http.get(f"{gateway}/chat", headers={"Last-Event-ID": first[-1].id}) as response:
        assert response.status == 200
        rest = parse_events(await response.read())
    assert [e.data for e in rest] == [str(n) for n in range(4, 11)] + [""]
    assert [e.id for e in rest] == [f"{key}-{n}" for n in range(4, 12)]
    assert rest[-1].event == "end"
    assert len(requests) == 1
    assert not any(r.closed for r in requests)


async def test_a_reconnect_after_the_end_gets_204_and_one_that_missed_the_end_gets_it(
    start_upstream, start_gateway, http
):
    requests: list[Seen] = []
    upstream = recorded(ndjson_handler(LINES, pause=0), requests)
    gateway = await start_gateway([resume_route(await start_upstream({"/chat": upstream}))])
    async with http.get(f"{gateway}/chat") as response:
        events = parse_events(await response.read())
    final, last_data = events[-1], events[-2]
    assert final.event == "end"
    async with http.get(f"{gateway}/chat", headers={"Last-Event-ID": final.id}) as response:
        assert response.status == 204
        assert await response.read() == b""
    async with http.get(f"{gateway}/chat", headers={"Last-Event-ID": last_data.id}) as response:
        assert [(e.event, e.id) for e in parse_events(await response.read())] == [("end", final.id)]
    assert len(requests) == 1


async def test_an_unknown_stream_key_is_a_new_stream(start_upstream, start_gateway, http):
    requests: list[Seen] = []
    upstream = recorded(ndjson_handler(LINES, pause=0), requests)
    gateway = await start_gateway([resume_route(await start_upstream({"/chat": upstream}))])
    headers = {"Last-Event-ID": "AAAAAAAAAAAAAAAA-5"}  # the right shape, but never ours
    async with http.get(f"{gateway}/chat", headers=headers) as response:
        events = parse_events(await response.read())
    assert [e.data for e in events][:2] == ["1", "2"]
    assert len(requests) == 1


async def test_a_stream_nobody_reads_is_abandoned_after_linger(start_upstream, start_gateway, http):
    requests: list[Seen] = []
    upstream = recorded(ndjson_handler(LINES, pause=0.3), requests)
    gateway = await start_gateway(
        [resume_route(await start_upstream({"/chat": upstream}), linger=0.5)]
    )
    async with http.get(f"{gateway}/chat") as response:
        (first,) = await EventStream(response).read_events(1)
    started = time.monotonic()
    await eventually(
        lambda: any(r.closed for r in requests), "the upstream request was closed", within=5
    )
    assert time.monotonic() - started < 3  # linger 0.5 s, checked about once a second
    async with http.get(f"{gateway}/chat", headers={"Last-Event-ID": first.id}) as response:
        events = parse_events(await response.read())
    assert events[-1].event == "error"
    assert orjson.loads(events[-1].data)["code"] == "abandoned"
    assert len(requests) == 1


async def test_events_dropped_by_max_events_are_reported_as_a_gap(
    start_upstream, start_gateway, http
):
    requests: list[Seen] = []
    upstream = recorded(ndjson_handler(LINES, pause=0), requests)
    gateway = await start_gateway(
        [resume_route(await start_upstream({"/chat": upstream}), max_events=3)]
    )
    async with http.get(f"{gateway}/chat") as response:
        events = parse_events(await response.read())
    key, _ = parse_resume_id(events[-1].id)
    async with http.get(f"{gateway}/chat", headers={"Last-Event-ID": f"{key}-2"}) as response:
        replay = parse_events(await response.read())
    assert replay[0].event == "error"
    assert orjson.loads(replay[0].data)["code"] == "replay_gap"
    assert [e.data for e in replay[1:]] == ["9", "10", ""]


async def test_resume_needs_sequence_ids():
    from proxy import parse_config
    from proxy.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        parse_config("routes: [{path: /a, upstream: 'http://u/', events: {id: /id}, resume: {}}]")
    assert "resume needs events.id: sequence" in str(caught.value)


async def test_chromium_stops_reconnecting_when_the_finished_stream_answers_204(
    browser, start_upstream, start_gateway
):
    requests: list[Seen] = []
    upstream = recorded(ndjson_handler(LINES, pause=0.02), requests)
    route = resume_route(await start_upstream({"/chat": upstream}))
    route["events"]["end_event"] = None  # no end event: the browser reconnects at EOF
    gateway = await start_gateway([route])
    page = await browser.new_page()
    await page.goto(f"{gateway}/healthz")
    result = await page.evaluate(
        """() => new Promise((resolve) => {
            const source = new EventSource("/chat");
            const seen = [];
            let errors = 0;
            source.onmessage = (e) => seen.push([e.data, e.lastEventId]);
            source.onerror = () => {
                errors += 1;
                if (source.readyState === EventSource.CLOSED) {
                    resolve({seen, errors, state: source.readyState});
                }
            };
            setTimeout(() => resolve({seen, errors, state: source.readyState}), 8000);
        })"""
    )
    # All ten events once; at EOF the browser reconnected (retry 200 ms) with the last id,
    # got 204, and closed for good: readyState CLOSED, and no second upstream request.
    assert [data for data, _ in result["seen"]] == [str(n) for n in range(1, 11)]
    assert result["state"] == 2
    await asyncio.sleep(0.6)
    assert len(requests) == 1


# -- Redis: a reconnect that lands on another gateway process ------------------------------------


async def test_with_redis_a_reconnect_to_another_gateway_process_resumes(
    redis_url, start_upstream, tmp_path
):
    requests: list[Seen] = []
    upstream = recorded(ndjson_handler(LINES, pause=0.15), requests)
    base = await start_upstream({"/chat": upstream})
    config = tmp_path / "gateway.yaml"
    config.write_text(json.dumps({"routes": [resume_route(base, store=redis_url, linger=10)]}))
    first_gateway = await start_gateway_process("--config", str(config), "--port", "0")
    second_gateway = await start_gateway_process("--config", str(config), "--port", "0")
    first, second = first_gateway.base, second_gateway.base
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{first}/chat") as response:
                seen = await EventStream(response).read_events(3)
            # The first gateway goes on reading the upstream into Redis; the client comes back
            # through the second one, which has never seen this stream's upstream.
            headers = {"Last-Event-ID": seen[-1].id}
            async with session.get(f"{second}/chat", headers=headers) as response:
                assert response.status == 200
                rest = parse_events(await response.read())
            assert [e.data for e in seen + rest] == [str(n) for n in range(1, 11)] + [""]
            assert rest[-1].event == "end"
            async with session.get(f"{second}/chat", headers={"Last-Event-ID": rest[-1].id}) as r:
                assert r.status == 204
            async with session.get(f"{first}/chat", headers={"Last-Event-ID": rest[-1].id}) as r:
                assert r.status == 204
        assert len(requests) == 1
    finally:
        for gateway in (first_gateway, second_gateway):
            assert await gateway.stop() == 0
