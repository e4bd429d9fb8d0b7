"""Command line: ``python -m proxy [--config FILE] [--host HOST] [--port PORT]``.

A configuration error is one line on stderr that names the key, and exit status 2; nothing starts.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from .app import create_app, make_runner
from .config import GatewayConfig, load_config
from .errors import ConfigError

__all__ = ["main", "serve"]

BUNDLED_CONFIG: Final = Path(__file__).resolve().parent.parent / "config.yaml"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config).with_overrides(host=args.host, port=args.port)
    except ConfigError as exc:
        print(f"proxy: error: {exc}", file=sys.stderr)
        return 2
    if args.check_config:
        print(f"proxy: {args.config}: ok ({len(config.routes)} routes)")
        return 0
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        run = _loop_runner(args.loop)
    except ImportError:
        print("proxy: error: --loop uvloop needs uvloop: pip install uvloop", file=sys.stderr)
        return 2
    try:
        run(serve(config))
    except OSError as exc:
        where = f"{config.server.host}:{config.server.port}"
        print(f"proxy: error: cannot listen on {where}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


def _loop_runner(loop: str) -> Callable[[Coroutine[Any, Any, None]], None]:
    if loop == "uvloop":
        import uvloop  # an optional dependency: imported only when asked for

        return uvloop.run
    return asyncio.run


async def serve(config: GatewayConfig) -> None:
    """Run the gateway until SIGINT or SIGTERM."""
    runner = make_runner(create_app(config))
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.server.host, config.server.port)
        await site.start()
        for address in runner.addresses:
            host, port = address[0], address[1]
            shown = f"[{host}]" if ":" in host else host
            print(
                f"proxy: listening on http://{shown}:{port} ({len(config.routes)} routes)",
                flush=True,
            )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m proxy", description="NDJSON-to-SSE streaming gateway"
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=BUNDLED_CONFIG,
        help="YAML configuration file (default: the bundled config.yaml with its demo)",
    )
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="validate the configuration, print the result and exit (status 2 if it is wrong)",
    )
    parser.add_argument("--host", help="listen address; overrides server.host")
    parser.add_argument(
        "--port", type=_port, help="listen port; overrides server.port (0: any free port)"
    )
    parser.add_argument(
        "--loop",
        default="asyncio",
        choices=["asyncio", "uvloop"],
        help="event loop; uvloop is faster when installed (pip install uvloop)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="default: info",
    )
    return parser


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}")
    return port
