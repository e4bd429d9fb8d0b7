"""The recipes in ``examples/``, each run as shipped against a fake of its backend.

Each test loads the real file, points its ``${VAR:-default}`` backend address at a fake upstream
(``tests/support/services.py``: the real services' Content-Types, framing, field names and terminal
lines) and starts the gateway the way ``python -m proxy`` does. A client then makes the requests a
page would (EventSource's GET with ``?body=``, fetch's POST with JSON) and the test asserts exactly
the events it gets, and what the backend was sent.
"""

from __future__ import annotations

import ast
import asyncio
import os
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest

from proxy import parse_config
from proxy.sse import SSEEvent, SSERetry
from tests.support import ROOT
from tests.support.processes import run_cli
from tests.support.services import (
    FakeInternalApi,
    FakeKubernetes,
    FakeOllama,
    FakeOpenAI,
    FakeSpringWebFlux,
)
from tests.support.sse import parse_all, parse_events

EXAMPLES = ROOT / "examples"
RECIPES = sorted(path.stem for path in EXAMPLES.glob("*.yaml"))
# The HTTP/2 fronts' configurations, run by tests/clients/test_http2_front.py.
FRONTS = ("Caddyfile", "nginx-http2.conf")
# What a browser's EventSource sends with its GET.
EVENT_SOURCE = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
MESSAGES = [{"role": "user", "content": "Hi"}]

StartRecipe = Callable[[str, dict[str, str]], Awaitable[str]]


@pytest.fixture
def start_recipe(start_config) -> StartRecipe:
    """``await start_recipe("ollama-chat", environ) -> base URL``: the file as shipped, started
    as ``python -m proxy`` starts it, with ``environ`` as its whole environment."""

    async def start(name: str, environ: dict[str, str]) -> str:
        text = (EXAMPLES / f"{name}.yaml").read_text(encoding="utf-8")
        return await start_config(parse_config(text, environ))

    return start


@pytest.fixture
def serve(start_upstream) -> Callable[[Any], Awaitable[str]]:
    """``await serve(fake) -> base URL`` of a fake backend on a loopback port."""

    async def start(fake: Any) -> str:
        return await start_upstream(fake.handlers(), method=fake.method)

    return start


def with_body(url: str, body: dict[str, Any]) -> str:
    """An EventSource URL: the JSON body URL-encoded in ``?body=``."""
    return f"{url}?body={quote(orjson.dumps(body).decode(), safe='')}"


def error_data(event: SSEEvent) -> dict[str, Any]:
    assert event.event == "error"
    return orjson.loads(event.data)


# -- Ollama /api/chat ------------------------------------------------------------------------------


async def test_ollama_chat_sends_one_message_per_token_then_end(start_recipe, serve, http):
    ollama = FakeOllama()
    gateway = await start_recipe("ollama-chat", {"OLLAMA_URL": await serve(ollama)})
    url = with_body(f"{gateway}/ollama/chat", {"messages": MESSAGES})
    async with http.get(url, headers=EVENT_SOURCE) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        raw = await response.read()
    assert raw == (
        b"retry: 3000\n\n"
        b"id: 1\ndata: Hel\n\n"
        b"id: 2\ndata: lo\n\n"
        b"id: 3\ndata: !\ndata: \ndata: \n\n"  # "!\n\n": three data lines, joined back by clients
        b"id: 4\ndata: How\n\n"
        b"id: 5\ndata:  can\n\n"
        b"id: 6\ndata:  I\n\n"
        b"id: 7\ndata:  help?\n\n"
        b"id: 8\ndata:\n\n"  # the "done": true line, whose content is empty
        b"event: end\ndata:\n\n"
    )
    assert [(e.event, e.data) for e in parse_events(raw)] == [
        *(("message", token) for token in ollama.tokens),
        ("message", ""),
        ("end", ""),
    ]
    [request] = ollama.requests
    assert (request.method, request.path) == ("POST", "/api/chat")
    assert request.headers["Content-Type"] == "application/json"
    assert request.body == {"model": "llama3.2", "stream": True, "messages": MESSAGES}


async def test_ollama_chat_post_body_overrides_the_model_and_keeps_stream_true(
    start_recipe, serve, http
):
    ollama = FakeOllama(tokens=("Bon", "jour"), models=("llama3.2", "mistral"))
    gateway = await start_recipe("ollama-chat", {"OLLAMA_URL": await serve(ollama)})
    body = {"model": "mistral", "messages": MESSAGES, "options": {"temperature": 0}}
    async with http.post(f"{gateway}/ollama/chat", json=body) as response:
        events = parse_events(await response.read())
    assert events == [
        SSEEvent(data="Bon", id="1"),
        SSEEvent(data="jour", id="2"),
        SSEEvent(data="", id="3"),
        SSEEvent(data="", event="end", id="3"),
    ]
    assert ollama.requests[0].body == {
        "model": "mistral",
        "stream": True,
        "messages": MESSAGES,
        "options": {"temperature": 0},
    }


async def test_ollama_chat_raw_route_passes_every_line_whole_with_the_timings(
    start_recipe, serve, http
):
    ollama = FakeOllama(tokens=("Hi",))
    gateway = await start_recipe("ollama-chat", {"OLLAMA_URL": await serve(ollama)})
    url = with_body(f"{gateway}/ollama/chat/raw", {"messages": MESSAGES})
    async with http.get(url, headers=EVENT_SOURCE) as response:
        events = parse_events(await response.read())
    lines = ollama.chat_lines("llama3.2")
    assert events == [
        SSEEvent(data=lines[0].decode().rstrip("\n"), id="1"),
        SSEEvent(data=lines[1].decode().rstrip("\n"), id="2"),
        SSEEvent(data="", event="end", id="2"),
    ]
    final = orjson.loads(events[1].data)
    assert final["done"] is True
    assert final["done_reason"] == "stop"
    assert final["message"] == {"role": "assistant", "content": ""}
    assert final["eval_count"] == 1


async def test_ollama_chat_cut_before_the_done_line_ends_with_incomplete_not_end(
    start_recipe, serve, http
):
    ollama = FakeOllama(tokens=("Hel", "lo"), ending="cut")
    gateway = await start_recipe("ollama-chat", {"OLLAMA_URL": await serve(ollama)})
    for path in ("/ollama/chat", "/ollama/chat/raw"):
        async with http.post(f"{gateway}{path}", json={"messages": MESSAGES}) as response:
            events = parse_events(await response.read())
        assert [e.event for e in events] == ["message", "message", "error"], path
        error = error_data(events[-1])
        assert error["code"] == "incomplete"
        assert "/done" in error["message"]


async def test_ollama_error_line_mid_stream_is_an_error_event_then_incomplete(
    start_recipe, serve, http
):
    ollama = FakeOllama(ending="error")
    gateway = await start_recipe("ollama-chat", {"OLLAMA_URL": await serve(ollama)})
    async with http.post(f"{gateway}/ollama/chat", json={"messages": MESSAGES}) as response:
        tokens = parse_events(await response.read())
    async with http.post(f"{gateway}/ollama/chat/raw", json={"messages": MESSAGES}) as response:
        raw = parse_events(await response.read())

    # Token route: error_from turns the {"error": ...} line into an upstream_error event with
    # Ollama's own text, then the stream is incomplete (no done line came).
    assert [(e.event, e.data) for e in tokens[:3]] == [
        ("message", "Hel"),
        ("message", "lo"),
        ("message", "!\n\n"),
    ]
    assert [e.event for e in tokens[3:]] == ["error", "error"]
    assert error_data(tokens[3]) == {
        "code": "upstream_error",
        "message": FakeOllama.ERROR,
        "line": 4,
    }
    assert error_data(tokens[4])["code"] == "incomplete"

    # Raw route: the error line is a message as Ollama wrote it, then the stream is incomplete.
    assert [e.event for e in raw] == ["message"] * 4 + ["error"]
    assert orjson.loads(raw[3].data) == {"error": FakeOllama.ERROR}
    assert error_data(raw[4])["code"] == "incomplete"


async def test_ollama_unknown_model_is_its_404_with_ollamas_message(start_recipe, serve, http):
    ollama = FakeOllama()
    gateway = await start_recipe("ollama-chat", {"OLLAMA_URL": await serve(ollama)})
    url = with_body(f"{gateway}/ollama/chat", {"model": "llama9", "messages": MESSAGES})
    async with http.get(url, headers=EVENT_SOURCE) as response:
        assert response.status == 404
        assert response.content_type == "application/json"
        body = await response.json()
    assert body == {
        "error": {
            "code": "upstream_status",
            "message": 'the upstream answered 404 Not Found: model "llama9" not found, '
            "try pulling it first",
            "upstream_status": 404,
        }
    }


# -- Ollama /api/generate --------------------------------------------------------------------------


async def test_ollama_generate_sends_the_response_tokens_then_end(start_recipe, serve, http):
    ollama = FakeOllama(tokens=("The", " sky", " is", " blue."))
    gateway = await start_recipe("ollama-generate", {"OLLAMA_URL": await serve(ollama)})
    url = with_body(f"{gateway}/ollama/generate", {"prompt": "Why is the sky blue?"})
    async with http.get(url, headers=EVENT_SOURCE) as response:
        raw = await response.read()
    assert raw == (
        b"retry: 3000\n\n"
        b"id: 1\ndata: The\n\n"
        b"id: 2\ndata:  sky\n\n"
        b"id: 3\ndata:  is\n\n"
        b"id: 4\ndata:  blue.\n\n"
        b"id: 5\ndata:\n\n"
        b"event: end\ndata:\n\n"
    )
    [request] = ollama.requests
    assert (request.method, request.path) == ("POST", "/api/generate")
    assert request.body == {"model": "llama3.2", "stream": True, "prompt": "Why is the sky blue?"}


async def test_ollama_generate_plain_query_parameters_become_body_fields(start_recipe, serve, http):
    ollama = FakeOllama(tokens=("ok",), models=("qwen2.5",))
    gateway = await start_recipe(
        "ollama-generate", {"OLLAMA_URL": await serve(ollama), "OLLAMA_MODEL": "qwen2.5"}
    )
    async with http.get(f"{gateway}/ollama/generate?prompt=hi", headers=EVENT_SOURCE) as response:
        events = parse_events(await response.read())
    assert [e.data for e in events] == ["ok", "", ""]
    assert ollama.requests[0].body == {"model": "qwen2.5", "stream": True, "prompt": "hi"}


async def test_ollama_generate_cut_before_the_done_line_ends_with_incomplete(
    start_recipe, serve, http
):
    ollama = FakeOllama(tokens=("The", " sky"), ending="cut")
    gateway = await start_recipe("ollama-generate", {"OLLAMA_URL": await serve(ollama)})
    async with http.post(f"{gateway}/ollama/generate", json={"prompt": "?"}) as response:
        events = parse_events(await response.read())
    assert [(e.event, e.id) for e in events] == [("message", "1"), ("message", "2"), ("error", "2")]
    assert [e.data for e in events[:2]] == ["The", " sky"]
    assert error_data(events[2]) == {
        "code": "incomplete",
        "message": "the upstream stream ended without its terminal line (/done true)",
    }


# -- Kubernetes watch ------------------------------------------------------------------------------


def k8s_event(k8s: FakeKubernetes, kind: str, name: str, version: str, phase: str) -> str:
    return k8s.event(kind, name, version, phase, "default").decode().rstrip("\n")


def bookmark(k8s: FakeKubernetes, since: str | None) -> str:
    query = {"allowWatchBookmarks": "true"} | ({"resourceVersion": since} if since else {})
    return k8s.watch_lines("default", query)[-1].decode().rstrip("\n")


async def test_kubernetes_watch_starts_with_current_pods_as_named_events_with_versions(
    start_recipe, serve, http
):
    k8s = FakeKubernetes()
    gateway = await start_recipe("kubernetes-watch", {"K8S_API": await serve(k8s)})
    url = f"{gateway}/k8s/namespaces/default/pods?labelSelector=app%3Dweb"
    async with http.get(url, headers=EVENT_SOURCE) as response:
        assert response.status == 200
        items = parse_all(await response.read())
    assert items == [
        SSERetry(1000),
        SSEEvent(
            event="ADDED", id="12347", data=k8s_event(k8s, "ADDED", "web-1", "12347", "Running")
        ),
        SSEEvent(
            event="ADDED", id="12349", data=k8s_event(k8s, "ADDED", "web-3", "12349", "Pending")
        ),
        SSEEvent(event="BOOKMARK", id="12349", data=bookmark(k8s, None)),
        # no "end": when the watch closes, EventSource reconnects with Last-Event-ID 12349
    ]
    [request] = k8s.requests
    assert (request.method, request.path) == ("GET", "/api/v1/namespaces/default/pods")
    assert request.query == [
        ("watch", "true"),
        ("allowWatchBookmarks", "true"),
        ("timeoutSeconds", "300"),
        ("labelSelector", "app=web"),
    ]
    assert request.body is None
    assert "Content-Type" not in request.headers


async def test_kubernetes_reconnect_with_last_event_id_resumes_the_watch_after_it(
    start_recipe, serve, http
):
    k8s = FakeKubernetes()
    gateway = await start_recipe("kubernetes-watch", {"K8S_API": await serve(k8s)})
    headers = {**EVENT_SOURCE, "Last-Event-ID": "12346"}
    async with http.get(f"{gateway}/k8s/namespaces/default/pods", headers=headers) as response:
        events = parse_events(await response.read())
    assert events == [
        SSEEvent(
            event="MODIFIED",
            id="12347",
            data=k8s_event(k8s, "MODIFIED", "web-1", "12347", "Running"),
        ),
        SSEEvent(
            event="DELETED", id="12348", data=k8s_event(k8s, "DELETED", "web-2", "12348", "Pending")
        ),
        SSEEvent(
            event="ADDED", id="12349", data=k8s_event(k8s, "ADDED", "web-3", "12349", "Pending")
        ),
        SSEEvent(event="BOOKMARK", id="12349", data=bookmark(k8s, "12346")),
    ]
    assert k8s.requests[0].query == [
        ("watch", "true"),
        ("allowWatchBookmarks", "true"),
        ("timeoutSeconds", "300"),
        ("resourceVersion", "12346"),
    ]


async def test_kubernetes_expired_resource_version_arrives_as_an_error_event_named_error_upper(
    start_recipe, serve, http
):
    k8s = FakeKubernetes()
    gateway = await start_recipe("kubernetes-watch", {"K8S_API": await serve(k8s)})
    headers = {**EVENT_SOURCE, "Last-Event-ID": "12000"}
    async with http.get(f"{gateway}/k8s/namespaces/default/pods", headers=headers) as response:
        assert response.status == 200  # the API server says 410 inside a 200 watch
        events = parse_events(await response.read())
    # The ERROR line's object is a Status with no metadata.resourceVersion: it still arrives,
    # as an ERROR event without an id (the page keeps its last one), so the page can see the 410
    # and list again instead of resuming.
    (event,) = events
    assert (event.event, event.id) == ("ERROR", "")
    status = orjson.loads(event.data)["object"]
    assert (status["kind"], status["code"], status["reason"]) == ("Status", 410, "Expired")
    assert ("resourceVersion", "12000") in k8s.requests[0].query


async def test_kubernetes_shared_watch_serves_thirty_dashboards_from_one_watch(
    start_recipe, serve, http
):
    k8s = FakeKubernetes(hold=1.0)
    gateway = await start_recipe("kubernetes-watch-shared", {"K8S_API": await serve(k8s)})
    url = f"{gateway}/k8s/namespaces/default/pods?labelSelector=app%3Dweb"

    async def dashboard() -> list[tuple[str, str]]:
        async with http.get(url, headers=EVENT_SOURCE) as response:
            assert response.status == 200
            return [(e.event, e.data) for e in parse_events(await response.read())]

    seen = await asyncio.gather(*(dashboard() for _ in range(30)))
    expected = [
        ("ADDED", k8s_event(k8s, "ADDED", "web-1", "12347", "Running")),
        ("ADDED", k8s_event(k8s, "ADDED", "web-3", "12349", "Pending")),
        ("BOOKMARK", bookmark(k8s, None)),
        ("end", ""),
    ]
    assert seen == [expected] * 30
    [request] = k8s.requests  # one watch for all thirty
    assert ("labelSelector", "app=web") in request.query
    # Another selector is another watch.
    async with http.get(url.replace("app%3Dweb", "app%3Ddb"), headers=EVENT_SOURCE) as response:
        await response.read()
    assert len(k8s.requests) == 2


# -- Spring WebFlux --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        pytest.param("application/stream+json", id="spring-before-5.3"),
        pytest.param("application/x-ndjson", id="spring-5.3-and-later"),
    ],
)
async def test_spring_flux_elements_arrive_as_quote_events_then_end(
    start_recipe, serve, http, content_type
):
    spring = FakeSpringWebFlux(content_type)
    gateway = await start_recipe("spring-webflux", {"SPRING_URL": await serve(spring)})
    url = f"{gateway}/quotes?symbols=ACME&symbols=INIT&limit=3"
    headers = {**EVENT_SOURCE, "X-Request-Id": "req-42"}
    async with http.get(url, headers=headers) as response:
        raw = await response.read()
    lines = spring.quote_lines(["ACME", "INIT"], 3)
    assert len(lines) == 3
    assert raw == (
        b"retry: 3000\n\n"
        + b"".join(
            b"id: %d\nevent: quote\ndata: %s\n\n" % (number, line.rstrip(b"\n"))
            for number, line in enumerate(lines, 1)
        )
        + b"event: end\ndata:\n\n"
    )
    [request] = spring.requests
    assert (request.method, request.path) == ("POST", "/api/quotes/stream")
    assert request.body == {"limit": "3", "symbols": ["ACME", "INIT"]}
    assert request.headers["X-Request-Id"] == "req-42"


async def test_spring_post_body_goes_over_the_default_limit(start_recipe, serve, http):
    spring = FakeSpringWebFlux()
    gateway = await start_recipe("spring-webflux", {"SPRING_URL": await serve(spring)})
    async with http.post(f"{gateway}/quotes", json={"symbols": ["INIT"]}) as response:
        events = parse_events(await response.read())
    assert [(e.event, e.id, e.data) for e in events] == [
        ("quote", "1", '{"symbol":"INIT","price":42.5,"time":"2024-11-24T15:36:01Z"}'),
        ("quote", "2", '{"symbol":"INIT","price":42.45,"time":"2024-11-24T15:36:03Z"}'),
        ("end", "2", ""),
    ]
    assert spring.requests[0].body == {"limit": 100, "symbols": ["INIT"]}


async def test_spring_flux_failing_mid_stream_drops_the_connection_and_the_page_gets_an_error(
    start_recipe, serve, http
):
    spring = FakeSpringWebFlux("application/x-ndjson", fail_after=2)
    gateway = await start_recipe("spring-webflux", {"SPRING_URL": await serve(spring)})
    async with http.post(f"{gateway}/quotes", json={"symbols": ["ACME", "INIT"]}) as response:
        events = parse_events(await response.read())
    assert [(e.event, e.id) for e in events] == [("quote", "1"), ("quote", "2"), ("error", "2")]
    assert error_data(events[2]) == {
        "code": "upstream_closed",
        "message": "the upstream connection closed before the body was complete",
    }


async def test_spring_validation_400_is_mirrored_as_json_before_the_stream(
    start_recipe, serve, http
):
    spring = FakeSpringWebFlux()
    gateway = await start_recipe("spring-webflux", {"SPRING_URL": await serve(spring)})
    # One ?symbols= is a string, not the list the controller binds: Spring answers 400.
    async with http.get(f"{gateway}/quotes?symbols=ACME", headers=EVENT_SOURCE) as response:
        assert response.status == 400
        error = (await response.json())["error"]
    assert error["code"] == "upstream_status"
    assert error["upstream_status"] == 400
    assert error["message"] == "the upstream answered 400 Bad Request: Bad Request"


# -- OpenAI-compatible -----------------------------------------------------------------------------

OPENAI_KEY = "sk-test-0penai-k3y-9f8e7d6c5b4a"


async def test_openai_stream_is_re_encoded_with_done_as_a_message_then_end(
    start_recipe, serve, http
):
    openai = FakeOpenAI(OPENAI_KEY)
    environ = {"OPENAI_BASE_URL": await serve(openai) + "/v1", "OPENAI_API_KEY": OPENAI_KEY}
    gateway = await start_recipe("openai-sse", environ)
    async with http.post(f"{gateway}/openai/chat", json={"messages": MESSAGES}) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        raw = await response.read()
    chunks = openai.chunks("gpt-4o-mini")
    assert chunks[-1] == b"[DONE]"
    assert raw == (
        b"retry: 3000\n\n"
        + b"".join(b"data: " + data + b"\n\n" for data in chunks)
        + b"event: end\ndata:\n\n"
    )
    events = parse_events(raw)
    assert [e.event for e in events] == ["message"] * 6 + ["end"]
    assert [e.data for e in events[-2:]] == ["[DONE]", ""]
    deltas = [orjson.loads(e.data)["choices"][0]["delta"] for e in events[:5]]
    assert "".join(d.get("content", "") for d in deltas) == "Hello!"
    [request] = openai.requests
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.headers["Authorization"] == f"Bearer {OPENAI_KEY}"
    assert request.body == {"model": "gpt-4o-mini", "stream": True, "messages": MESSAGES}
    assert OPENAI_KEY.encode() not in raw


async def test_openai_event_source_get_gets_the_same_events(start_recipe, serve, http):
    openai = FakeOpenAI(OPENAI_KEY, tokens=("Yes",))
    environ = {
        "OPENAI_BASE_URL": await serve(openai) + "/v1",
        "OPENAI_API_KEY": OPENAI_KEY,
        "OPENAI_MODEL": "llama-3.1-8b-instruct",
    }
    gateway = await start_recipe("openai-sse", environ)
    url = with_body(f"{gateway}/openai/chat", {"messages": MESSAGES, "max_tokens": 16})
    async with http.get(url, headers=EVENT_SOURCE) as response:
        events = parse_events(await response.read())
    assert events == [
        *(SSEEvent(data=data.decode()) for data in openai.chunks("llama-3.1-8b-instruct")),
        SSEEvent(data="", event="end"),
    ]
    assert openai.requests[0].body == {
        "model": "llama-3.1-8b-instruct",
        "stream": True,
        "messages": MESSAGES,
        "max_tokens": 16,
    }


async def test_openai_wrong_key_is_its_401_and_the_key_is_not_in_the_answer(
    start_recipe, serve, http
):
    openai = FakeOpenAI(OPENAI_KEY)
    wrong = "sk-wrong-key-1234567890"
    environ = {"OPENAI_BASE_URL": await serve(openai) + "/v1", "OPENAI_API_KEY": wrong}
    gateway = await start_recipe("openai-sse", environ)
    async with http.post(f"{gateway}/openai/chat", json={"messages": MESSAGES}) as response:
        assert response.status == 401
        raw = await response.read()
        raw_headers = b"".join(name + b": " + value for name, value in response.raw_headers)
    assert orjson.loads(raw)["error"]["code"] == "upstream_status"
    assert b"Incorrect API key provided" in raw
    for key in (wrong, OPENAI_KEY):
        assert key.encode() not in raw + raw_headers
    assert openai.requests[0].headers["Authorization"] == f"Bearer {wrong}"


# -- an internal API behind a key ------------------------------------------------------------------

INTERNAL_KEY = "int-k3y-5e1f0c2d9b8a7"


async def test_internal_api_gets_the_key_from_the_environment_and_the_client_never_sees_it(
    start_recipe, serve, http
):
    api = FakeInternalApi(INTERNAL_KEY)
    environ = {"INTERNAL_API_URL": await serve(api), "INTERNAL_API_KEY": INTERNAL_KEY}
    gateway = await start_recipe("internal-api", environ)
    headers = {"X-Request-Id": "req-7", "X-Api-Key": "a-guess-from-the-page"}
    async with http.post(f"{gateway}/jobs/job-7/events", json={}, headers=headers) as response:
        assert response.status == 200
        raw = await response.read()
        raw_headers = b"".join(name + b": " + value for name, value in response.raw_headers)
    assert parse_all(raw) == [
        SSERetry(3000),
        SSEEvent(event="progress", id="1", data='{"percent":25}'),
        SSEEvent(event="progress", id="2", data='{"percent":75}'),
        SSEEvent(event="log", id="3", data='{"level":"info","text":"merged 3 shards"}'),
        SSEEvent(event="result", id="4", data='{"rows":1200,"url":"/v1/jobs/job-7/result"}'),
        SSEEvent(event="end", id="4", data=""),
    ]
    [request] = api.requests
    assert (request.method, request.path) == ("POST", "/v1/jobs/job-7/events")
    assert request.headers["X-Api-Key"] == INTERNAL_KEY  # the page's own guess was replaced
    assert request.headers["X-Request-Id"] == "req-7"
    assert request.body == {}
    assert INTERNAL_KEY.encode() not in raw + raw_headers


async def test_internal_api_event_source_reconnect_resumes_after_the_last_seq(
    start_recipe, serve, http
):
    api = FakeInternalApi(INTERNAL_KEY)
    environ = {"INTERNAL_API_URL": await serve(api), "INTERNAL_API_KEY": INTERNAL_KEY}
    gateway = await start_recipe("internal-api", environ)
    headers = {**EVENT_SOURCE, "Last-Event-ID": "2"}
    url = with_body(f"{gateway}/jobs/job-7/events", {"verbose": True})
    async with http.get(url, headers=headers) as response:
        events = parse_events(await response.read())
    assert [(e.event, e.id) for e in events] == [("log", "3"), ("result", "4"), ("end", "4")]
    assert api.requests[0].body == {"verbose": True, "after_seq": "2"}
    assert api.requests[0].headers["Last-Event-ID"] == "2"


async def test_internal_api_wrong_key_is_a_401_that_names_neither_key(start_recipe, serve, http):
    api = FakeInternalApi(INTERNAL_KEY)
    wrong = "int-wrong-0a1b2c3d"
    environ = {"INTERNAL_API_URL": await serve(api), "INTERNAL_API_KEY": wrong}
    gateway = await start_recipe("internal-api", environ)
    async with http.get(f"{gateway}/jobs/job-7/events", headers=EVENT_SOURCE) as response:
        assert response.status == 401
        raw = await response.read()
        raw_headers = b"".join(name + b": " + value for name, value in response.raw_headers)
    assert orjson.loads(raw) == {
        "error": {
            "code": "upstream_status",
            "message": "the upstream answered 401 Unauthorized: unauthorized",
            "upstream_status": 401,
        }
    }
    for key in (wrong, INTERNAL_KEY):
        assert key.encode() not in raw + raw_headers
    assert api.requests[0].headers["X-Api-Key"] == wrong


# -- every recipe: tested, valid, documented -------------------------------------------------------


def recipes_started_in_this_file() -> set[str]:
    """The first argument of every ``start_recipe("name", ...)`` call in this module."""
    tree = ast.parse(Path(__file__).read_text(encoding="utf-8"))
    return {
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "start_recipe"
        and node.args
        and isinstance(node.args[0], ast.Constant)
    }


def test_every_recipe_in_examples_is_run_by_a_test_here():
    assert RECIPES, "no examples/*.yaml found"
    assert recipes_started_in_this_file() == set(RECIPES)
    readme = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    others = [p.name for p in EXAMPLES.iterdir() if p.suffix != ".yaml" and p.name != "README.md"]
    unexplained = [name for name in others if f"`{name}`" not in readme]
    assert unexplained == [], "examples/ holds recipes (*.yaml), and files its README explains"


def test_every_recipe_has_its_run_command_in_the_examples_readme():
    readme = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    for name in RECIPES:
        assert f"--config examples/{name}.yaml" in readme, name
    for name in FRONTS:
        assert f"examples/{name}" in readme, name


# The variables with no default in the recipes: a real deployment must set them.
REQUIRED_ENV = {"OPENAI_API_KEY": "sk-check", "INTERNAL_API_KEY": "check"}


def check_config(name: str, environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``python -m proxy --check-config`` on a recipe, with exactly ``environ``."""
    return run_cli("--check-config", "--config", f"examples/{name}.yaml", env=environ)


def environment_without(*names: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in names}


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_passes_check_config(name):
    result = check_config(name, environment_without(*REQUIRED_ENV) | REQUIRED_ENV)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"proxy: examples/{name}.yaml: ok (")


@pytest.mark.parametrize(
    ("name", "variable", "key"),
    [
        pytest.param(
            "openai-sse", "OPENAI_API_KEY", "routes[0].headers.Authorization", id="openai"
        ),
        pytest.param(
            "internal-api", "INTERNAL_API_KEY", "routes[0].headers.X-Api-Key", id="internal"
        ),
    ],
)
def test_a_recipe_whose_secret_is_unset_does_not_start_and_names_the_variable(name, variable, key):
    others = {k: v for k, v in REQUIRED_ENV.items() if k != variable}
    result = check_config(name, environment_without(*REQUIRED_ENV) | others)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"proxy: error: examples/{name}.yaml: {key}: environment variable {variable} is not set"
    )
