"""Loading the configuration: YAML, then the environment, then the models.

Three steps, each of which can fail with a :class:`ConfigError` whose one-line message names the
key (``routes[2].upstream: not a URL``):

1. YAML is parsed into plain data;
2. ``${VAR}`` / ``${VAR:-default}`` in any string value is replaced from the environment
   (``$$`` is a literal ``$``), so secrets stay out of the file;
3. pydantic validates the result into frozen models (:mod:`proxy.config.models`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import yaml
from pydantic import ValidationError

from proxy.errors import ConfigError

from .models import GatewayConfig, describe_error

__all__ = ["load_config", "parse_config", "upstream_config"]

_ENV_REFERENCE: Final = re.compile(r"\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\})")


def upstream_config(upstream: str, headers: Mapping[str, str] | None = None) -> GatewayConfig:
    """``--upstream URL``: a dev gateway with no file. ``/`` goes to the URL itself and ``/{tail}``
    to the same path under it, for GET (an EventSource, body from the query) and POST (JSON);
    every line becomes one event with the route defaults."""
    base, question, query = upstream.partition("?")
    common = {"headers": dict(headers or {}), "forward_headers": ["Authorization", "X-Request-Id"]}
    raw = {
        "server": {"mode": "dev"},
        "routes": [
            {"path": "/", "upstream": upstream, **common},
            {
                "path": "/{tail:.+}",
                "upstream": f"{base.rstrip('/')}/{{tail}}{question}{query}",
                **common,
            },
        ],
    }
    try:
        return GatewayConfig.model_validate(raw)
    except ValidationError as exc:
        message = re.sub(r" \(and \d+ more\)$", "", describe_error(exc).split(": ", 1)[-1])
        raise ConfigError(f"--upstream {upstream}: {message}") from None


def load_config(
    path: str | os.PathLike[str], environ: Mapping[str, str] | None = None
) -> GatewayConfig:
    """Read, expand and validate a YAML configuration file."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{source}: not UTF-8 text") from None
    try:
        return parse_config(text, environ, base=source.parent)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def parse_config(
    text: str, environ: Mapping[str, str] | None = None, base: Path | None = None
) -> GatewayConfig:
    """Validate a configuration's text; files it names (``body.schema``) are read relative to
    ``base`` (the configuration file's folder), else the current directory."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}invalid YAML: {problem}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("the top level must be a mapping with 'server' and 'routes'")
    expanded = _expand(raw, os.environ if environ is None else environ, "")
    try:
        return GatewayConfig.model_validate(expanded, context={"base": base or Path()})
    except ValidationError as exc:
        raise ConfigError(describe_error(exc)) from None


def _expand(value: Any, environ: Mapping[str, str], where: str) -> Any:
    if isinstance(value, str):
        return _expand_string(value, environ, where)
    if isinstance(value, dict):
        return {k: _expand(v, environ, _join(where, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, environ, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def _expand_string(text: str, environ: Mapping[str, str], where: str) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        value = environ.get(name)
        if value is None or (value == "" and default is not None):
            if default is None:
                raise ConfigError(f"{where}: environment variable {name} is not set")
            return default
        return value

    return _ENV_REFERENCE.sub(replace, text) if "$" in text else text


def _join(where: str, key: object) -> str:
    return f"{where}.{key}" if where else str(key)
