"""The running server: one listening socket, configuration generations, reload and drain.

Strategy: the socket belongs to a *front* runner whose aiohttp ``Server`` hands every request to
the current *generation*: an app built from one configuration, set up by its own (siteless)
runner. SIGHUP loads the configuration again; a bad one is refused with the same one-line error
as at start-up and the current generation keeps serving. A good one becomes current for every new
request, keep-alive connections included, while the streams the old one has open go on untouched;
the old generation is cleaned up (its client session closed) once its last stream has ended.

SIGTERM (or SIGINT) drains every generation: ``/readyz`` fails, new streams get 503, open streams
get a ``shutting_down`` event, and the process exits within ``server.drain_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable

from aiohttp import web

from .app import STREAMS, create_app, make_runner
from .config import GatewayConfig, ServerConfig
from .errors import ConfigError
from .guard import HeaderDeadline
from .paths import CONSOLE_PATH

__all__ = ["listen", "serve"]

log = logging.getLogger("proxy")


class _Generation:
    def __init__(self, config: GatewayConfig, runner: web.AppRunner) -> None:
        self.config = config
        self.runner = runner
        assert runner.server is not None
        self.handle = runner.server.request_handler

    @classmethod
    async def start(cls, config: GatewayConfig) -> _Generation:
        runner = make_runner(create_app(config))
        await runner.setup()  # the app's startup: its client session; no site, no socket
        return cls(config, runner)

    @property
    def streams(self) -> int:
        return self.runner.app[STREAMS].open_streams()

    async def retire(self) -> None:
        """Clean up once the streams opened on this generation have ended."""
        await self.runner.app[STREAMS].wait_idle(float("inf"))
        await self.runner.cleanup()


class _Generations:
    """The current generation, and the previous ones still serving their open streams."""

    def __init__(self, current: _Generation) -> None:
        self.current = current
        self._retiring: dict[asyncio.Task[None], _Generation] = {}

    async def dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        return await self.current.handle(request)

    @property
    def runners(self) -> list[web.AppRunner]:
        return [self.current.runner, *(g.runner for g in self._retiring.values())]

    async def reload(self, reload: Callable[[], GatewayConfig]) -> None:
        upcoming = await _reloaded(reload, self.current.config)
        if upcoming is None:
            return
        previous, self.current = self.current, await _Generation.start(upcoming)
        log.info(
            "reloaded: %d routes; %d streams go on on the previous configuration",
            len(upcoming.routes),
            previous.streams,
        )
        task = asyncio.create_task(previous.retire())
        self._retiring[task] = previous
        task.add_done_callback(self._retiring.pop)

    async def close(self) -> None:
        for task, generation in list(self._retiring.items()):
            task.cancel()
            await generation.runner.cleanup()
        await self.current.runner.cleanup()


class _Signals:
    """SIGINT and SIGTERM stop, SIGHUP reloads. Installed before the socket listens: a signal
    that comes with the first connection must find them (the default action is to die)."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._hangup = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._hangup.set)

    async def next_is_stop(self) -> bool:
        """Wait for the next signal: True for a stop, False for a hangup."""
        stopped = asyncio.create_task(self._stop.wait())
        hung_up = asyncio.create_task(self._hangup.wait())
        await asyncio.wait({stopped, hung_up}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        hung_up.cancel()
        self._hangup.clear()
        return self._stop.is_set()


async def serve(
    config: GatewayConfig,
    reload: Callable[[], GatewayConfig] | None = None,
    *,
    reuse_port: bool = False,
    announce: bool = True,
    ready_fd: int | None = None,
) -> None:
    """Run until SIGINT or SIGTERM; on SIGHUP, ``reload()`` gives the next configuration."""
    generations = _Generations(await _Generation.start(config))
    front = make_runner(web.Application(), config.server.keepalive_timeout)
    await front.setup()
    assert front.server is not None
    # The one indirection that makes reload possible: aiohttp's Server calls request_handler
    # for every request, on new and keep-alive connections alike.
    front.server.request_handler = generations.dispatch
    signals = _Signals()
    listener: asyncio.Server | None = None
    try:
        listener = await listen(
            front, config.server.host, config.server.port, config.server, reuse_port=reuse_port
        )
        if announce:
            _announce(listener, config)
        if ready_fd is not None:
            _tell_ready(ready_fd)
        while not await signals.next_is_stop():
            if reload is None:
                log.warning("SIGHUP: there is no configuration file to reload (--upstream)")
            else:
                await generations.reload(reload)
        await _drain(generations.runners, config)
    finally:
        if listener is not None:
            listener.close()
        await front.cleanup()
        await generations.close()


def _tell_ready(ready_fd: int) -> None:
    """--workers: the supervisor waits for this line from each worker."""
    with contextlib.suppress(OSError):  # a restarted worker's supervisor is not waiting
        os.write(ready_fd, b"ready\n")
    os.close(ready_fd)


async def _reloaded(
    reload: Callable[[], GatewayConfig], running: GatewayConfig
) -> GatewayConfig | None:
    try:
        upcoming = reload()
    except ConfigError as exc:
        # The same line as at start-up (on stderr), and the running configuration stays.
        print(f"proxy: error: {exc}", file=sys.stderr, flush=True)
        log.error("reload refused, the running configuration stays: %s", exc)
        return None
    if (upcoming.server.host, upcoming.server.port) != (running.server.host, running.server.port):
        log.warning("reload: a new host or port takes a restart; still listening on the old one")
    return upcoming


async def _drain(runners: list[web.AppRunner], config: GatewayConfig) -> None:
    registries = [runner.app[STREAMS] for runner in runners]
    told = sum(registry.drain() for registry in registries)
    log.info("draining: %d open streams told shutting_down", told)
    waits = [registry.wait_idle(config.server.drain_seconds) for registry in registries]
    if not all(await asyncio.gather(*waits)):
        # Clients that do not read hold their handlers in a write; cutting them off frees the
        # handlers now, so the process exits within drain_seconds, not after aiohttp's own waits.
        left = sum(registry.abort() for registry in registries)
        log.warning(
            "drain: %d streams still open after %s s; cut off", left, config.server.drain_seconds
        )
        await asyncio.gather(*(registry.wait_idle(1.0) for registry in registries))


async def listen(
    runner: web.AppRunner,
    host: str,
    port: int,
    server: ServerConfig,
    *,
    reuse_port: bool = False,
) -> asyncio.Server:
    """The listening socket for a set-up runner, with the connection guards (:mod:`proxy.guard`).
    The tests serve their gateways through this too, so they meet the same guards."""
    assert runner.server is not None
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        HeaderDeadline.factory(runner.server, server.header_timeout, server.keepalive_timeout),
        host,
        port,
        reuse_port=reuse_port or None,
        backlog=1024,
    )


def _announce(listener: asyncio.Server, config: GatewayConfig) -> None:
    for sock in listener.sockets:
        host, port = sock.getsockname()[:2]
        origin = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        routes = len(config.routes)
        print(
            f"proxy: listening on {origin} ({routes} route{'' if routes == 1 else 's'})", flush=True
        )
        if config.server.console_enabled:
            print(f"proxy: stream console at {origin}{CONSOLE_PATH}", flush=True)
