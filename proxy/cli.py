"""Command line: ``python -m proxy [--config FILE | --upstream URL | --demo] [--host] [--port]``.

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

from .app import STREAMS, create_app, make_runner
from .config import CONSOLE_PATH, GatewayConfig, load_config, upstream_config
from .errors import ConfigError
from .logs import configure_logging

__all__ = ["main", "serve"]

log = logging.getLogger("proxy")

BUNDLED_CONFIG: Final = Path(__file__).resolve().parent.parent / "config.yaml"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.upstream and args.demo:
        parser.error("--upstream and --demo are two different gateways: choose one")
    if (args.upstream or args.demo) and args.config is not None:
        parser.error("--config cannot be combined with --upstream or --demo")
    if args.header and not args.upstream:
        parser.error("--header is for --upstream; a config file has headers: per route")
    source = args.upstream or args.config or BUNDLED_CONFIG
    try:
        if args.upstream:
            config = upstream_config(args.upstream, dict(args.header))
        else:
            config = load_config(args.config or BUNDLED_CONFIG)
            if args.demo:
                config = config.with_overrides(demo=True, mode="dev")
        config = config.with_overrides(
            host=args.host, port=args.port, mode=args.mode, log_format=args.log_format
        )
    except ConfigError as exc:
        print(f"proxy: error: {exc}", file=sys.stderr)
        return 2
    if args.check_config:
        print(f"proxy: {source}: ok ({len(config.routes)} routes)")
        return 0
    configure_logging(config.server.effective_log_format, args.log_level)
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
    """Run the gateway until SIGINT or SIGTERM, then drain: ``/readyz`` fails, new streams get
    503, open streams get a ``shutting_down`` event, and the process exits within
    ``server.drain_seconds``."""
    app = create_app(config)
    runner = make_runner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.server.host, config.server.port)
        await site.start()
        for address in runner.addresses:
            host, port = address[0], address[1]
            origin = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
            print(f"proxy: listening on {origin} ({len(config.routes)} routes)", flush=True)
            if config.server.console_enabled:
                print(f"proxy: stream console at {origin}{CONSOLE_PATH}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        streams = app[STREAMS]
        log.info("draining: %d open streams told shutting_down", streams.drain())
        if not await streams.wait_idle(config.server.drain_seconds):
            log.warning(
                "drain: %d streams still open after %s s; closing them",
                streams.open_streams(),
                config.server.drain_seconds,
            )
    finally:
        await runner.cleanup()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m proxy", description="NDJSON-to-SSE streaming gateway"
    )
    parser.add_argument(
        "--config",
        type=Path,
        help="YAML configuration file (default: the bundled config.yaml with its demo)",
    )
    parser.add_argument(
        "--upstream",
        metavar="URL",
        help="no config file: serve / and /{path} from URL and URL/{path}, GET and POST (dev mode)",
    )
    parser.add_argument(
        "--header",
        metavar="'NAME: VALUE'",
        type=_header,
        action="append",
        default=[],
        help="with --upstream: a header for every upstream request (repeatable)",
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="serve the built-in demo upstream and page (the bundled config, dev mode)",
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
        "--mode",
        choices=["dev", "production"],
        help="overrides server.mode: dev turns on the stream console and readable logs",
    )
    parser.add_argument(
        "--log-format",
        choices=["dev", "json"],
        help="one line per stream, readable (dev) or JSON; default: by mode",
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


def _header(text: str) -> tuple[str, str]:
    name, colon, value = text.partition(":")
    if not colon or not name.strip():
        raise argparse.ArgumentTypeError(f"not 'Name: value': {text!r}")
    return name.strip(), value.strip()


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}")
    return port
