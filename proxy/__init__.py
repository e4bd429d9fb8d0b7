"""An NDJSON-to-SSE streaming gateway: browsers' EventSource in front, NDJSON backends behind.

The public names load on first use (PEP 562), so ``import proxy.framing`` (or ``sse``,
``pointer``, ``convert``) costs only that pure module: no aiohttp, pydantic or YAML.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app, make_runner
    from .config import GatewayConfig, load_config, parse_config
    from .errors import ConfigError, GatewayError

__all__ = [
    "ConfigError",
    "GatewayConfig",
    "GatewayError",
    "create_app",
    "load_config",
    "make_runner",
    "parse_config",
]
__version__ = "0.1.0"

_HOMES = {
    "ConfigError": ".errors",
    "GatewayError": ".errors",
    "GatewayConfig": ".config",
    "load_config": ".config",
    "parse_config": ".config",
    "create_app": ".app",
    "make_runner": ".app",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'proxy' has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value
    return value
