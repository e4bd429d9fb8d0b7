"""The run's child processes: each starts in its own process group, is ready when it says so (or,
for nginx, when its port accepts), and is always stopped: SIGTERM to the group, then SIGKILL.

Nothing here measures a stream; it only starts, samples (CPU seconds, RSS) and stops processes, and
writes the configuration files the gateway and nginx read.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any, Final

import orjson
import psutil

ROOT: Final = Path(__file__).resolve().parent.parent
LISTENING: Final = re.compile(r"listening on http://([^\s:]+):(\d+)")


class ChildError(RuntimeError):
    """A child process did not start, or did not answer in time."""


class LineReader:
    """Lines from a child's stdout pipe, with a deadline on each."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self._fd = pipe.fileno()
        self._buffer = b""

    def readline(self, timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ChildError(f"{what}: no answer within {timeout:.0f} s")
            readable, _, _ = select.select([self._fd], [], [], left)
            if readable:
                data = os.read(self._fd, 1 << 20)
                if not data:
                    raise ChildError(f"{what}: the process closed its output (see its log)")
                self._buffer += data
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()


class Child:
    """One child process (and, for nginx, its workers)."""

    def __init__(
        self, name: str, argv: list[str], logdir: Path, *, stdin: bool = False, stdout: bool = True
    ) -> None:
        self.name = name
        self.log_path = logdir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout else self._log,
            stderr=self._log,
            start_new_session=True,  # its own process group, killed as one
        )
        self.reader = LineReader(self.proc.stdout) if self.proc.stdout else None
        self.port = 0

    def wait_listening(self, timeout: float = 20.0) -> int:
        """Wait for the ``... listening on http://HOST:PORT`` line; return the port."""
        assert self.reader is not None
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                line = self.reader.readline(deadline - time.monotonic(), self.name)
                if match := LISTENING.search(line):
                    self.port = int(match.group(2))
                    return self.port
        except ChildError as exc:
            raise ChildError(f"{exc}; its log ends: {self.log_tail()}") from None
        raise ChildError(f"{self.name}: not listening within {timeout:.0f} s: {self.log_tail()}")

    def log_tail(self, size: int = 600) -> str:
        self._log.flush()
        return self.log_path.read_bytes()[-size:].decode(errors="replace").strip()

    def processes(self) -> list[psutil.Process]:
        try:
            main = psutil.Process(self.proc.pid)
            return [main, *main.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_s(self) -> float:
        """CPU seconds (user + system) of the process and its children (nginx's worker)."""
        return sum(process_cpu_s(p) for p in self.processes())

    def rss(self) -> int:
        return sum(p.memory_info().rss for p in self.processes())

    def num_fds(self) -> int:
        return sum(p.num_fds() for p in self.processes())

    def stop(self, grace: float = 5.0) -> None:
        if self.proc.poll() is None:
            _signal_group(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                _signal_group(self.proc.pid, signal.SIGKILL)
                self.proc.wait(grace)
        # A group member may outlive its leader (nginx's worker): make sure none is left.
        _signal_group(self.proc.pid, signal.SIGKILL)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe:
                pipe.close()
        self._log.close()


def process_cpu_s(process: psutil.Process) -> float:
    """A process's CPU time in nanosecond resolution where Linux allows it: its process CPU-time
    clock (``MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)``); else psutil's, in clock ticks."""
    try:
        return time.clock_gettime(((~process.pid) << 3) | 2)
    except OSError:
        pass
    try:
        times = process.cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return float(times.user + times.system)


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)


class Client(Child):
    """A load client (bench/client.py, or the fan-out readers of bench/fanout_client.py): one
    JSON job in, one JSON result out. ``send`` and ``receive`` apart let several clients work
    on their jobs at once."""

    def __init__(self, logdir: Path, module: str = "bench.client", name: str = "client") -> None:
        super().__init__(name, [sys.executable, "-m", module], logdir, stdin=True)
        self._timeout = 0.0

    def wait_ready(self) -> None:
        assert self.reader is not None
        if (line := self.reader.readline(20, self.name)) != "client: ready":
            raise ChildError(f"{self.name}: unexpected first line {line!r}")

    def send(self, job: dict[str, Any], timeout: float) -> None:
        assert self.proc.stdin is not None
        self._timeout = timeout
        self.proc.stdin.write(orjson.dumps({**job, "timeout": timeout}) + b"\n")
        self.proc.stdin.flush()

    def receive(self) -> dict[str, Any]:
        assert self.reader is not None
        result: dict[str, Any] = orjson.loads(self.reader.readline(self._timeout + 30, self.name))
        return result

    def run(self, job: dict[str, Any], timeout: float) -> dict[str, Any]:
        self.send(job, timeout)
        return self.receive()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float, child: Child) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise ChildError(f"{child.name} exited with status {child.proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise ChildError(f"{child.name}: port {port} not accepting within {timeout:.0f} s")


def gateway_config(path: Path, upstream_port: int, idle_heartbeat: float) -> None:
    """The gateway's routes: data: line, JSON Pointers, and an idle route with heartbeats."""
    upstream = f"http://127.0.0.1:{upstream_port}/stream"
    path.write_text(
        f"""server: {{host: 127.0.0.1, port: 0, demo: false}}
routes:
  - path: /line
    upstream: {upstream}
    events: {{data: line}}
  - path: /pointer
    upstream: {upstream}
    events: {{data: /message/content, event_from: /model}}
  - path: /idle
    upstream: {upstream}
    events: {{data: line, heartbeat: {idle_heartbeat}}}
    timeouts: {{read: 900}}
"""
    )


#: How to add the nginx party; the bench never installs anything itself.
NGINX_INSTALL: Final = "sudo apt-get install nginx"


def find_nginx() -> str | None:
    """nginx's binary, or None when it is not installed."""
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def nginx_config(prefix: Path, port: int, upstream_port: int, nofile: int) -> Path:
    """A self-contained nginx.conf: every path in ``prefix``, one worker, no buffering."""
    user = "user root root;\n" if os.geteuid() == 0 else ""
    temp = "\n".join(
        f"  {kind}_temp_path {prefix}/{kind}_temp;"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"""{user}daemon off;
worker_processes 1;
worker_rlimit_nofile {nofile};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections {max(1024, nofile - 100)}; }}
http {{
  access_log off;
{temp}
  upstream bench_upstream {{
    server 127.0.0.1:{upstream_port};
    keepalive 1024;
  }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      proxy_pass http://bench_upstream;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_buffer_size 64k;  # the most it reads from the upstream at a time, unbuffered
      proxy_buffers 8 64k;
      proxy_busy_buffers_size 128k;
      proxy_read_timeout 900s;
    }}
  }}
}}
"""
    )
    return conf
