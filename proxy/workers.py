"""``--workers N``: N gateway processes on one port, each with its own SO_REUSEPORT socket, so the
kernel spreads new connections over them.

Strategy: the supervisor binds the port first (without listening) to fix it when ``--port 0`` asked
for any, starts each worker as ``python -m proxy`` with the same arguments plus that port and
``--reuse-port``, waits until the port accepts, and then only relays signals: SIGTERM/SIGINT to
drain every worker (the supervisor exits when they have), SIGHUP to make each reload. A worker that
dies on its own is started again. Workers share nothing but the port; the replay buffer, if a route
keeps one in Redis, is the only state they have in common.
"""

from __future__ import annotations

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
    host, port = config.server.host, config.server.port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    reserved = socket.socket(family, socket.SOCK_STREAM)
    reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    reserved.bind((host, port))
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
    processes = [subprocess.Popen(command) for _ in range(workers)]
    stopping = False

    def relay(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if signum in (signal.SIGTERM, signal.SIGINT):
            stopping = True
        for process in processes:
            if process.poll() is None:
                process.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, relay)
    try:
        if not _wait_accepting(host, port, processes):
            print("proxy: error: the workers did not start", file=sys.stderr)
            stopping = True
            relay(signal.SIGTERM, None)
        else:
            shown = f"[{host}]" if ":" in host else host
            print(
                f"proxy: listening on http://{shown}:{port} "
                f"({len(config.routes)} routes, {workers} workers)",
                flush=True,
            )
    finally:
        reserved.close()
    while True:
        for index, process in enumerate(processes):
            code = process.poll()
            if code is not None and not stopping:
                print(f"proxy: worker {process.pid} exited ({code}); starting another", flush=True)
                time.sleep(_RESTART_PAUSE)
                processes[index] = subprocess.Popen(command)
        if stopping and all(process.poll() is not None for process in processes):
            return 0
        time.sleep(0.1)


def _wait_accepting(host: str, port: int, processes: list[subprocess.Popen[bytes]]) -> bool:
    deadline = time.monotonic() + _STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if any(process.poll() is not None for process in processes):
            return False
        try:
            socket.create_connection((host, port), timeout=1).close()
        except OSError:
            time.sleep(0.05)
            continue
        return True
    return False


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
