"""An NDJSON-to-SSE streaming gateway: browsers' EventSource in front, NDJSON backends behind."""

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
