"""The gateway as a user starts it: ``python -m proxy`` with the bundled config and its demo."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
from aiohttp import web

from proxy import create_app, load_config, make_runner
from proxy.demo import demo_reply_tokens
from tests.support import ROOT
from tests.support.processes import run_cli, start_gateway_process
from tests.support.sse import parse_events


@pytest.fixture
async def bundled_gateway() -> AsyncIterator[str]:
    config = load_config(ROOT / "config.yaml")
    runner = make_runner(create_app(config))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        pytest.param(
            "routes:\n  - {path: /a, upstream: 'http://h/'}\n  - {path: /b, upstream: 'http://h/'}\n"
            "  - {path: /c, upstream: 'not a url'}\n",
            "routes[2].upstream: not a URL",
            id="bad-upstream",
        ),
        pytest.param(
            "routes:\n  - {path: /a, upstream: 'http://h/', tpyo: 1}\n",
            "routes[0].tpyo: unknown key",
            id="typo",
        ),
        pytest.param(
            "routes:\n  - path: /a\n    upstream: http://h/\n    headers: {X-Key: '${SURELY_UNSET_VAR}'}\n",
            "routes[0].headers.X-Key: environment variable SURELY_UNSET_VAR is not set",
            id="unset-env",
        ),
        pytest.param("server: {port: 70000}\n", "server.port:", id="bad-port"),
    ],
)
def test_bad_config_exits_nonzero_with_one_line_naming_the_key(tmp_path, config, message):
    path = tmp_path / "bad.yaml"
    path.write_text(config)
    result = run_cli("--config", str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0]
    assert str(path) in lines[0]


def test_missing_config_file_is_a_clear_error(tmp_path):
    result = run_cli("--config", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert "nope.yaml: cannot read" in result.stderr


async def test_python_m_proxy_runs_the_bundled_demo_on_any_port():
    gateway = await start_gateway_process("--port", "0")
    base = gateway.base
    try:
        assert base.startswith("http://127.0.0.1:")
        assert not base.endswith(":8080")
        body = orjson.dumps(
            {"messages": [{"role": "user", "content": "ping"}], "options": {"delay_ms": 1}}
        )
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/v1/chat", params={"body": body.decode()}) as response:
                assert response.status == 200
                events = parse_events(await response.read())
        tokens = [e.data for e in events if e.event == "message"]
        assert "".join(tokens) == "".join(demo_reply_tokens("ping"))
        assert events[-1].event == "end"
    finally:
        assert await gateway.stop() == 0


async def test_host_flag_overrides_the_config():
    gateway = await start_gateway_process("--host", "127.0.0.2", "--port", "0")
    base = gateway.base
    try:
        assert base.startswith("http://127.0.0.2:")
        async with aiohttp.ClientSession() as session, session.get(base + "/") as response:
            assert response.status == 200
    finally:
        assert await gateway.stop() == 0


async def test_demo_page_uses_a_native_event_source(bundled_gateway):
    async with aiohttp.ClientSession() as session, session.get(bundled_gateway + "/") as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        page = await response.text()
    assert "new EventSource(" in page
    assert "es.onmessage" in page
    assert 'addEventListener("end"' in page
    assert "es.close()" in page


async def test_demo_tokens_arrive_one_by_one_with_delays(bundled_gateway):
    body = orjson.dumps(
        {"messages": [{"role": "user", "content": "hello"}], "options": {"delay_ms": 40}}
    )
    arrivals: list[float] = []
    loop = asyncio.get_running_loop()
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{bundled_gateway}/v1/chat", params={"body": body.decode()}) as response,
    ):
        raw = b""
        async for chunk in response.content.iter_any():
            raw += chunk
            arrivals.append(loop.time())
    events = parse_events(raw)
    tokens = [e.data for e in events if e.event == "message" and e.data]
    assert tokens == demo_reply_tokens("hello")
    # /v1/chat is resumable: each id is the stream's key and the event's number in it.
    ids = [e.id for e in events if e.event == "message"][:3]
    key = ids[0].rsplit("-", 1)[0]
    assert ids == [f"{key}-1", f"{key}-2", f"{key}-3"]
    # The tokens came as separate writes spread over time, not as one buffered burst.
    assert len(arrivals) >= len(tokens) // 2
    assert arrivals[-1] - arrivals[0] > 0.02 * len(tokens)


async def test_demo_raw_route_passes_whole_ollama_lines(bundled_gateway):
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{bundled_gateway}/v1/chat/raw",
            json={"messages": [{"content": "x"}], "options": {"delay_ms": 0}},
        ) as response,
    ):
        events = parse_events(await response.read())
    lines = [orjson.loads(e.data) for e in events if e.event == "message"]
    assert lines[0]["message"]["role"] == "assistant"
    assert lines[-1]["done"] is True
    assert all(line["done"] is False for line in lines[:-1])


async def test_healthz_answers_while_the_process_serves(bundled_gateway):
    async with (
        aiohttp.ClientSession() as session,
        session.get(bundled_gateway + "/healthz") as response,
    ):
        assert response.status == 200
        health = await response.json()
    assert health["status"] == "ok"
    assert isinstance(health["pid"], int)


def test_routes_may_not_shadow_the_gateways_own_paths(tmp_path):
    path = tmp_path / "clash.yaml"
    path.write_text("server: {demo: true}\nroutes:\n  - {path: /healthz, upstream: 'http://h/'}\n")
    result = run_cli("--config", str(path))
    assert result.returncode == 2
    assert "clash.yaml: routes[0].path: /healthz is served by the gateway itself" in result.stderr


async def test_uvloop_event_loop_serves_the_same_stream():
    gateway = await start_gateway_process("--port", "0", "--loop", "uvloop")
    base = gateway.base
    try:
        body = orjson.dumps({"messages": [{"content": "uv"}], "options": {"delay_ms": 0}})
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{base}/v1/chat", params={"body": body.decode()}) as response,
        ):
            events = parse_events(await response.read())
        assert "".join(e.data for e in events if e.event == "message") == "".join(
            demo_reply_tokens("uv")
        )
    finally:
        assert await gateway.stop() == 0


def test_check_config_validates_and_exits_without_serving(tmp_path):
    assert run_cli("--check-config").stdout.strip().endswith("config.yaml: ok (2 routes)")
    bad = tmp_path / "bad.yaml"
    bad.write_text("routes:\n  - {path: /a, upstream: 'nope'}\n")
    result = run_cli("--check-config", "--config", str(bad))
    assert result.returncode == 2
    assert result.stderr.strip().endswith("bad.yaml: routes[0].upstream: not a URL")
