"""Command line: ``python -m proxy [--config FILE | --upstream URL | --demo] [--host] [--port]``.

A configuration error is one line on stderr that names the key, and exit status 2; nothing starts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from .config import GatewayConfig, load_config, upstream_config
from .errors import ConfigError
from .logs import configure_logging
from .server import serve
from .workers import run_workers

__all__ = ["main", "otlp_requested"]

log = logging.getLogger("proxy")

BUNDLED_CONFIG: Final = Path(__file__).resolve().parent.parent / "config.yaml"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.upstream and args.demo:
        parser.error("--upstream and --demo are two different gateways: choose one")
    if (args.upstream or args.demo) and args.config is not None:
        parser.error("--config cannot be combined with --upstream or --demo")
    if args.header and not args.upstream:
        parser.error("--header is for --upstream; a config file has headers: per route")
    source = args.upstream or args.config or BUNDLED_CONFIG

    def load() -> GatewayConfig:
        if args.upstream:
            config = upstream_config(args.upstream, dict(args.header))
        else:
            config = load_config(args.config or BUNDLED_CONFIG)
            if args.demo:
                config = config.with_overrides(demo=True, mode="dev")
        return config.with_overrides(
            host=args.host, port=args.port, mode=args.mode, log_format=args.log_format
        )

    try:
        config = load()
    except ConfigError as exc:
        print(f"proxy: error: {exc}", file=sys.stderr)
        return 2
    if args.check_config:
        count = len(config.routes)
        print(f"proxy: {source}: ok ({count} route{'' if count == 1 else 's'})")
        return 0
    if args.workers > 1:
        return run_workers(config, argv, args.workers)
    configure_logging(config.server.effective_log_format, args.log_level)
    return _run(config, args, None if args.upstream else load)


def _run(
    config: GatewayConfig, args: argparse.Namespace, reload: Callable[[], GatewayConfig] | None
) -> int:
    """Serve in this process until a stop signal; the exit status."""
    try:
        run = _loop_runner(args.loop)
    except ImportError:
        print(
            "proxy: error: --loop uvloop needs uvloop, the 'fast' extra:"
            " uv run --no-dev --extra fast python -m proxy ...",
            file=sys.stderr,
        )
        return 2
    try:
        with _span_export():
            run(
                serve(
                    config,
                    reload,
                    reuse_port=args.reuse_port,
                    announce=not args.no_announce,
                    ready_fd=args.ready_fd,
                )
            )
    except OSError as exc:
        where = f"{config.server.host}:{config.server.port}"
        print(f"proxy: error: cannot listen on {where}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


def _span_export() -> contextlib.AbstractContextManager[None]:
    """OpenTelemetry's SDK exporting the spans by OTLP, when its standard variables ask for it
    and the 'otel' extra is installed."""
    if not otlp_requested(os.environ):
        return contextlib.nullcontext()
    try:
        from .otel import sdk_from_environment  # optional dependencies: imported only when asked

        return sdk_from_environment()
    except ImportError as exc:
        log.warning(
            "an OTLP endpoint is set (OTEL_EXPORTER_OTLP_*) but spans cannot be exported (%s):"
            " install the 'otel' extra (uv run --no-dev --extra otel python -m proxy ...)",
            exc,
        )
        return contextlib.nullcontext()


def otlp_requested(environ: Mapping[str, str]) -> bool:
    """An OTLP endpoint is set, and OTLP is the traces exporter (the default)."""
    exporters = {name.strip() for name in environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")}
    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    return "otlp" in exporters and bool(endpoint)


def _loop_runner(loop: str) -> Callable[[Coroutine[Any, Any, None]], None]:
    if loop == "uvloop":
        import uvloop  # an optional dependency: imported only when asked for

        return uvloop.run
    return asyncio.run


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
        "--workers",
        type=_positive,
        default=1,
        help="run N processes on one port (SO_REUSEPORT); default 1",
    )
    # Set by --workers for each worker it starts.
    parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-announce", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    parser.add_argument(
        "--loop",
        default="asyncio",
        choices=["asyncio", "uvloop"],
        help="event loop; uvloop needs the 'fast' extra (uv run --no-dev --extra fast ...)",
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


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a positive number: {text!r}")
    return value


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}")
    return port
