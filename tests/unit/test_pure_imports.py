"""The pure core is pure in its imports too: fuzzers, benchmarks and other tools that import it
do not pay for the server (aiohttp, pydantic, YAML, the JWT and metrics libraries, OpenTelemetry)."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("aiohttp", "pydantic", "yaml", "jwt", "prometheus_client", "redis", "opentelemetry")


@pytest.mark.parametrize(
    "module",
    [
        "proxy.framing",
        "proxy.sse",
        "proxy.pointer",
        "proxy.convert",
        "proxy.decoders",
        "proxy.tracecontext",
        "proxy",
    ],
)
def test_importing_a_pure_module_loads_no_server_library(module):
    probe = (
        f"import sys, {module}\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_the_public_names_still_load_on_first_use():
    import proxy

    assert proxy.parse_config("routes: []").routes == []
    with pytest.raises(AttributeError):
        proxy.no_such_name  # noqa: B018
