"""The Docker image, tested without building it (no container runtime here or in CI): the
Dockerfile is read as data (:mod:`tests.support.dockerfile`) and its ENTRYPOINT and CMD run as a
process, the way the container would run them: as the image's non-root USER, from a WORKDIR it
cannot write, with the config file read-only, then probed with the HEALTHCHECK's own command.

The stand-in for the image's ``/app`` is a temporary directory holding a copy of ``config.yaml``
and a ``.venv`` whose interpreter is this Python's (the same minor version as the image's) and
whose packages are this checkout's locked ones (a ``.pth`` adds the project venv's site-packages).
A venv of its own because, when the tests run as root, this venv's interpreter may live where
the image's user cannot reach it (``/root/.pyenv``); Debian's own ``python3.X`` stands in then.
"""

from __future__ import annotations

import asyncio
import fnmatch
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson
import pytest

from proxy.demo import demo_reply_tokens
from tests.support import ROOT
from tests.support.dockerfile import Dockerfile, parse_dockerfile
from tests.support.processes import running_gateway
from tests.support.sse import parse_events


@pytest.fixture(scope="module")
def image() -> Dockerfile:
    return parse_dockerfile(ROOT / "Dockerfile")


def test_the_image_copies_only_files_that_are_in_the_build_context(image):
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources = [source for copy in image.copies for source in copy.sources]
    assert sources, "the Dockerfile copies nothing"
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
        excluded = [pattern for pattern in ignored if fnmatch.fnmatch(source, pattern)]
        assert not excluded, f"COPY {source}: .dockerignore leaves it out ({excluded})"
    # The config the CMD names is one of them, copied into the WORKDIR.
    assert _option(image.cmd, "--config") == f"{image.workdir}/config.yaml"
    assert any("config.yaml" in copy.sources for copy in image.copies)


def test_the_image_installs_the_locked_dependencies_without_the_dev_group(image):
    syncs = [run for run in image.runs if "uv sync" in run]
    assert any(run.startswith("uv sync --locked --no-dev") for run in syncs), syncs
    assert all("--locked" in run and "--no-dev" in run for run in syncs), syncs
    # The lock reaches the image before the first sync reads it.
    steps = [(keyword, rest) for keyword, rest in image.instructions if keyword in ("COPY", "RUN")]
    first_sync = next(i for i, (keyword, rest) in enumerate(steps) if "uv sync" in rest)
    assert any("uv.lock" in shlex.split(rest) for _, rest in steps[:first_sync])
    # `uv sync` makes the project's venv in the WORKDIR: the ENTRYPOINT's interpreter.
    assert image.entrypoint == (f"{image.workdir}/.venv/bin/python", "-m", "proxy")


def test_the_image_user_is_numeric_and_not_root(image):
    uid, gid = _user(image)
    assert uid != 0
    assert gid != 0


def test_the_exposed_port_is_the_one_served_and_health_checked(image):
    assert image.expose == [8080]
    assert _option(image.cmd, "--port") == "8080"
    assert image.healthcheck is not None
    assert "http://127.0.0.1:8080/healthz" in image.healthcheck.command[-1]


@dataclass(frozen=True)
class StandIn:
    """The image's WORKDIR, its interpreter, and the user to run as (None: as this one)."""

    app: Path
    python: str
    user: tuple[int, int] | None
    env: dict[str, str]

    def replace_workdir(self, word: str, workdir: str) -> str:
        return str(self.app) + word[len(workdir) :] if word.startswith(workdir + "/") else word


@pytest.fixture
def stand_in(image) -> Iterator[StandIn]:
    # Not pytest's tmp_path: its parents are 0700 and the image's user must get through them.
    top = Path(tempfile.mkdtemp(prefix="image-"))
    top.chmod(0o755)
    app = top / "app"
    app.mkdir()
    user = _user(image) if os.geteuid() == 0 else None
    try:
        python = _venv_for(user, app / ".venv")
        config = app / "config.yaml"
        shutil.copyfile(ROOT / "config.yaml", config)
        # What `-v config.yaml:/app/config.yaml:ro` and a root-owned /app give the process.
        config.chmod(0o444)
        app.chmod(0o555)
        env = {"PATH": os.environ["PATH"], **image.env}
        yield StandIn(app, python, user, env)
    finally:
        app.chmod(0o755)
        shutil.rmtree(top)


async def test_the_image_command_serves_the_demo_in_production_as_a_non_root_user(image, stand_in):
    argv = [stand_in.replace_workdir(word, image.workdir) for word in image.argv()]
    python, m, module, *args = argv
    assert (python, m, module) == (stand_in.python, "-m", "proxy")
    # Only two words of the CMD change, both because this is a shared machine and not a
    # container: the config path (a copy in the stand-in WORKDIR, done by replace_workdir) and
    # the port, which could be taken here; 0 asks the kernel for a free one, which the gateway
    # announces, with no window between picking and binding. --host 0.0.0.0 and --mode
    # production are what this test is about and stay as they are.
    assert args.count("8080") == 1
    args[args.index("8080")] = "0"
    assert args == [
        "--config", f"{stand_in.app}/config.yaml",
        "--host", "0.0.0.0",
        "--port", "0",
        "--mode", "production",
    ]  # fmt: skip

    async with running_gateway(
        *args, python=python, cwd=stand_in.app, env=stand_in.env, user=stand_in.user
    ) as gateway:
        port = int(gateway.base.rsplit(":", 1)[1])
        assert gateway.base == f"http://0.0.0.0:{port}"
        uids, gids, groups = _identity(gateway.process.pid)
        assert 0 not in uids, uids
        assert 0 not in gids, gids
        assert groups == []
        if stand_in.user is not None:
            assert (uids[0], gids[0]) == stand_in.user

        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/healthz") as response:
                assert response.status == 200
                assert (await response.json())["status"] == "ok"
            assert await _healthcheck(image, stand_in, port) == 0

            # Production: no stream console, one JSON line per stream on stdout.
            async with session.get(f"{base}/_console") as response:
                assert response.status == 404
            assert "stream console" not in gateway.stdout

            body = orjson.dumps({"messages": [{"content": "image"}], "options": {"delay_ms": 0}})
            async with session.get(f"{base}/v1/chat", params={"body": body.decode()}) as response:
                assert response.status == 200
                assert response.content_type == "text/event-stream"
                events = parse_events(await response.read())
        tokens = "".join(e.data for e in events if e.event == "message")
        assert tokens == "".join(demo_reply_tokens("image"))
        assert events[-1].event == "end"

        line = (await gateway.wait_for(r'^\{.*"path":"/v1/chat".*\}$')).group(0)
        record = orjson.loads(line)
        assert (record["logger"], record["status"], record["ended"]) == ("proxy.access", 200, "eof")

    # running_gateway has stopped it (exit 0, nothing on stderr): now the check must fail.
    assert await _healthcheck(image, stand_in, port) != 0


def _option(words: tuple[str, ...] | list[str], name: str) -> str:
    return words[words.index(name) + 1]


def _user(image: Dockerfile) -> tuple[int, int]:
    uid, _, gid = image.user.partition(":")
    assert uid.isdigit(), f"USER {image.user}: not a numeric uid"
    assert gid.isdigit(), f"USER {image.user}: not uid:gid"
    return int(uid), int(gid)


def _as(user: tuple[int, int] | None) -> dict[str, object]:
    return {} if user is None else {"user": user[0], "group": user[1], "extra_groups": []}


def _venv_for(user: tuple[int, int] | None, venv: Path) -> str:
    """A venv at ``venv`` with this checkout's packages, on an interpreter ``user`` can run;
    skips when this machine has none."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [Path(sys.base_prefix) / "bin" / version, Path("/usr/local/bin", version)]
    candidates.append(Path("/usr/bin", version))
    runnable = [path for path in candidates if path.exists() and _runs(path, user)]
    if not runnable:
        pytest.skip(f"no {version} that uid:gid {user} may run (tried {candidates})")
    subprocess.run([runnable[0], "-m", "venv", "--without-pip", venv], check=True, timeout=60)
    site_packages = Path(sysconfig.get_path("purelib", vars={"base": str(venv)}))
    # addsitedir, not a bare path: it also reads that directory's .pth (the editable project).
    (site_packages / "_checkout.pth").write_text(
        f"import site; site.addsitedir({sysconfig.get_path('purelib')!r})\n"
    )
    python = str(venv / "bin" / "python")
    probe = subprocess.run(
        [python, "-c", "import proxy"], capture_output=True, text=True, timeout=30, **_as(user)
    )
    if probe.returncode != 0:
        pytest.skip(f"uid:gid {user} cannot import this checkout's packages: {probe.stderr}")
    return python


def _runs(python: Path, user: tuple[int, int] | None) -> bool:
    try:
        return (
            subprocess.run([python, "-c", ""], check=False, timeout=30, **_as(user)).returncode == 0
        )
    except PermissionError:  # a directory on the way is closed to that user
        return False


async def _healthcheck(image: Dockerfile, stand_in: StandIn, port: int) -> int:
    """The HEALTHCHECK's exit status, run as Docker runs it: as the image's user, within its
    --timeout; `python` is the stand-in venv's and the port the one the gateway took."""
    assert image.healthcheck is not None
    program, *args = image.healthcheck.command
    assert program == "python"
    assert args[-1].count(":8080/") == 1
    args[-1] = args[-1].replace(":8080/", f":{port}/")
    process = await asyncio.create_subprocess_exec(
        stand_in.python,
        *args,
        cwd=stand_in.app,
        env=stand_in.env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        **_as(stand_in.user),
    )
    timeout = float(image.healthcheck.options["timeout"].removesuffix("s"))
    try:
        return await asyncio.wait_for(process.wait(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(
            f"the HEALTHCHECK took longer than its --timeout {timeout} s"
        ) from None


def _identity(pid: int) -> tuple[list[int], list[int], list[int]]:
    """Real, effective, saved and filesystem uids and gids, and supplementary groups, of ``pid``."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = {name: value.split() for name, _, value in (line.partition(":") for line in status)}
    return tuple([int(n) for n in fields[key]] for key in ("Uid", "Gid", "Groups"))
