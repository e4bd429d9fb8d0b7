"""CORS per route, the pure decision: same-origin, the headers of an answer and of a preflight,
the config errors. Over real sockets: tests/e2e/test_cors.py."""

from __future__ import annotations

import pytest

from proxy import parse_config
from proxy.config import CorsConfig
from proxy.cors import cors_headers, is_same_origin, preflight_headers
from proxy.errors import ConfigError

APP = "http://127.0.0.1:5173"
OTHER = "http://evil.example"


@pytest.mark.parametrize(
    ("origin", "host", "same"),
    [
        ("http://127.0.0.1:8080", "127.0.0.1:8080", True),
        ("https://gw.example.com", "gw.example.com", True),  # TLS ended in front of us
        ("https://GW.example.com", "gw.example.com", True),
        ("http://127.0.0.1:5173", "127.0.0.1:8080", False),
        ("http://gw.example.com.evil", "gw.example.com", False),
        ("null", "gw.example.com", False),
        ("http://gw.example.com", None, False),
    ],
)
def test_same_origin_compares_the_origins_host_and_port_with_host(origin, host, same):
    assert is_same_origin(origin, host) is same


def test_allowed_origin_is_echoed_with_vary_and_credentials():
    cors = CorsConfig(allow_origins=[APP], allow_credentials=True)
    headers = cors_headers(cors, APP)
    assert headers is not None
    assert dict(headers) == {
        "Access-Control-Allow-Origin": APP,
        "Vary": "Origin",
        "Access-Control-Allow-Credentials": "true",
    }
    assert cors_headers(cors, OTHER) is None


def test_wildcard_answers_star_without_credentials():
    headers = cors_headers(CorsConfig(allow_origins=["*"]), OTHER)
    assert headers is not None
    assert dict(headers) == {"Access-Control-Allow-Origin": "*"}


def test_preflight_names_methods_headers_and_max_age():
    cors = CorsConfig(allow_origins=[APP], allow_headers=["Content-Type", "X-Request-Id"])
    headers = preflight_headers(cors, APP, ["GET", "POST"])
    assert headers is not None
    assert headers["Access-Control-Allow-Methods"] == "GET, POST"
    assert headers["Access-Control-Allow-Headers"] == "Content-Type, X-Request-Id"
    assert headers["Access-Control-Max-Age"] == "600"


@pytest.mark.parametrize(
    ("cors", "message"),
    [
        (
            '{allow_origins: ["*"], allow_credentials: true}',
            "routes[0].cors: allow_origins '*' cannot be used with allow_credentials",
        ),
        ("{allow_origins: [http://a/path]}", "routes[0].cors.allow_origins: 'http://a/path' is"),
        ("{allow_origins: []}", "routes[0].cors.allow_origins: List should have at least 1"),
        ("{allow_origin: [http://a]}", "routes[0].cors.allow_origins: Field required"),
    ],
)
def test_bad_cors_config_is_one_line_naming_the_key(cors, message):
    with pytest.raises(ConfigError) as caught:
        parse_config(f"routes: [{{path: /a, upstream: 'http://u/', cors: {cors}}}]")
    assert str(caught.value).startswith(message)


def test_origins_are_normalized_as_browsers_send_them():
    config = parse_config(
        "routes: [{path: /a, upstream: 'http://u/', "
        "cors: {allow_origins: ['HTTPS://App.Example.com:443/']}}]"
    )
    assert config.routes[0].cors is not None
    assert config.routes[0].cors.allow_origins == ["https://app.example.com"]
