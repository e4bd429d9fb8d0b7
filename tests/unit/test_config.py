"""parse_config / load_config: defaults, one-line errors that name the key, ${VAR} expansion."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from proxy.config import (
    BodyConfig,
    EventsConfig,
    GatewayConfig,
    LimitsConfig,
    TimeoutsConfig,
    load_config,
    parse_config,
)
from proxy.errors import ConfigError
from proxy.pointer import JsonPointer
from tests.support import ROOT

BUNDLED = ROOT / "config.yaml"


def yaml(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def config_error(text: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(yaml(text), {} if environ is None else environ)
    message = str(caught.value)
    assert "\n" not in message
    return message


ONE_ROUTE = """
    routes:
      - path: /v1/chat
        upstream: http://backend:11434/api/chat
"""


# -- defaults --------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "# nothing here\n", "{}\n"], ids=["empty", "comment", "map"])
def test_empty_file_is_the_default_configuration(text):
    config = parse_config(text, {})
    assert config.server.host == "127.0.0.1"
    assert config.server.port == 8080
    assert config.server.demo is False
    assert config.routes == []


def test_a_route_with_only_path_and_upstream_gets_the_documented_defaults():
    route = parse_config(yaml(ONE_ROUTE), {}).routes[0]
    assert route.path == "/v1/chat"
    assert route.upstream == "http://backend:11434/api/chat"
    assert route.methods == ["GET", "POST"]
    assert route.upstream_method == "POST"
    assert route.headers == {}
    assert route.forward_headers == []
    assert route.framing == "auto"
    assert route.body == BodyConfig(defaults={}, query_param="body", last_event_id=None)
    assert route.timeouts == TimeoutsConfig(connect=5, read=60)
    assert route.limits == LimitsConfig(max_line_bytes=1 << 20, max_body_bytes=1 << 20)
    assert route.path_variables == []


def test_an_empty_events_block_gets_the_default_names_ids_data_and_timings():
    events = EventsConfig()
    assert events.event == "message"
    assert events.event_from is None
    assert events.id == "sequence"
    assert events.data == "line"
    assert events.end_event == "end"
    assert events.error_event == "error"
    assert events.heartbeat == 15
    assert events.retry == 3000


def test_pointers_are_parsed_at_load_time():
    route = parse_config(
        yaml(
            """
            routes:
              - path: /w
                upstream: http://k8s/api/v1/pods
                events: {data: /object, event_from: /type, id: /object/metadata/resourceVersion}
            """
        ),
        {},
    ).routes[0]
    assert route.events.data == JsonPointer("/object")
    assert route.events.event_from == JsonPointer("/type")
    assert route.events.id == JsonPointer("/object/metadata/resourceVersion")


def test_id_none_and_data_line_are_keywords_not_pointers():
    events = EventsConfig(id="none", data="line")
    assert events.id == "none"
    assert events.data == "line"


def test_nulls_switch_end_event_and_retry_off():
    route = parse_config(
        yaml(ONE_ROUTE + "        events: {end_event: null, retry: null}\n"), {}
    ).routes[0]
    assert route.events.end_event is None
    assert route.events.retry is None


def test_path_variables_are_listed():
    route = parse_config(
        yaml(
            """
            routes:
              - path: /u/{user}/chat/{chat}
                upstream: http://h/users/{user}/chats/{chat}
            """
        ),
        {},
    ).routes[0]
    assert route.path_variables == ["user", "chat"]


def test_a_loaded_configuration_cannot_be_changed():
    config = parse_config(yaml(ONE_ROUTE), {})
    with pytest.raises(ValueError, match="frozen"):
        config.server.port = 1  # type: ignore[misc]


# -- errors name the key ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            """
            routes:
              - path: /a
                upstream: http://ok/a
              - path: /b
                upstream: not a url
            """,
            "routes[1].upstream: not a URL",
            id="upstream-not-a-url",
        ),
        pytest.param(
            """
            routes:
              - path: /b
                upstream: ftp://host/file
            """,
            "routes[0].upstream: not a URL",
            id="upstream-not-http",
        ),
        pytest.param(
            """
            routes:
              - path: /b
                upstream: http:///no-host
            """,
            "routes[0].upstream: not a URL",
            id="upstream-without-host",
        ),
        pytest.param(
            """
            routes:
              - path: /b
                upstream: http://h/b
                typo: 1
            """,
            "routes[0].typo: unknown key",
            id="unknown-route-key",
        ),
        pytest.param(
            "server: {hots: 0.0.0.0}\n", "server.hots: unknown key", id="unknown-server-key"
        ),
        pytest.param(
            """
            routes:
              - path: /b
                upstream: http://h/b
                events: {dat: /x}
            """,
            "routes[0].events.dat: unknown key",
            id="unknown-events-key",
        ),
        pytest.param("rotes: []\n", "rotes: unknown key", id="unknown-top-level-key"),
        pytest.param(
            """
            routes:
              - path: /b
                upstream: http://h/b
                forward_headers: [X-Request-Id, Connection]
            """,
            "routes[0].forward_headers: Connection is a hop-by-hop header and is never forwarded",
            id="hop-by-hop-forward-header",
        ),
        pytest.param(
            """
            routes:
              - path: /b
                upstream: http://h/b
                forward_headers: [transfer-encoding]
            """,
            "routes[0].forward_headers: transfer-encoding is a hop-by-hop header and is never "
            "forwarded",
            id="hop-by-hop-lower-case",
        ),
        pytest.param(
            """
            routes:
              - path: /b
                upstream: http://h/b
                forward_headers: [Host]
            """,
            "routes[0].forward_headers: Host is a hop-by-hop header and is never forwarded",
            id="host-is-never-forwarded",
        ),
        pytest.param(
            """
            routes:
              - path: /b
                upstream: http://h/b
                forward_headers: ["X Bad"]
            """,
            "routes[0].forward_headers[0]: 'X Bad' is not a valid header name",
            id="forward-header-not-a-token",
        ),
        pytest.param(
            """
            routes:
              - path: /b/{id}
                upstream: http://h/b/{other}
            """,
            "routes[0]: upstream uses {other}, which the path does not define",
            id="placeholder-not-in-path",
        ),
        pytest.param(
            """
            routes:
              - path: /b/{id}
                upstream: /demo/{nope}
            """,
            "routes[0]: upstream uses {nope}, which the path does not define",
            id="placeholder-not-in-path-for-self-upstream",
        ),
        pytest.param(
            """
            routes:
              - path: /b/{tenant}
                upstream: http://{tenant}.example/b
            """,
            "routes[0].upstream: placeholders may not be used in the host",
            id="placeholder-in-host",
        ),
        pytest.param(
            """
            routes:
              - path: /b
                upstream: http://h/b
                events: {data: /a~2}
            """,
            "routes[0].events.data: JSON Pointer '/a~2': '~' must be followed by '0' or '1'",
            id="bad-pointer-escape",
        ),
        pytest.param(
            """
            routes:
              - path: /b
                upstream: http://h/b
                events: {event_from: type}
            """,
            "routes[0].events.event_from: JSON Pointer 'type' must be empty or start with '/'",
            id="event-from-without-slash",
        ),
        pytest.param(
            """
            routes:
              - path: /b
                upstream: http://h/b
                events: {id: seq}
            """,
            "routes[0].events.id: must be 'sequence', 'none' or a JSON Pointer such as "
            "/message/content",
            id="id-keyword-or-pointer",
        ),
        pytest.param(
            """
            routes:
              - path: /b
                upstream: http://h/b
                events: {data: lines}
            """,
            "routes[0].events.data: must be 'line' or a JSON Pointer such as /message/content",
            id="data-keyword-or-pointer",
        ),
        pytest.param(
            """
            routes:
              - path: /b
                upstream: http://h/b
                events: {data: 3}
            """,
            "routes[0].events.data: must be 'line' or a JSON Pointer such as /message/content",
            id="data-not-a-string",
        ),
        pytest.param(
            """
            routes:
              - path: /b
                upstream: http://h/b
                events: {heartbeat: -1}
            """,
            "routes[0].events.heartbeat: Input should be greater than or equal to 0",
            id="negative-heartbeat",
        ),
        pytest.param(
            """
            routes:
              - path: /b
                upstream: http://h/b
                events: {retry: -5}
            """,
            "routes[0].events.retry: Input should be greater than or equal to 0",
            id="negative-retry",
        ),
        pytest.param(
            """
            routes:
              - path: /b
                upstream: http://h/b
                events: {event: "a\\nb"}
            """,
            "routes[0].events.event: an event name must be non-empty and have no line breaks",
            id="event-name-with-line-break",
        ),
        pytest.param(
            """
            routes:
              - path: /b
                upstream: http://h/b
                events: {end_event: ""}
            """,
            "routes[0].events.end_event: an event name must be non-empty and have no line breaks",
            id="empty-end-event-name",
        ),
        pytest.param(
            "server: {port: 65536}\n",
            "server.port: Input should be less than or equal to 65535",
            id="port-too-high",
        ),
        pytest.param(
            "server: {port: -1}\n",
            "server.port: Input should be greater than or equal to 0",
            id="port-negative",
        ),
        pytest.param(
            """
            routes:
              - path: b
                upstream: http://h/b
            """,
            "routes[0].path: must start with '/'",
            id="path-without-slash",
        ),
        pytest.param(
            """
            routes:
              - path: /b
            """,
            "routes[0].upstream: Field required",
            id="missing-upstream",
        ),
        pytest.param(
            """
            routes:
              - path: /b
                upstream: http://h/b
                methods: [PUT]
            """,
            "routes[0].methods[0]: Input should be 'GET' or 'POST'",
            id="unsupported-method",
        ),
        pytest.param(
            """
            routes:
              - path: /b
                upstream: http://h/b
                methods: []
            """,
            "routes[0].methods: List should have at least 1 item after validation, not 0",
            id="no-methods",
        ),
        pytest.param(
            """
            routes:
              - path: /b
                upstream: http://h/b
                framing: xml
            """,
            "routes[0].framing: Input should be 'auto', 'ndjson', 'json-seq', 'sse' or 'json'",
            id="unknown-framing",
        ),
        pytest.param(
            """
            routes:
              - path: /b
                upstream: http://h/b
                limits: {max_line_bytes: 1}
            """,
            "routes[0].limits.max_line_bytes: Input should be greater than or equal to 16",
            id="tiny-line-limit",
        ),
        pytest.param(
            """
            routes:
              - path: /b
                upstream: http://h/b
                timeouts: {connect: 0}
            """,
            "routes[0].timeouts.connect: Input should be greater than 0",
            id="zero-connect-timeout",
        ),
        pytest.param("routes: 3\n", "routes: Input should be a valid list", id="routes-not-a-list"),
        pytest.param(
            "server: {port: -1, demo: maybe}\n",
            "server.port: Input should be greater than or equal to 0 (and 1 more)",
            id="first-error-and-a-count",
        ),
    ],
)
def test_validation_error_is_one_line_naming_the_key(text, message):
    assert config_error(text) == message


def test_duplicate_method_and_path_names_the_route():
    message = config_error(
        """
        routes:
          - path: /b
            upstream: http://h/b
          - path: /b
            upstream: http://h/other
            methods: [POST]
        """
    )
    assert message == "routes[1]: POST /b is configured twice"


@pytest.mark.parametrize(
    ("path", "demo"),
    [
        pytest.param("/healthz", False, id="health-check"),
        pytest.param("/", True, id="demo-page"),
        pytest.param("/demo/api/chat", True, id="demo-upstream"),
    ],
)
def test_route_may_not_shadow_the_gateways_own_paths(path, demo):
    message = config_error(
        f"""
        server: {{demo: {str(demo).lower()}}}
        routes:
          - path: /ok
            upstream: http://h/ok
          - path: {path}
            upstream: http://h/b
        """
    )
    assert message == f"routes[1].path: {path} is served by the gateway itself"


def test_demo_paths_are_free_when_the_demo_is_off():
    config = parse_config(yaml("routes:\n  - {path: /, upstream: 'http://h/'}\n"), {})
    assert config.routes[0].path == "/"


def test_same_path_with_other_methods_is_allowed():
    config = parse_config(
        yaml(
            """
            routes:
              - path: /b
                upstream: http://h/b
                methods: [GET]
              - path: /b
                upstream: http://h/other
                methods: [POST]
            """
        ),
        {},
    )
    assert len(config.routes) == 2


def test_bad_route_header_name_names_the_header_key():
    message = config_error(
        """
        routes:
          - path: /b
            upstream: http://h/b
            headers: {"Bad Name": x}
        """
    )
    assert message == "routes[0].headers.Bad Name: 'Bad Name' is not a valid header name"


def test_top_level_that_is_not_a_mapping_is_refused():
    assert config_error("- 1\n") == "the top level must be a mapping with 'server' and 'routes'"


@pytest.mark.parametrize(
    ("text", "prefix"),
    [
        pytest.param("server:\n  host: [1\n", "line 3, column 1: invalid YAML: ", id="unclosed"),
        pytest.param(
            "server: {port: 1}\n  bad: 2\n", "line 2, column 3: invalid YAML: ", id="indentation"
        ),
    ],
)
def test_invalid_yaml_names_line_and_column(text, prefix):
    message = config_error(text)
    assert message.startswith(prefix), message


# -- environment -----------------------------------------------------------------------------------

ENV_ROUTE = """
    routes:
      - path: /b
        upstream: http://h/b
        headers: {Authorization: "VALUE"}
"""


def header_value(value: str, environ: dict[str, str]) -> str:
    text = yaml(ENV_ROUTE).replace("VALUE", value)
    return parse_config(text, environ).routes[0].headers["Authorization"]


@pytest.mark.parametrize(
    ("value", "environ", "result"),
    [
        pytest.param("Bearer ${TOKEN}", {"TOKEN": "s3cret"}, "Bearer s3cret", id="var"),
        pytest.param("${A}${B}", {"A": "x", "B": "y"}, "xy", id="two-vars"),
        pytest.param("${TOKEN:-none}", {}, "none", id="default-when-unset"),
        pytest.param("${TOKEN:-none}", {"TOKEN": ""}, "none", id="default-when-empty"),
        pytest.param("${TOKEN:-none}", {"TOKEN": "set"}, "set", id="value-over-default"),
        pytest.param("${TOKEN:-}", {}, "", id="empty-default"),
        pytest.param("${TOKEN:-a b:c}", {}, "a b:c", id="default-with-spaces-and-colon"),
        pytest.param("${TOKEN}", {"TOKEN": ""}, "", id="empty-value-without-default"),
        pytest.param("a$$b", {}, "a$b", id="double-dollar-is-a-dollar"),
        pytest.param("$${TOKEN}", {"TOKEN": "no"}, "${TOKEN}", id="escaped-reference-is-literal"),
        pytest.param("$HOME and $", {"HOME": "no"}, "$HOME and $", id="bare-dollar-untouched"),
        pytest.param("${TOKEN}", {"TOKEN": "${OTHER}"}, "${OTHER}", id="values-not-re-expanded"),
    ],
)
def test_environment_references_are_expanded(value, environ, result):
    assert header_value(value, environ) == result


def test_unset_variable_names_the_key():
    with pytest.raises(ConfigError) as caught:
        header_value("Bearer ${TOKEN}", {})
    assert str(caught.value) == (
        "routes[0].headers.Authorization: environment variable TOKEN is not set"
    )


def test_unset_variable_in_a_list_names_the_index():
    message = config_error(
        """
        routes:
          - path: /b
            upstream: http://h/b
            forward_headers: [X-A, "${NAME}"]
        """
    )
    assert message == "routes[0].forward_headers[1]: environment variable NAME is not set"


def test_expanded_value_is_validated_like_a_literal():
    config = parse_config(
        yaml("server: {port: '${PORT}', host: '${HOST:-0.0.0.0}'}\n"), {"PORT": "9000"}
    )
    assert config.server.port == 9000
    assert config.server.host == "0.0.0.0"
    assert config_error("server: {port: '${PORT}'}\n", {"PORT": "99999"}) == (
        "server.port: Input should be less than or equal to 65535"
    )


def test_keys_are_not_expanded_but_nested_values_are():
    text = yaml(ONE_ROUTE + '        body: {defaults: {"${A}": ["${A}", {k: "${A}"}]}}\n')
    defaults = parse_config(text, {"A": "a"}).routes[0].body.defaults
    assert defaults == {"${A}": ["a", {"k": "a"}]}


# -- overrides and files ---------------------------------------------------------------------------


def test_with_overrides_replaces_host_and_port_only():
    config = parse_config(yaml(ONE_ROUTE), {})
    changed = config.with_overrides(host="0.0.0.0", port=9000)
    assert (changed.server.host, changed.server.port) == ("0.0.0.0", 9000)
    assert changed.routes == config.routes
    assert (config.server.host, config.server.port) == ("127.0.0.1", 8080)


def test_with_overrides_none_keeps_the_file_values_and_port_zero_is_a_value():
    config = parse_config("server: {host: '::1', port: 1234}\n", {})
    assert config.with_overrides() == config
    assert config.with_overrides(port=0).server.port == 0
    assert config.with_overrides(port=0).server.host == "::1"


def test_load_config_of_a_missing_file_names_the_file():
    missing = Path("/nonexistent/dir/gateway.yaml")
    with pytest.raises(ConfigError) as caught:
        load_config(missing, {})
    assert str(caught.value) == f"{missing}: cannot read: No such file or directory"


def test_load_config_error_is_prefixed_with_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("server: {port: -1}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    assert str(caught.value) == (f"{path}: server.port: Input should be greater than or equal to 0")


def test_load_config_of_a_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"server: {host: caf\xe9}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    assert str(caught.value) == f"{path}: not UTF-8 text"


def test_bundled_config_loads_with_the_demo_on():
    config = load_config(BUNDLED, {})
    assert isinstance(config, GatewayConfig)
    assert config.server.demo is True
    assert [route.path for route in config.routes] == ["/v1/chat", "/v1/chat/raw"]
    chat = config.routes[0]
    assert chat.upstream == "/demo/api/chat"
    assert chat.events.data == JsonPointer("/message/content")
    assert chat.body.defaults == {"model": "demo", "stream": True}
    assert chat.forward_headers == ["X-Request-Id"]
