"""``--workers N``: N gateway processes on one port, each with its own SO_REUSEPORT socket, so the
kernel spreads new connections over them.

Strategy: the supervisor binds the port first (without listening) to fix it when ``--port 0`` asked
for any, starts each worker as ``python -m proxy`` with the same arguments plus that port and
``--reuse-port``, waits until every worker has said "ready" on a pipe of its own (its signal
handlers are in place and it listens), and then only relays signals: SIGTERM/SIGINT to
drain every worker (the supervisor exits when they have), SIGHUP to make each reload. A worker that
dies on its own is started again. Workers share nothing but the port; the replay buffer, if a route
keeps one in Redis, is the only state they have in common.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType
from typing import Final

from .config import GatewayConfig

__all__ = ["run_workers"]

_RESTART_PAUSE: Final = 1.0
_STARTUP_TIMEOUT: Final = 30.0


def run_workers(config: GatewayConfig, argv: Sequence[str], workers: int) -> int:
    host = config.server.host
    reserved = _reserve(host, config.server.port)
    port = reserved.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "proxy",
        *_without_workers(argv),
        "--port",
        str(port),
        "--reuse-port",
        "--no-announce",
    ]
    supervisor = _Supervisor(command, workers)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, supervisor.relay)
    try:
        if not _wait_ready(supervisor.ready_pipes, supervisor.processes):
            print("proxy: error: the workers did not start", file=sys.stderr)
            supervisor.relay(signal.SIGTERM, None)
        else:
            shown = f"[{host}]" if ":" in host else host
            routes = len(config.routes)
            print(
                f"proxy: listening on http://{shown}:{port} "
                f"({routes} route{'' if routes == 1 else 's'}, {workers} workers)",
                flush=True,
            )
    finally:
        reserved.close()
    return supervisor.watch()


def _reserve(host: str, port: int) -> socket.socket:
    """The port, bound (with SO_REUSEPORT) until the workers listen on it too: port 0 becomes
    one port that every worker shares."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    reserved = socket.socket(family, socket.SOCK_STREAM)
    reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    reserved.bind((host, port))
    return reserved


class _Supervisor:
    """The worker processes: signals passed on to them, a worker that dies started again."""

    def __init__(self, command: list[str], workers: int) -> None:
        self._command = command
        self.processes: list[subprocess.Popen[bytes]] = []
        self.ready_pipes: list[int] = []
        for _ in range(workers):
            process, ready = _start(command)
            self.processes.append(process)
            self.ready_pipes.append(ready)
        self._stopping = False

    def relay(self, signum: int, frame: FrameType | None) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            self._stopping = True
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signum)

    def watch(self) -> int:
        """Until every worker has exited after a stop; 0."""
        processes = self.processes
        while True:
            for index, process in enumerate(processes):
                code = process.poll()
                if code is not None and not self._stopping:
                    print(
                        f"proxy: worker {process.pid} exited ({code}); starting another",
                        flush=True,
                    )
                    time.sleep(_RESTART_PAUSE)
                    processes[index], ready = _start(self._command)
                    os.close(ready)
            if self._stopping and all(process.poll() is not None for process in processes):
                return 0
            time.sleep(0.1)


def _start(command: list[str]) -> tuple[subprocess.Popen[bytes], int]:
    """A worker, and the read end of the pipe on which it says "ready"."""
    read, write = os.pipe()
    try:
        process = subprocess.Popen([*command, "--ready-fd", str(write)], pass_fds=(write,))
    finally:
        os.close(write)
    return process, read


def _wait_ready(pipes: list[int], processes: list[subprocess.Popen[bytes]]) -> bool:
    deadline = time.monotonic() + _STARTUP_TIMEOUT
    waiting = set(pipes)
    try:
        while waiting:
            left = deadline - time.monotonic()
            if left <= 0 or any(process.poll() is not None for process in processes):
                return False
            readable, _, _ = select.select(list(waiting), [], [], min(left, 0.2))
            for pipe in readable:
                if not os.read(pipe, 64):
                    return False  # closed without a word: that worker failed to start
                waiting.discard(pipe)
        return True
    finally:
        for pipe in pipes:
            os.close(pipe)


def _without_workers(argv: Sequence[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("--workers", "--port"):
            skip = True
        elif not arg.startswith(("--workers=", "--port=")):
            out.append(arg)
    return out
