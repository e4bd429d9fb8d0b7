"""The Dockerfile read as data, so a test can run what the image would run without building it.

Strategy: only what this repository's Dockerfile uses. Lines are joined at a trailing ``\\``,
comment lines dropped, and each instruction split into its keyword and the rest; the exec form
(a JSON array) is decoded with ``json``, and ``ENV`` pairs with ``shlex``. Anything else a test
needs stays as text in :attr:`Dockerfile.instructions`. An instruction the image relies on that is
missing or in shell form is an error here, not a silently different command in the test.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Copy", "Dockerfile", "Healthcheck", "parse_dockerfile"]


@dataclass(frozen=True, slots=True)
class Copy:
    sources: tuple[str, ...]
    destination: str


@dataclass(frozen=True, slots=True)
class Healthcheck:
    options: dict[str, str]  # "interval": "30s", ...
    command: tuple[str, ...]


@dataclass(slots=True)
class Dockerfile:
    instructions: list[tuple[str, str]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    copies: list[Copy] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    expose: list[int] = field(default_factory=list)
    workdir: str = "/"
    user: str = "root"
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    healthcheck: Healthcheck | None = None

    def argv(self) -> list[str]:
        """What the container runs when started with no arguments: ENTRYPOINT + CMD."""
        return [*self.entrypoint, *self.cmd]


def parse_dockerfile(path: Path) -> Dockerfile:
    image = Dockerfile()
    for keyword, rest in _instructions(path.read_text()):
        image.instructions.append((keyword, rest))
        if keyword == "ENV":
            for pair in shlex.split(rest):
                name, _, value = pair.partition("=")
                image.env[name] = value
        elif keyword == "COPY":
            *sources, destination = shlex.split(rest)
            image.copies.append(Copy(tuple(sources), destination))
        elif keyword == "RUN":
            image.runs.append(rest)
        elif keyword == "EXPOSE":
            image.expose.extend(int(port.split("/")[0]) for port in rest.split())
        elif keyword == "WORKDIR":
            image.workdir = rest
        elif keyword == "USER":
            image.user = rest
        elif keyword == "ENTRYPOINT":
            image.entrypoint = _exec_form(keyword, rest)
        elif keyword == "CMD":
            image.cmd = _exec_form(keyword, rest)
        elif keyword == "HEALTHCHECK":
            image.healthcheck = _healthcheck(rest)
    return image


def _instructions(text: str) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue  # comments may sit between continued lines, too
        if stripped.endswith("\\"):
            pending += stripped[:-1].strip() + " "
            continue
        keyword, _, rest = (pending + stripped).partition(" ")
        found.append((keyword.upper(), rest.strip()))
        pending = ""
    assert not pending, f"the Dockerfile ends inside a continued line: {pending!r}"
    return found


def _exec_form(keyword: str, rest: str) -> tuple[str, ...]:
    assert rest.startswith("["), f"{keyword} is in shell form; the tests expect exec form: {rest}"
    words = json.loads(rest)
    assert all(isinstance(word, str) for word in words), rest
    return tuple(words)


def _healthcheck(rest: str) -> Healthcheck:
    options: dict[str, str] = {}
    while rest.startswith("--"):
        option, _, rest = rest.partition(" ")
        name, _, value = option[2:].partition("=")
        options[name] = value
        rest = rest.lstrip()
    keyword, _, command = rest.partition(" ")
    assert keyword.upper() == "CMD", f"HEALTHCHECK without CMD: {rest}"
    return Healthcheck(options, _exec_form("HEALTHCHECK CMD", command.strip()))
