"""The machine's tools that some tests drive: Debian's Chromium, Node with the npm packages
pinned in tests/node, redis-server; and what a missing one does to a run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "NODE_DIR", "require"]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
NODE_DIR = Path(__file__).resolve().parents[1] / "node"


def require(condition: bool, why: str) -> None:
    """Missing tools skip a developer's run with the fix in the message, but fail CI, where
    .ci/run installs them: a green CI never hides an unrun browser or Node test."""
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(why)
    pytest.skip(why)
