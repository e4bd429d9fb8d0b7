"""Request policy over real sockets: ``body.pinned`` fields win over the client's, deeply;
``body.schema`` refuses a body that does not match with ``400 invalid_body`` naming the JSON path,
before any upstream request; a schema that is not valid JSON Schema stops the start-up."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from proxy.config import load_config
from proxy.errors import ConfigError
from tests.support.processes import run_cli
from tests.support.upstreams import Seen, ndjson_handler, recorded

CHAT_SCHEMA = {
    "type": "object",
    "required": ["messages"],
    "properties": {
        "messages": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["role", "content"],
                "properties": {"role": {"enum": ["system", "user", "assistant"]}},
            },
        },
    },
}


async def start(start_upstream, start_gateway, **body):
    seen: list[Seen] = []
    base = await start_upstream({"/chat": recorded(ndjson_handler([b'{"n": 1}\n']), seen)})
    gateway = await start_gateway([{"path": "/chat", "upstream": base + "/chat", "body": body}])
    return gateway, seen


async def test_pinned_fields_win_over_the_clients_deeply_on_post_and_get(
    start_upstream, start_gateway, http
):
    gateway, seen = await start(
        start_upstream,
        start_gateway,
        defaults={"stream": True, "options": {"temperature": 0.8}},
        pinned={"model": "llama3.2", "options": {"num_ctx": 8192}},
    )
    wanted = {"model": "gpt-4-expensive", "options": {"num_ctx": 131072, "temperature": 0.2}}
    async with http.post(f"{gateway}/chat", json={**wanted, "messages": []}) as response:
        assert response.status == 200
        await response.read()
    body = quote(json.dumps(wanted))
    async with http.get(f"{gateway}/chat?body={body}&model=other") as response:
        assert response.status == 200
        await response.read()
    for request in seen:
        assert request.body["model"] == "llama3.2"
        assert request.body["options"] == {"num_ctx": 8192, "temperature": 0.2}
        assert request.body["stream"] is True
    assert seen[0].body["messages"] == []


@pytest.mark.parametrize(
    ("body", "path"),
    [
        pytest.param({}, "$", id="missing-messages"),
        pytest.param({"messages": "hi"}, "$.messages", id="not-an-array"),
        pytest.param({"messages": [{"role": "user"}]}, "$.messages[0]", id="no-content"),
        pytest.param(
            {"messages": [{"role": "root", "content": "x"}]}, "$.messages[0].role", id="bad-enum"
        ),
    ],
)
async def test_a_body_that_breaks_the_schema_is_400_invalid_body_naming_the_path(
    start_upstream, start_gateway, http, body, path
):
    gateway, seen = await start(start_upstream, start_gateway, schema=CHAT_SCHEMA)
    async with http.post(f"{gateway}/chat", json=body) as response:
        assert response.status == 400
        error = (await response.json())["error"]
    assert error["code"] == "invalid_body"
    assert f" at {path}: " in error["message"]
    assert seen == []


async def test_a_body_that_matches_the_schema_goes_upstream(start_upstream, start_gateway, http):
    gateway, seen = await start(start_upstream, start_gateway, schema=CHAT_SCHEMA)
    chat = {"messages": [{"role": "user", "content": "hi"}]}
    async with http.post(f"{gateway}/chat", json=chat) as response:
        assert response.status == 200
        await response.read()
    assert seen[0].body == chat


def test_a_schema_file_is_read_relative_to_the_configuration_file(tmp_path):
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "chat.yaml").write_text(json.dumps(CHAT_SCHEMA))
    config = tmp_path / "gateway.yaml"
    route = {
        "path": "/c",
        "upstream": "http://127.0.0.1:1/c",
        "body": {"schema": "schemas/chat.yaml"},
    }
    config.write_text(json.dumps({"routes": [route]}))
    loaded = load_config(config)
    assert loaded.routes[0].body.json_schema == CHAT_SCHEMA


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        pytest.param({"type": "objekt"}, "not a valid JSON Schema at type", id="bad-type"),
        pytest.param(
            {"required": "messages"}, "not a valid JSON Schema at required", id="bad-required"
        ),
        pytest.param("missing.json", "cannot read", id="missing-file"),
    ],
)
def test_a_schema_that_is_not_valid_json_schema_stops_the_start_up(tmp_path, schema, problem):
    config = tmp_path / "gateway.yaml"
    route = {"path": "/c", "upstream": "http://127.0.0.1:1/c", "body": {"schema": schema}}
    config.write_text(json.dumps({"routes": [route]}))
    with pytest.raises(ConfigError, match=r"routes\[0\]\.body\.schema: " + problem):
        load_config(config)
    checked = run_cli("--config", str(config), "--check-config")
    assert checked.returncode == 2
    assert "routes[0].body.schema: " in checked.stderr
