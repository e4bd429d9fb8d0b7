"""/metrics in Prometheus text format, scraped over HTTP after real streams."""

from __future__ import annotations

import asyncio
import json
import re

from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from tests.support import ROOT
from tests.support.sse import parse_events
from tests.support.upstreams import ndjson_handler

LINES = [b'{"n": 1}\n', b'{"n": 2}\n', b"not json\n"]


async def scrape(http, gateway: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with http.get(f"{gateway}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await response.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_streams_events_bytes_statuses_errors_and_histograms_are_counted(
    start_upstream, start_gateway, http
):
    async def unavailable(request: web.Request) -> web.Response:
        return web.json_response({"error": "loading"}, status=503)

    upstream = await start_upstream({"/ok": ndjson_handler(LINES), "/down": unavailable})
    gateway = await start_gateway(
        [
            {"path": "/ok", "upstream": upstream + "/ok", "events": {"data": "/n"}},
            {"path": "/down", "upstream": upstream + "/down"},
        ]
    )
    received = 0
    for _ in range(2):
        async with http.get(f"{gateway}/ok") as response:
            received += len(await response.read())
    async with http.get(f"{gateway}/down") as response:
        assert response.status == 503
    await asyncio.sleep(0.05)  # the access record is written as the handler returns

    metrics = await scrape(http, gateway)
    ok, down = (("route", "/ok"),), (("route", "/down"),)
    assert metrics[("proxy_streams_total", (("ended", "eof"), *ok, ("status", "200")))] == 2
    assert (
        metrics[("proxy_streams_total", (("ended", "upstream_status"), *down, ("status", "503")))]
        == 1
    )
    assert (
        metrics[("proxy_events_total", ok)] == 4
    )  # two per stream; the bad line is an error event
    assert metrics[("proxy_sent_bytes_total", ok)] == received
    assert metrics[("proxy_upstream_responses_total", (*ok, ("status", "200")))] == 2
    assert metrics[("proxy_upstream_responses_total", (*down, ("status", "503")))] == 1
    assert metrics[("proxy_errors_total", (("code", "upstream_status"), *down))] == 1
    assert metrics[("proxy_time_to_first_event_seconds_count", ok)] == 2
    assert metrics[("proxy_stream_duration_seconds_count", ok)] == 2
    assert metrics[("proxy_stream_duration_seconds_count", down)] == 1
    assert metrics[("proxy_open_streams", ok)] == 0
    assert metrics[("proxy_draining", ())] == 0


async def test_open_streams_gauge_counts_a_stream_while_it_is_open(
    start_upstream, start_gateway, http
):
    release = asyncio.Event()

    async def held(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        await response.write(b'{"n": 1}\n')
        await release.wait()
        return response

    upstream = await start_upstream({"/held": held})
    gateway = await start_gateway([{"path": "/held", "upstream": upstream + "/held"}])
    async with http.get(f"{gateway}/held") as response:
        await response.content.readuntil(b'{"n": 1}\n\n')
        during = await scrape(http, gateway)
        release.set()
        await response.read()
    await asyncio.sleep(0.05)
    after = await scrape(http, gateway)
    assert during[("proxy_open_streams", (("route", "/held"),))] == 1
    assert after[("proxy_open_streams", (("route", "/held"),))] == 0


async def test_metrics_can_be_turned_off_and_are_not_in_the_access_log(
    start_upstream, start_gateway, http, caplog
):
    gateway = await start_gateway([], server={"metrics": False})
    async with http.get(f"{gateway}/metrics") as response:
        assert response.status == 404
    on = await start_gateway([])
    with caplog.at_level("INFO", logger="proxy.access"):
        async with http.get(f"{on}/metrics") as response:
            assert response.status == 200
    assert [r for r in caplog.records if r.name == "proxy.access"] == []


# -- LLM figures: time to first token, inter-token gaps, tokens ------------------------------------

OLLAMA_LINES = [
    b'{"message": {"content": "Why "}, "done": false}\n',
    b'{"message": {"content": "hello "}, "done": false}\n',
    b'{"message": {"content": "there"}, "done": false}\n',
    b'{"message": {"content": ""}, "done": true, "prompt_eval_count": 26, "eval_count": 3}\n',
]
USAGE = {"prompt_tokens": "/prompt_eval_count", "completion_tokens": "/eval_count"}


def llm_route(upstream: str, **extra) -> dict:
    return {
        "path": "/chat",
        "upstream": upstream + "/chat",
        "events": {"data": "/message/content", "complete_when": "/done"},
        "usage": USAGE,
        **extra,
    }


async def test_tokens_and_gaps_are_metrics_per_route_and_fields_of_the_access_log(
    start_upstream, start_gateway, http, caplog
):
    upstream = await start_upstream({"/chat": ndjson_handler(OLLAMA_LINES, pause=0.06)})
    gateway = await start_gateway([llm_route(upstream)])
    with caplog.at_level("INFO", logger="proxy.access"):
        for _ in range(2):
            async with http.post(f"{gateway}/chat", json={}) as response:
                await response.read()
        await asyncio.sleep(0.05)
    metrics = await scrape(http, gateway)
    chat = ("route", "/chat")
    assert metrics[("proxy_tokens_total", (("kind", "prompt"), chat))] == 52
    assert metrics[("proxy_tokens_total", (("kind", "completion"), chat))] == 6
    # Four token events 60 ms apart per stream, then the end: about four gaps per stream, each in
    # the buckets above 50 ms.
    gaps = metrics[("proxy_event_gap_seconds_count", (chat,))]
    assert 6 <= gaps <= 8
    assert metrics[("proxy_event_gap_seconds_bucket", (("le", "0.025"), chat))] <= 2
    assert metrics[("proxy_event_gap_seconds_bucket", (("le", "+Inf"), chat))] == gaps
    assert 0.05 * gaps < metrics[("proxy_event_gap_seconds_sum", (chat,))] < 0.5 * gaps
    (record, _) = [r.stream for r in caplog.records if getattr(r, "stream", None)]
    assert (record.prompt_tokens, record.completion_tokens) == (26, 3)
    assert 55 <= record.gap_p50_ms <= 250  # 60 ms gaps: their bucket, or the longest gap
    assert record.gap_max_ms >= 55
    assert record.first_event_ms is not None


async def test_a_resumable_streams_tokens_are_counted_once_by_its_producer(
    start_upstream, start_gateway, http
):
    upstream = await start_upstream({"/chat": ndjson_handler(OLLAMA_LINES, pause=0.02)})
    route = llm_route(upstream, resume={"linger": 5})
    gateway = await start_gateway([route])
    async with http.post(f"{gateway}/chat", json={}) as response:
        first = parse_events(await response.read())
    # A reconnect reads the kept events: no second upstream request, no second count.
    async with http.get(f"{gateway}/chat", headers={"Last-Event-ID": first[0].id}) as response:
        assert len(parse_events(await response.read())) == len(first) - 1
    await asyncio.sleep(0.1)
    metrics = await scrape(http, gateway)
    assert metrics[("proxy_tokens_total", (("kind", "completion"), ("route", "/chat")))] == 3


async def test_every_metric_the_grafana_dashboard_queries_is_served(
    start_upstream, start_gateway, http
):
    dashboard = json.loads((ROOT / "examples" / "grafana-dashboard.json").read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\bproxy_[a-z_]+", target["expr"])
    }
    assert {"proxy_time_to_first_event_seconds_bucket", "proxy_event_gap_seconds_bucket"} <= queried
    # One whole answer, and one cut short of its "done" line (an error, for the error panel).
    upstream = await start_upstream(
        {"/chat": ndjson_handler(OLLAMA_LINES, pause=0.01), "/cut": ndjson_handler(LINES[:1])}
    )
    cut = {**llm_route(upstream), "path": "/cut", "upstream": upstream + "/cut"}
    gateway = await start_gateway([llm_route(upstream), cut])
    for path in ("/chat", "/cut"):
        async with http.post(f"{gateway}{path}", json={}) as response:
            await response.read()
    await asyncio.sleep(0.05)
    served = {name for name, _ in await scrape(http, gateway)}
    assert queried - served == set()
