"""The docs' snippets, found by their markers and run in a page as a reader would paste them.

A snippet is the fenced block on the line right after a marker ``<!-- snippet: NAME -->``, in
README.md or a page under docs/. Finding one is strict: a missing marker, a marker not followed by a
fence in the expected language, an unclosed fence or a name used twice (in one page or across
pages) is a :class:`SnippetError`, so an edit that breaks a page's structure fails the tests
instead of quietly testing less.

In the page, the snippet runs untouched as a classic ``<script>``. Before it, a prelude defines the
free names the docs' prose explains (``output``, and ``GATEWAY`` for a cross-origin page) and
wraps ``EventSource`` to record, not change: every source created and every ``close()`` call, with
the type of the event being dispatched when the page called it (``window.event``). The tests read
that record, the ``output`` text and the page's uncaught errors; they decide, the page only records.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.support import ROOT

__all__ = [
    "Snippet",
    "SnippetError",
    "SnippetPage",
    "extract_snippets",
    "find_snippet",
    "pages",
    "readme_route",
    "snippet",
]

WAIT_MS = 15_000

_MARKER = re.compile(r"<!--\s*snippet:\s*(?P<name>\S+)\s*-->")
_FENCE_OPEN = re.compile(r"```(?P<lang>[\w-]+)")


class SnippetError(Exception):
    """A page does not hold a snippet the way the tests expect it."""


@dataclass(frozen=True)
class Snippet:
    name: str
    lang: str
    code: str
    line: int  # of the marker, 1-based
    page: str = ""  # relative to the root, e.g. docs/browser.md

    @property
    def where(self) -> str:
        return f"{self.page} line {self.line}" if self.page else f"line {self.line}"


def pages() -> list[Path]:
    """The pages that may hold snippets: README.md and every page under docs/."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def extract_snippets(text: str, page: str = "") -> dict[str, Snippet]:
    """Every marked snippet of ``text`` (one page, named ``page`` in errors), by name."""
    lines = text.splitlines()
    found: dict[str, Snippet] = {}
    for index, line in enumerate(lines):
        at = f"{page} line {index + 1}" if page else f"line {index + 1}"
        marker = _MARKER.fullmatch(line.strip())
        if marker is None:
            if "<!-- snippet" in line:
                raise SnippetError(f"{at}: malformed snippet marker {line.strip()!r}")
            continue
        name = marker["name"]
        where = f"{at}: snippet {name!r}"
        if name in found:
            raise SnippetError(f"{where}: marked twice (first on line {found[name].line})")
        fence = _FENCE_OPEN.fullmatch(lines[index + 1]) if index + 1 < len(lines) else None
        if fence is None:
            raise SnippetError(f"{where}: the marker is not followed by a fenced code block")
        try:
            end = lines.index("```", index + 2)
        except ValueError:
            raise SnippetError(f"{where}: its code block is never closed") from None
        code = "\n".join(lines[index + 2 : end]) + "\n"
        found[name] = Snippet(name, fence["lang"], code, index + 1, page)
    return found


def _all_snippets() -> dict[str, Snippet]:
    found: dict[str, Snippet] = {}
    for path in pages():
        page = path.relative_to(ROOT).as_posix()
        for name, found_here in extract_snippets(path.read_text(encoding="utf-8"), page).items():
            if name in found:
                raise SnippetError(
                    f"{found_here.where}: snippet {name!r} marked twice"
                    f" (first in {found[name].where})"
                )
            found[name] = found_here
    return found


def find_snippet(name: str, lang: str = "js", text: str | None = None) -> Snippet:
    """The snippet ``name`` of the pages (or of ``text``), which must be a ``lang`` block."""
    snippets = _all_snippets() if text is None else extract_snippets(text)
    if name not in snippets:
        raise SnippetError(f"no <!-- snippet: {name} --> marker in README.md or docs/")
    found = snippets[name]
    if found.lang != lang:
        raise SnippetError(
            f"{found.where}: snippet {name!r} is a {found.lang!r} block, not {lang!r}"
        )
    if not found.code.strip():
        raise SnippetError(f"{found.where}: snippet {name!r} is empty")
    return found


def snippet(name: str, lang: str = "js", text: str | None = None) -> str:
    """The code of the snippet ``name``, which must be a ``lang`` block."""
    return find_snippet(name, lang, text).code


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def readme_route(name: str, upstream: str, **changes: Any) -> dict[str, Any]:
    """The one route of the YAML snippet ``name``, pointed at ``upstream``, with ``changes``
    merged in deeply (a list or scalar replaces the snippet's)."""
    (route,) = yaml.safe_load(snippet(name, "yaml"))["routes"]
    return _merge(route, {"upstream": upstream, **changes})


# -- the upstream's side ---------------------------------------------------------------------------


# -- the page's side -------------------------------------------------------------------------------

# A classic script: its top-level `const`s are global bindings the snippet's script sees.
_PRELUDE_JS = """
const output = document.body.appendChild(document.createElement("pre"));
output.id = "output";
window.snippetLog = { sources: [], closed: [] };
{
  const NativeEventSource = window.EventSource;
  const nativeClose = NativeEventSource.prototype.close;
  NativeEventSource.prototype.close = function () {
    snippetLog.closed.push({
      url: this.url,
      readyState: this.readyState,
      during: window.event ? window.event.type : null,
      output: output.textContent,
    });
    return nativeClose.call(this);
  };
  window.EventSource = class EventSource extends NativeEventSource {
    constructor(...args) {
      super(...args);
      snippetLog.sources.push(this);
    }
  };
}
"""


@dataclass
class SnippetPage:
    """A Chromium page set up for the snippets: ``output``, ``GATEWAY`` if given, the record."""

    page: Any
    errors: list[str] = field(default_factory=list)

    @classmethod
    async def open(cls, browser: Any, url: str, *, gateway: str | None = None) -> SnippetPage:
        page = await browser.new_page()
        page.set_default_timeout(WAIT_MS)
        opened = cls(page)
        page.on("pageerror", lambda error: opened.errors.append(str(error)))
        await page.goto(url)
        prelude = _PRELUDE_JS
        if gateway is not None:
            prelude = f"const GATEWAY = {json.dumps(gateway)};\n{prelude}"
        await page.add_script_tag(content=prelude)
        return opened

    async def run(self, code: str) -> None:
        await self.page.add_script_tag(content=code)

    async def wait_for(self, condition: str) -> None:
        """Wait until the JS expression ``condition`` holds (it may use ``output`` and
        ``snippetLog``); on a timeout, say what the page showed."""
        from playwright.async_api import TimeoutError as PlaywrightTimeout

        try:
            await self.page.wait_for_function(f"() => ({condition})", polling=20, timeout=WAIT_MS)
        except PlaywrightTimeout as exc:
            shown = await self.output()
            raise AssertionError(
                f"the page never got to {condition}: output {shown!r}, page errors {self.errors}"
            ) from exc

    async def output(self) -> str:
        return await self.page.evaluate("() => output.textContent")

    async def closed(self) -> list[dict[str, Any]]:
        """Every ``EventSource.close()`` the page made: url, readyState, during, output."""
        return await self.page.evaluate("() => snippetLog.closed")

    async def sources(self) -> list[dict[str, Any]]:
        """Every ``EventSource`` the page created: url, withCredentials, readyState now."""
        return await self.page.evaluate(
            "() => snippetLog.sources.map((s) => "
            "({url: s.url, withCredentials: s.withCredentials, readyState: s.readyState}))"
        )
