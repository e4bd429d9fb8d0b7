"""Shared fixtures: a real gateway on a loopback port, real upstream servers, real clients.

The gateway is started exactly as ``python -m proxy`` starts it (``make_runner(create_app(...))``
and a TCP site), not through aiohttp's TestServer, so the server options under test are the
production ones.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from proxy import GatewayConfig, create_app, make_runner, parse_config
from proxy.server import listen
from tests.support.fronts import FRONTS, Front, self_signed_certificate
from tests.support.tools import CHROMIUM, CHROMIUM_ARGS, NODE_DIR, require

StartGateway = Callable[..., Awaitable[str]]


@pytest.fixture
async def start_config() -> AsyncIterator[Callable[[GatewayConfig], Awaitable[str]]]:
    """``await start_config(config) -> base URL``: a parsed configuration, served on loopback
    through the same listener (and connection guards) as ``python -m proxy``."""
    served: list[tuple[asyncio.Server, web.AppRunner]] = []

    async def start(config: GatewayConfig) -> str:
        runner = make_runner(create_app(config), config.server.keepalive_timeout)
        await runner.setup()
        listener = await listen(runner, "127.0.0.1", 0, config.server)
        served.append((listener, runner))
        return f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}"

    yield start
    for listener, runner in reversed(served):
        listener.close()
        await runner.cleanup()


@pytest.fixture
def start_gateway(start_config) -> StartGateway:
    """``await start_gateway(routes, server=None, environ=None) -> base URL``."""

    async def start(
        routes: list[dict[str, Any]],
        server: dict[str, Any] | None = None,
        environ: dict[str, str] | None = None,
    ) -> str:
        text = json.dumps({"server": server or {}, "routes": routes})  # JSON is YAML
        return await start_config(
            parse_config(text, environ if environ is not None else dict(os.environ))
        )

    return start


StartUpstream = Callable[..., Awaitable[str]]


@pytest.fixture
async def start_upstream(aiohttp_server: Any) -> StartUpstream:
    """``await start_upstream({"/path": handler, ...}, method="POST") -> base URL``."""

    async def start(handlers: dict[str, Any], method: str = "POST") -> str:
        app = web.Application()
        for path, handler in handlers.items():
            app.router.add_route(method, path, handler)
        server = await aiohttp_server(app)
        return f"http://127.0.0.1:{server.port}"

    return start


@pytest.fixture(scope="session", autouse=True)
def span_exporter() -> Iterator[Any]:
    """OpenTelemetry's SDK for the whole session, when it is installed (the dev group): every
    in-process gateway's spans go to one in-memory exporter. Session-wide because OpenTelemetry
    sets its global provider once per process; and for every test, so that which way a gateway
    makes its trace ids never depends on which tests ran before. None without the SDK."""
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    except ImportError:
        yield None
        return
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    yield exporter
    provider.shutdown()


@pytest.fixture
def spans(span_exporter) -> Iterator[Any]:
    """The session's in-memory span exporter, empty at the start of the test (and after it)."""
    if span_exporter is None:
        pytest.skip("needs opentelemetry-sdk (the dev group)")
    span_exporter.clear()
    yield span_exporter
    span_exporter.clear()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


StartFront = Callable[..., Awaitable[Front]]


@pytest.fixture
async def start_front(tmp_path) -> AsyncIterator[StartFront]:
    """``await start_front("nginx" | "caddy", gateway, changes=None) -> Front``: the front's file
    in examples/ on a loopback port, serving HTTP/2 over TLS with a certificate made for this test
    (``front.base`` is ``https://127.0.0.1:PORT``), in front of the gateway at ``gateway``.
    ``changes`` replaces more lines of the example."""
    cert, key = self_signed_certificate(tmp_path)
    started: list[Front] = []

    async def start(kind: str, gateway: str, changes: dict[str, str] | None = None) -> Front:
        find, launch = FRONTS[kind]
        binary = find()
        require(binary is not None, f"needs Debian's {kind}: sudo apt-get install {kind}")
        assert binary is not None
        directory = tmp_path / f"{kind}-{len(started)}"
        directory.mkdir()
        front = await launch(binary, directory, gateway, cert, key, changes)
        started.append(front)
        return front

    yield start
    for front in reversed(started):
        await front.stop()


# -- real clients: Chromium (Debian's, driven by Playwright) and Node ------------------------------


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """A fresh headless Chromium (Debian's /usr/bin/chromium; never a downloaded build)."""
    require(os.access(CHROMIUM, os.X_OK), "needs Debian's chromium: sudo apt-get install chromium")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        # launch() gives every browser a new temporary profile.
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """tests/node with its pinned npm packages installed (npm ci, once)."""
    require(shutil.which("node") is not None, "needs Node.js 20+: sudo apt-get install nodejs npm")
    if not (NODE_DIR / "node_modules" / ".package-lock.json").exists():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=NODE_DIR,
            check=True,
            timeout=300,
        )
    return NODE_DIR


@pytest.fixture
async def redis_url(tmp_path) -> AsyncIterator[str]:
    """A real redis-server on a loopback port, for the stores that replicas share."""
    server = shutil.which("redis-server")
    require(server is not None, "needs Debian's redis-server: sudo apt-get install redis-server")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = await asyncio.create_subprocess_exec(
        server,
        *[
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "redis-server did not start"
            await asyncio.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 10)
