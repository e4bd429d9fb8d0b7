"""Real ``python -m proxy`` processes and real signals: SIGHUP reloads the configuration without
cutting open streams (a bad file is refused and the old one keeps serving), and ``--workers N``
runs N processes on one port."""

from __future__ import annotations

import asyncio
import json
import signal
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from tests.support.processes import start_gateway_process
from tests.support.sse import parse_events

DEMO_BODY = "?body=%7B%22options%22%3A%7B%22delay_ms%22%3A1%7D%7D"  # {"options":{"delay_ms":1}}
SLOW_BODY = "?body=%7B%7D"  # the demo's own pace: about 2 s for the whole answer


def write_config(path: Path, routes: list[str], **server: object) -> None:
    """A config whose routes all go to the built-in demo upstream (which paces its tokens)."""
    config = {
        "server": {"demo": True, **server},
        "routes": [{"path": p, "upstream": "/demo/api/chat"} for p in routes],
    }
    path.write_text(json.dumps(config))


async def status(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url) as response:
        await response.read()
        return response.status


async def test_sighup_swaps_routes_and_open_streams_finish_on_the_old_config(tmp_path):
    config = tmp_path / "gateway.yaml"
    write_config(config, ["/old"])
    gateway = await start_gateway_process("--config", str(config), "--port", "0")
    process, base = gateway.process, gateway.base
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/old{SLOW_BODY}") as open_stream:
                await open_stream.content.readuntil(b"id: 1\n")  # the stream is under way
                write_config(config, ["/new"])
                process.send_signal(signal.SIGHUP)
                for _ in range(100):
                    if await status(session, f"{base}/new{DEMO_BODY}") == 200:
                        break
                    await asyncio.sleep(0.05)
                assert await status(session, f"{base}/new{DEMO_BODY}") == 200
                assert await status(session, f"{base}/old{DEMO_BODY}") == 404
                # The stream opened before the reload was not cut: it runs to its end event.
                rest = await open_stream.read()
            events = parse_events(b"id: 1\n" + rest)
            assert events[-1].event == "end"
            assert len(events) > 20
    finally:
        assert await gateway.stop() == 0


async def test_sighup_with_a_bad_file_keeps_the_running_config_and_says_why(tmp_path):
    config = tmp_path / "gateway.yaml"
    write_config(config, ["/a"])
    gateway = await start_gateway_process("--config", str(config), "--port", "0")
    process, base = gateway.process, gateway.base
    try:
        config.write_text("routes: [{path: /b, upstream: 'not a url'}]")
        process.send_signal(signal.SIGHUP)
        line = (await gateway.wait_for(r"^.*\n", stream="stderr")).group(0).strip()
        # The same line as a start-up with that file gives.
        assert line == f"proxy: error: {config}: routes[0].upstream: not a URL"
        async with aiohttp.ClientSession() as session:
            assert await status(session, f"{base}/a{DEMO_BODY}") == 200
            assert await status(session, f"{base}/b") == 404
            assert await status(session, f"{base}/readyz") == 200
    finally:
        assert await gateway.stop() == 0


async def test_workers_share_one_port_and_all_stop_on_sigterm(tmp_path):
    config = tmp_path / "gateway.yaml"
    write_config(config, ["/chat"])
    gateway = await start_gateway_process("--config", str(config), "--port", "0", "--workers", "2")
    process, base = gateway.process, gateway.base
    try:
        pids: Counter[int] = Counter()
        for _ in range(40):  # a new connection each time: the kernel picks a worker per connection
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"{base}/healthz") as response,
            ):
                pids[(await response.json())["pid"]] += 1
        assert len(pids) == 2, pids
        assert process.pid not in pids  # the supervisor only supervises
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/chat{DEMO_BODY}") as response:
                events = parse_events(await response.read())
        assert events[-1].event == "end"
    finally:
        assert await gateway.stop() == 0
    # Every worker is gone with the supervisor: the port is free again.
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectorError):
            await status(session, f"{base}/healthz")


async def test_sighup_to_the_supervisor_reloads_every_worker(tmp_path):
    config = tmp_path / "gateway.yaml"
    write_config(config, ["/before"])
    gateway = await start_gateway_process("--config", str(config), "--port", "0", "--workers", "2")
    process, base = gateway.process, gateway.base
    try:
        write_config(config, ["/after"])
        process.send_signal(signal.SIGHUP)
        await asyncio.sleep(1.0)
        seen = Counter()
        for _ in range(20):
            async with aiohttp.ClientSession() as session:
                seen[await status(session, f"{base}/after{DEMO_BODY}")] += 1
        assert seen == {200: 20}
    finally:
        assert await gateway.stop() == 0
