"""The thin passthrough: the least an aiohttp proxy can do, as the yardstick for the gateway.

Same method, path, query and body upstream; each upstream chunk is written to the client as it
arrives, with no framing and no conversion. One shared ``ClientSession`` with no connection cap,
and the server options the gateway uses (``handler_cancellation``), so that the difference between
the two is the gateway's own work.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from typing import Final

import aiohttp
from aiohttp import web

from .upstream import raise_nofile

SESSION: Final = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM: Final = web.AppKey("upstream", str)


async def relay(request: web.Request) -> web.StreamResponse:
    body = await request.read() if request.can_read_body else None
    async with request.app[SESSION].request(
        request.method,
        request.app[UPSTREAM] + request.path_qs,
        data=body,
        headers={"Content-Type": request.headers.get("Content-Type", "application/json")},
    ) as upstream:
        response = web.StreamResponse(
            status=upstream.status,
            headers={"Content-Type": upstream.headers.get("Content-Type", "application/x-ndjson")},
        )
        await response.prepare(request)
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
        return response


async def _session(app: web.Application) -> AsyncIterator[None]:
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=600)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, auto_decompress=False
    ) as session:
        app[SESSION] = session
        yield


async def _serve(upstream: str, host: str, port: int) -> None:
    app = web.Application()
    app[UPSTREAM] = upstream.rstrip("/")
    app.cleanup_ctx.append(_session)
    app.router.add_route("*", "/{tail:.*}", relay)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)  # aiohttp's default backlog, as the gateway
        await site.start()
        bound = runner.addresses[0]
        print(f"passthrough: listening on http://{bound[0]}:{bound[1]}", flush=True)
        await asyncio.Event().wait()  # until SIGTERM
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.passthrough")
    parser.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:9000")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--loop", default="asyncio", choices=["asyncio", "uvloop"])
    args = parser.parse_args()
    raise_nofile()
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(_serve(args.upstream, args.host, args.port))
    else:
        asyncio.run(_serve(args.upstream, args.host, args.port))


if __name__ == "__main__":
    main()
