"""Paths: the ones the gateway serves itself, and the ``{name}`` placeholders of route templates.

Pure and small, so the configuration (which refuses a route on a reserved path) and the request
builder (which fills the placeholders) share one definition without importing each other.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = [
    "CONSOLE_PATH",
    "DEMO_PATHS",
    "HEALTH_PATH",
    "METRICS_PATH",
    "PLACEHOLDER",
    "READY_PATH",
    "placeholder_names",
]

HEALTH_PATH: Final = "/healthz"
READY_PATH: Final = "/readyz"
METRICS_PATH: Final = "/metrics"
CONSOLE_PATH: Final = "/_console"
DEMO_PATHS: Final = ("/", "/demo/api/chat")
"""The demo page and the built-in demo upstream."""

# aiohttp's {name} or {name:regex}; group 1 is the name, group 2 the regex.
PLACEHOLDER: Final = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([^{}]*(?:\{[^{}]*\}[^{}]*)*))?\}")


def placeholder_names(template: str) -> list[str]:
    return [match.group(1) for match in PLACEHOLDER.finditer(template)]
