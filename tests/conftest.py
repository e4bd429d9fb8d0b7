"""Shared fixtures: a real gateway on a loopback port, real upstream servers, a real SSE reader.

The gateway is started exactly as ``python -m proxy`` starts it (``make_runner(create_app(...))``
and a TCP site), not through aiohttp's TestServer, so the server options under test are the
production ones.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from proxy import GatewayConfig, create_app, make_runner, parse_config
from proxy.server import listen
from proxy.sse import SSEEvent, SSEParser, SSERetry

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


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


def parse_events(raw: bytes) -> list[SSEEvent]:
    """Events a spec-following client dispatches from ``raw`` (retry lines left out)."""
    parser = SSEParser()
    return [item for item in parser.feed(raw) if isinstance(item, SSEEvent)]


def parse_all(raw: bytes) -> list[SSEEvent | SSERetry]:
    return SSEParser().feed(raw)


def ndjson_handler(
    lines: list[bytes], content_type: str = "application/x-ndjson", *, pause: float = 0
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """An upstream that streams ``lines`` (each written and drained on its own, with ``pause``
    seconds after each, so they travel as separate TCP segments) and ends."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": content_type})
        await response.prepare(request)
        for line in lines:
            await response.write(line)
            if pause:
                await asyncio.sleep(pause)
        await response.write_eof()
        return response

    return handler


# -- real clients: Chromium (Debian's, driven by Playwright) and Node ------------------------------

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
NODE_DIR = Path(__file__).resolve().parent / "node"


def require(condition: bool, why: str) -> None:
    """Missing tools skip a developer's run with the fix in the message, but fail CI, where
    .ci/run installs them: a green CI never hides an unrun browser or Node test."""
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(why)
    pytest.skip(why)


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
