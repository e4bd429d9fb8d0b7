"""The application: ``create_app(config)`` wires the configured routes, the shared client session
and (when ``server.demo`` is on) the built-in demo; :func:`make_runner` holds the server options
that production and tests share.

State lives in the app, typed with ``web.AppKey``; nothing is module-level and mutable, so any
number of apps can run in one process (the test suite runs many).
"""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator

import aiohttp
import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from .auth import add_auth
from .config import GatewayConfig, RouteConfig
from .console import add_console_routes, add_tap
from .cors import add_cors, apply_cors_headers
from .demo import add_demo_routes
from .errors import HTTPFailure, UpstreamFailure
from .handlers import stream_handler
from .logs import STREAM_RECORD, access_log
from .metrics import GatewayMetrics
from .paths import HEALTH_PATH, METRICS_PATH, READY_PATH
from .resume import open_store
from .resume.hub import StreamHub
from .resume.resources import hide_stream_key, stream_resources
from .state import CLIENT_SESSION, CONFIG, METRICS, STREAM_HUBS, STREAMS
from .streams import StreamRegistry
from .tracing import trace_requests

__all__ = ["CONFIG", "STREAMS", "create_app", "json_errors", "make_runner"]


def create_app(config: GatewayConfig) -> web.Application:
    streams = StreamRegistry(config.server.max_streams)
    metrics = GatewayMetrics(streams, [route.path for route in config.routes])
    unlogged = frozenset({HEALTH_PATH, READY_PATH, METRICS_PATH})
    # Tracing outermost: at the end it reads the access log's finished record.
    middlewares = [
        trace_requests(unlogged, config.server.trace_propagation),
        access_log(unlogged, metrics.observe),
        json_errors,
    ]
    app = web.Application(middlewares=middlewares)
    app[CONFIG] = config
    app[STREAMS] = streams
    app[METRICS] = metrics
    app.cleanup_ctx.append(_client_session)
    app.cleanup_ctx.append(_stream_hubs)
    app.on_response_prepare.append(apply_cors_headers)
    # The gateway's own paths first: the router tries resources in order, and a route such as
    # --upstream's /{tail:.+} would otherwise take them.
    app.router.add_get(HEALTH_PATH, _healthz)
    app.router.add_get(READY_PATH, _readyz)
    if config.server.metrics:
        app.router.add_get(METRICS_PATH, metrics.handler)
    if config.server.console_enabled:
        add_console_routes(app, config)
    if config.server.demo:
        add_demo_routes(app)
    for route in config.routes:
        handler = stream_handler(route)
        if config.server.console_enabled:
            handler = add_tap(handler)
        # CORS outermost: a 401 must reach an allowed page readably, and a preflight carries
        # no credential.
        handler = add_cors(app, route, add_auth(route, handler))
        for method in route.methods:
            app.router.add_route(method, route.path, handler)
        if route.streams is not None:
            _add_stream_resources(app, route)
    return app


def _add_stream_resources(app: web.Application, route: RouteConfig) -> None:
    by_path: dict[str, list[tuple[str, Handler]]] = {}
    for method, path, handler in stream_resources(route):
        by_path.setdefault(path, []).append((method, handler))
    for path, handlers in by_path.items():
        methods = [method for method, _ in handlers]
        for method, handler in handlers:
            guarded = add_cors(app, route, add_auth(route, handler), path, methods)
            app.router.add_route(method, path, hide_stream_key(guarded))


async def _healthz(request: web.Request) -> web.Response:
    """The process is up and serving (for container health checks)."""
    return web.json_response({"status": "ok", "pid": os.getpid()})


async def _readyz(request: web.Request) -> web.Response:
    """Ready for new streams: the configuration is loaded and the gateway is not draining (a
    load balancer stops sending here as soon as this fails)."""
    if request.app[STREAMS].draining:
        return web.json_response({"status": "draining"}, status=503)
    return web.json_response({"status": "ready"})


async def _client_session(app: web.Application) -> AsyncIterator[None]:
    # One session (one connection pool) for the whole app, as aiohttp advises. Streams hold their
    # connection for minutes, so the pool has no cap: aiohttp's default of 100 would make the
    # 101st concurrent stream wait for a connection instead of opening one.
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=True) as session:
        app[CLIENT_SESSION] = session
        yield


async def _stream_hubs(app: web.Application) -> AsyncIterator[None]:
    """Each resumable route's streams (its replay store); at cleanup, producers stop before
    stores close."""
    hubs: dict[str, StreamHub] = {}
    for route in app[CONFIG].routes:
        if route.resume is not None:
            resume = route.resume
            store = open_store(resume.store, resume.max_events, resume.ttl)
            count_tokens = functools.partial(app[METRICS].count_tokens, route.path)
            hub = StreamHub(store, resume.max_events, resume.linger, count_tokens, route=route.path)
            hubs[route.path] = hub
            if route.streams is not None:
                hub.listen_for_cancels()
    app[STREAM_HUBS] = hubs
    yield
    await app[STREAMS].close_producers()
    for hub in hubs.values():
        await hub.store.close()


def make_runner(app: web.Application, keepalive_timeout: float = 75) -> web.AppRunner:
    # handler_cancellation: a client that disconnects cancels its handler at once, which closes
    # the upstream request, even while the upstream is silent and nothing is being written.
    # access_log=None: the gateway writes its own line per stream (proxy.logs), at its end.
    # shutdown_timeout: by the time the runner is cleaned up, the drain has already given open
    # streams their time (server.drain_seconds); what is left is cancelled promptly.
    return web.AppRunner(
        app,
        handler_cancellation=True,
        access_log=None,
        shutdown_timeout=1.0,
        keepalive_timeout=keepalive_timeout,
    )


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error answer is JSON: ``{"error": {"code", "message"[, "upstream_status"]}}``."""
    try:
        return await handler(request)
    except HTTPFailure as exc:
        error: dict[str, object] = {"code": exc.code, "message": exc.message}
        # No record on the paths the access log skips (health checks, metrics).
        record = request.get(STREAM_RECORD)
        if record is not None:
            record.ended = exc.code
        if isinstance(exc, UpstreamFailure):
            error["upstream_status"] = exc.upstream_status
            if record is not None:
                record.upstream_status = exc.upstream_status
        return web.json_response(
            {"error": error}, status=exc.status, headers=exc.headers, dumps=_dumps
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _http_exception(request, exc)


def _http_exception(request: web.Request, exc: web.HTTPException) -> web.Response:
    """aiohttp's own 404/405/...: the same JSON shape, its reason as the code."""
    code = exc.reason.lower().replace(" ", "_").replace("-", "_")
    record = request.get(STREAM_RECORD)
    if record is not None:
        record.ended = code
    message = f"{request.method} {request.path}: {exc.reason}"
    if "Allow" in exc.headers:
        message += f" (allowed: {exc.headers['Allow']})"
    return web.json_response(
        {"error": {"code": code, "message": message}},
        status=exc.status,
        headers={k: v for k, v in exc.headers.items() if k.lower() == "allow"},
        dumps=_dumps,
    )


def _dumps(value: object) -> str:
    return orjson.dumps(value).decode()
