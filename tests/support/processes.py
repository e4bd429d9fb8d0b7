"""The one launcher of real ``python -m proxy`` processes: one that serves, whose output a test
can wait on while it runs, or one that runs to its end (``--check-config``, a bad config).

stdout is read as it comes (from a pipe, or from the master side of a pseudo-terminal when the
test needs the gateway to see a TTY), so a test can wait for the log line a stream writes at its
end instead of sleeping; stderr is collected the same way, so neither pipe can fill and block the
gateway. :meth:`GatewayProcess.stop` always ends the process: SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from tests.support import ROOT

__all__ = ["GatewayProcess", "run_cli", "running_gateway", "start_gateway_process"]

# "(2 routes)", "(1 route)" as well, and with --workers the supervisor's "(2 routes, 2 workers)".
LISTENING = re.compile(r"proxy: listening on (http://\S+) \((\d+) routes?\b")


class GatewayProcess:
    def __init__(self, process: asyncio.subprocess.Process, tty_master: int | None) -> None:
        self.process = process
        self.base = ""
        self.routes = 0
        self._stdout = bytearray()
        self._stderr = bytearray()
        self._more = asyncio.Event()
        self._tty_master = tty_master
        self._readers: list[asyncio.Task[None]] = []
        assert process.stderr is not None
        self._readers.append(asyncio.create_task(self._pump(process.stderr, self._stderr)))
        if tty_master is None:
            assert process.stdout is not None
            self._readers.append(asyncio.create_task(self._pump(process.stdout, self._stdout)))
        else:
            os.set_blocking(tty_master, False)
            asyncio.get_running_loop().add_reader(tty_master, self._read_tty)

    @property
    def stdout(self) -> str:
        return self._text("stdout")

    @property
    def stderr(self) -> str:
        return self._text("stderr")

    def _text(self, stream: str) -> str:
        output = {"stdout": self._stdout, "stderr": self._stderr}[stream]
        return output.decode("utf-8", "replace")

    async def wait_for(
        self, pattern: str, within: float = 10, *, stream: str = "stdout"
    ) -> re.Match[str]:
        """The first match of ``pattern`` (a regex, multiline) in ``stream`` (``"stdout"`` or
        ``"stderr"``), once it is there (within ``within`` seconds)."""
        regex = re.compile(pattern, re.MULTILINE)
        try:
            return await asyncio.wait_for(self._search(regex, stream), within)
        except TimeoutError:
            raise AssertionError(
                f"no {pattern!r} within {within} s\nstdout: {self.stdout}\nstderr: {self.stderr}"
            ) from None

    async def _search(self, regex: re.Pattern[str], stream: str) -> re.Match[str]:
        while (match := regex.search(self._text(stream))) is None:
            if self.process.returncode is not None and all(t.done() for t in self._readers):
                if self._tty_master is not None:
                    self._read_tty()
                if (match := regex.search(self._text(stream))) is not None:
                    return match
                raise AssertionError(
                    f"the gateway exited ({self.process.returncode}) without printing "
                    f"{regex.pattern!r}\nstdout: {self.stdout}\nstderr: {self.stderr}"
                )
            self._more.clear()
            # Woken by new output; the timeout notices an exit that printed nothing more.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._more.wait(), 0.2)
        return match

    async def stop(self) -> int:
        """SIGTERM, SIGKILL if that was not enough within 10 s; the exit status. Everything the
        process printed is in :attr:`stdout` and :attr:`stderr` afterwards."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            status = await asyncio.wait_for(self.process.wait(), 10)
        except TimeoutError:
            self.process.kill()
            status = await self.process.wait()
        if self._readers:
            await asyncio.wait(self._readers, timeout=5)
        if self._tty_master is not None:
            self._read_tty()  # what was written just before the exit
            asyncio.get_running_loop().remove_reader(self._tty_master)
            os.close(self._tty_master)
            self._tty_master = None
        return status

    async def _pump(self, stream: asyncio.StreamReader, into: bytearray) -> None:
        while chunk := await stream.read(65536):
            into += chunk
            self._more.set()
        self._more.set()

    def _read_tty(self) -> None:
        assert self._tty_master is not None
        while True:
            try:
                chunk = os.read(self._tty_master, 65536)
            except (BlockingIOError, OSError):  # EIO: the slave side is closed
                return
            if not chunk:
                return
            # A terminal turns "\n" into "\r\n"; tests read lines.
            self._stdout += chunk.replace(b"\r\n", b"\n")
            self._more.set()


async def start_gateway_process(
    *args: str,
    tty: bool = False,
    python: str = sys.executable,
    cwd: Path = ROOT,
    env: Mapping[str, str] | None = None,
    user: tuple[int, int] | None = None,
) -> GatewayProcess:
    """``python -m proxy *args`` from the repository root, once it says where it listens (its
    stdout a pseudo-terminal with ``tty``). The caller stops it, in a ``finally``.

    The image's test runs it as the container would: another ``python`` and ``cwd``, only the
    image's ``env``, and as ``user`` (uid, gid; no supplementary groups), which needs root."""
    master = slave = None
    if tty:
        master, slave = pty.openpty()
    as_user = {} if user is None else {"user": user[0], "group": user[1], "extra_groups": []}
    process = await asyncio.create_subprocess_exec(
        python,
        "-m",
        "proxy",
        *args,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=slave if slave is not None else asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        **as_user,
    )
    if slave is not None:
        os.close(slave)  # the child holds its own copy
    gateway = GatewayProcess(process, master)
    try:
        match = await gateway.wait_for(LISTENING.pattern, 15)
    except BaseException:
        await gateway.stop()
        raise
    gateway.base, gateway.routes = match.group(1), int(match.group(2))
    return gateway


@contextlib.asynccontextmanager
async def running_gateway(
    *args: str, tty: bool = False, **launch: Any
) -> AsyncIterator[GatewayProcess]:
    """``async with running_gateway(...) as gateway``: started (``launch``: the keywords of
    :func:`start_gateway_process`), and stopped on the way out, where a body that raised nothing
    also checks that the gateway exited cleanly."""
    gateway = await start_gateway_process(*args, tty=tty, **launch)
    try:
        yield gateway
    except BaseException:
        await gateway.stop()
        raise
    status = await gateway.stop()
    # A clean run ends cleanly: exit status 0 on SIGTERM, and no traceback or warning on stderr.
    assert (status, gateway.stderr) == (0, ""), f"exit status {status}, stderr: {gateway.stderr}"


def run_cli(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m proxy *args`` from the repository root, run to its end (30 s at most), with
    ``env`` (this process's environment by default) and Python's warnings silenced."""
    return subprocess.run(
        [sys.executable, "-m", "proxy", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env={**(os.environ if env is None else env), "PYTHONWARNINGS": "ignore"},
    )
