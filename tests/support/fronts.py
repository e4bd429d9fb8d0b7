"""HTTP/2 fronts on loopback: nginx and Caddy, each run from its file in ``examples/``.

Strategy: a test runs the example as shipped, with only its deployment values replaced (listen
port, gateway address, certificate, pid and log paths). Each replacement names the exact text it
replaces and that text must be in the example exactly once, so an edit to the example that a
test would no longer see fails here instead of silently testing something else. The certificate
is self-signed for 127.0.0.1, made at test time. A front runs in its own process group (nginx has
workers) and :meth:`Front.stop` always ends it: SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import os
import shutil
import signal
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support import ROOT

__all__ = ["FRONTS", "Front", "self_signed_certificate"]

EXAMPLES = ROOT / "examples"


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """``(cert.pem, key.pem)`` in ``directory``: a P-256 key and a certificate for 127.0.0.1 and
    localhost, valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def substituted(example: str, replacements: Mapping[str, str]) -> str:
    """``examples/<example>`` with each key replaced by its value; every key must occur in the
    file exactly once."""
    text = (EXAMPLES / example).read_text(encoding="utf-8")
    for old, new in replacements.items():
        count = text.count(old)
        assert count == 1, f"examples/{example}: {old!r} occurs {count} times, expected once"
        text = text.replace(old, new)
    return text


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Front:
    """A running front: ``base`` is its ``https://127.0.0.1:PORT``."""

    name: str
    process: asyncio.subprocess.Process
    port: int
    log: Path

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def log_tail(self, size: int = 2000) -> str:
        try:
            return self.log.read_bytes()[-size:].decode(errors="replace")
        except FileNotFoundError:
            return "(no log)"

    async def wait_accepting(self, within: float = 20.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            if self.process.returncode is not None:
                raise AssertionError(
                    f"{self.name} exited ({self.process.returncode}): {self.log_tail()}"
                )
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                if loop.time() > deadline:
                    raise AssertionError(
                        f"{self.name}: port {self.port} not accepting within {within} s: "
                        f"{self.log_tail()}"
                    ) from None
                await asyncio.sleep(0.05)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return

    async def stop(self) -> None:
        if self.process.returncode is None:
            _signal_group(self.process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 5)
            except TimeoutError:
                _signal_group(self.process.pid, signal.SIGKILL)
                await self.process.wait()
        # A group member may outlive its leader (nginx's worker): make sure none is left.
        _signal_group(self.process.pid, signal.SIGKILL)


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


async def _start(name: str, argv: list[str], log: Path, env: Mapping[str, str], port: int) -> Front:
    with log.open("ab") as output:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            env=dict(env),
            start_new_session=True,  # its own process group, stopped as one
        )
    front = Front(name, process, port, log)
    try:
        await front.wait_accepting()
    except BaseException:
        await front.stop()
        raise
    return front


async def start_nginx(
    binary: str,
    directory: Path,
    gateway: str,
    cert: Path,
    key: Path,
    changes: Mapping[str, str] | None = None,
) -> Front:
    """``examples/nginx-http2.conf`` in front of ``gateway`` (``http://127.0.0.1:PORT``), as
    ``nginx -p DIR -c nginx.conf -g 'daemon off;'`` with everything it writes in ``directory``;
    ``changes`` are further replacements (a test of what a wrong line would do)."""
    port = free_port()
    gateway_address = gateway.removeprefix("http://")
    # Temporary files under the prefix, so a user who may not write nginx's compiled-in
    # /var/lib/nginx can run it; as root, workers stay root to reach them inside pytest's tmp.
    temp = "".join(
        f"    {kind}_temp_path {directory}/{kind}_temp;\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    text = substituted(
        "nginx-http2.conf",
        {
            "worker_processes auto;": ("user root root;\n" if os.geteuid() == 0 else "")
            + "worker_processes 1;",
            "pid /run/nginx-sse.pid;": f"pid {directory}/nginx.pid;",
            "error_log /var/log/nginx/sse-error.log warn;": f"error_log {directory}/error.log info;",
            "access_log /var/log/nginx/sse-access.log;": f"access_log {directory}/access.log;\n"
            + temp,
            "server 127.0.0.1:8080;": f"server {gateway_address};",
            "listen 443 ssl http2;": f"listen 127.0.0.1:{port} ssl http2;",
            "ssl_certificate /etc/ssl/certs/sse.example.com.pem;": f"ssl_certificate {cert};",
            "ssl_certificate_key /etc/ssl/private/sse.example.com.key;": (
                f"ssl_certificate_key {key};"
            ),
            **(changes or {}),
        },
    )
    conf = directory / "nginx.conf"
    conf.write_text(text, encoding="utf-8")
    argv = [binary, "-p", str(directory), "-c", str(conf), "-e", str(directory / "error.log")]
    argv += ["-g", "daemon off;"]
    return await _start("nginx", argv, directory / "error.log", os.environ, port)


async def start_caddy(
    binary: str,
    directory: Path,
    gateway: str,
    cert: Path,
    key: Path,
    changes: Mapping[str, str] | None = None,
) -> Front:
    """``examples/Caddyfile`` in front of ``gateway``, as ``caddy run``, with its data and
    configuration directories in ``directory``, no admin endpoint and no port-80 redirect."""
    port = free_port()
    text = substituted(
        "Caddyfile",
        {
            "\tgrace_period 30s\n": "\tgrace_period 1s\n\tadmin off\n"
            "\tauto_https disable_redirects\n",
            "sse.example.com {": f"https://127.0.0.1:{port} {{",
            "\ttls internal\n": f"\ttls {cert} {key}\n",
            "reverse_proxy 127.0.0.1:8080 {": f"reverse_proxy {gateway.removeprefix('http://')} {{",
            **(changes or {}),
        },
    )
    caddyfile = directory / "Caddyfile"
    caddyfile.write_text(text, encoding="utf-8")
    env = {
        **os.environ,
        "HOME": str(directory),
        "XDG_DATA_HOME": str(directory / "data"),
        "XDG_CONFIG_HOME": str(directory / "config"),
    }
    argv = [binary, "run", "--config", str(caddyfile), "--adapter", "caddyfile"]
    return await _start("caddy", argv, directory / "caddy.log", env, port)


def _nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


StartFront = Callable[[str, Path, str, Path, Path, Mapping[str, str] | None], Awaitable[Front]]

#: Each front: how to find its binary, and how to start it.
FRONTS: dict[str, tuple[Callable[[], str | None], StartFront]] = {
    "nginx": (_nginx_binary, start_nginx),
    "caddy": (lambda: shutil.which("caddy"), start_caddy),
}
