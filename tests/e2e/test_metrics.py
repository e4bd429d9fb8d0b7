"""/metrics in Prometheus text format, scraped over HTTP after real streams."""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

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
