"""The configuration: one typed model (:mod:`.models`), loaded and validated once at start-up
(:mod:`.loading`)."""

from __future__ import annotations

from .loading import load_config, parse_config, upstream_config
from .models import (
    AuthConfig,
    BodyConfig,
    CorsConfig,
    EventsConfig,
    Framing,
    GatewayConfig,
    JwtConfig,
    LimitsConfig,
    ResumeConfig,
    RouteConfig,
    ServerConfig,
    StreamsConfig,
    TimeoutsConfig,
    UsageConfig,
)

__all__ = [
    "AuthConfig",
    "BodyConfig",
    "CorsConfig",
    "EventsConfig",
    "Framing",
    "GatewayConfig",
    "JwtConfig",
    "LimitsConfig",
    "ResumeConfig",
    "RouteConfig",
    "ServerConfig",
    "StreamsConfig",
    "TimeoutsConfig",
    "UsageConfig",
    "load_config",
    "parse_config",
    "upstream_config",
]
