"""The docs' snippets, run as written, so the docs cannot drift: the browser ones (docs/browser.md)
in Chromium, the README's configuration sketch through ``--check-config``.

Each snippet is taken from its page by its marker (tests/doc_snippets.py) and run untouched in
a page: same-origin ones in a page the gateway serves (``/healthz``), the ``withCredentials`` one in
a page from another port, which is another origin but the same site, so a cookie the page sets
goes to the gateway. The routes are the page's YAML snippets too, pointed at a real upstream on
loopback. What is asserted is what the browser observed (the ``output`` text, the ``close()``
calls and the event that caused each) and what the upstream received, request by request, which is
how "no reconnect" is seen.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import re
import subprocess
import sys
import time
from typing import Any

import pytest
from aiohttp import web

from proxy.sse import SSERetry
from tests.support import ROOT, doc_snippets
from tests.support.conformance import CASES, Case, msg
from tests.support.doc_snippets import (
    SnippetError,
    SnippetPage,
    extract_snippets,
    find_snippet,
    readme_route,
    snippet,
)
from tests.support.sse import parse_events
from tests.support.upstreams import Seen, ndjson_handler, recorded
from tests.support.waiting import eventually

CLOSED = 2  # EventSource.readyState
RETRY = {"events": {"retry": 200}}  # ms: a reconnect, were there one, comes within a second
NO_RECONNECT_WAIT = 1.0

ANSWER = [
    b'{"content": "The sky is "}\n',
    b'{"content": "blue, "}\n',
    b'{"type": "tool_call", "content": {"name": "search", "query": "Rayleigh"}}\n',
    '{"content": "thanks to Rayleigh scattering ✓"}\n'.encode(),
]
#: What the eventsource and fetch-post snippets show for ANSWER.
SHOWN = "The sky is blue, \n[calling search]\nthanks to Rayleigh scattering ✓"
#: The with-credentials snippet listens to messages only.
SHOWN_MESSAGES_ONLY = "The sky is blue, thanks to Rayleigh scattering ✓"


def assert_is_the_question(body: Any) -> None:
    """The snippets send ``{"messages": [{"role": "user", "content": ...}]}``, as the prose says."""
    assert list(body) == ["messages"]
    (message,) = body["messages"]
    assert message["role"] == "user"
    assert isinstance(message["content"], str)
    assert message["content"]


async def chat_upstream(start_upstream: Any, handler: Any) -> tuple[str, list[Seen]]:
    """An upstream at ``/api/chat`` (the snippet routes' path) that records what it gets."""
    seen: list[Seen] = []
    base = await start_upstream({"/api/chat": recorded(handler, seen)})
    return base + "/api/chat", seen


async def line_then_drop(request: web.Request) -> web.StreamResponse:
    """An upstream that sends one line, then loses its connection mid-body."""
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    await response.write(ANSWER[0])
    transport = request.transport
    assert transport is not None
    transport.close()
    return response


async def model_not_found(request: web.Request) -> web.Response:
    return web.json_response({"error": 'model "llama9" not found'}, status=404)


# -- each page holds its snippets under their markers ---------------------------------------------


@pytest.mark.parametrize(
    ("name", "lang", "page"),
    [
        ("sketch", "yaml", "README.md"),
        ("route", "yaml", "docs/browser.md"),
        ("eventsource", "js", "docs/browser.md"),
        ("with-credentials", "js", "docs/browser.md"),
        ("cors-route", "yaml", "docs/browser.md"),
        ("fetch-post", "js", "docs/browser.md"),
        ("streams-route", "yaml", "docs/browser.md"),
        ("stream-url", "js", "docs/browser.md"),
    ],
)
def test_each_page_holds_its_snippets_in_a_fenced_block_right_after_the_marker(name, lang, page):
    found = find_snippet(name, lang)
    assert found.page == page
    assert found.code.strip()


def test_a_snippet_name_used_on_two_pages_is_an_error(tmp_path, monkeypatch):
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("<!-- snippet: a -->\n" + "```js\nconst a = 1;\n```\n")
    (tmp_path / "docs" / "page.md").write_text(
        "<!-- snippet: a -->\n" + "```js\nconst a = 2;\n```\n"
    )
    monkeypatch.setattr(doc_snippets, "ROOT", tmp_path)

    with pytest.raises(
        SnippetError, match=re.escape("docs/page.md line 1: snippet 'a' marked twice")
    ):
        snippet("a")


def test_the_readme_config_sketch_is_a_valid_configuration_of_one_route(tmp_path):
    config = tmp_path / "gateway.yaml"
    config.write_text(snippet("sketch", "yaml"), encoding="utf-8")
    environ = {k: v for k, v in os.environ.items() if k not in {"OLLAMA_URL", "OLLAMA_MODEL"}}

    checked = subprocess.run(
        [sys.executable, "-m", "proxy", "--config", str(config), "--check-config"],
        capture_output=True,
        text=True,
        env=environ,
        cwd=ROOT,
        timeout=60,
        check=False,
    )

    assert (checked.returncode, checked.stderr) == (0, "")
    assert checked.stdout == f"proxy: {config}: ok (1 route)\n"


JS = "```js\nconst a = 1;\n```\n"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        pytest.param("# README\n", "no <!-- snippet: eventsource --> marker", id="no-marker"),
        pytest.param(
            "<!-- snippet: eventsource -->\n\n" + JS,
            "not followed by a fenced code block",
            id="blank-line-before-the-fence",
        ),
        pytest.param(
            "<!-- snippet: eventsource -->\nSome prose.\n" + JS,
            "not followed by a fenced code block",
            id="prose-after-the-marker",
        ),
        pytest.param(
            "<!-- snippet: eventsource -->", "not followed by a fenced code block", id="at-the-end"
        ),
        pytest.param(
            "<!-- snippet: eventsource -->\n```yaml\na: 1\n```\n",
            "a 'yaml' block, not 'js'",
            id="another-language",
        ),
        pytest.param(
            "<!-- snippet: eventsource -->\n```js\nconst a = 1;\n", "never closed", id="unclosed"
        ),
        pytest.param("<!-- snippet: eventsource -->\n```js\n```\n", "is empty", id="empty-block"),
        pytest.param(
            "<!-- snippet: eventsource -->\n" + JS + "<!-- snippet: eventsource -->\n" + JS,
            "marked twice",
            id="marked-twice",
        ),
        pytest.param(
            "<!-- snippet eventsource -->\n" + JS, "malformed snippet marker", id="malformed"
        ),
    ],
)
def test_a_snippet_not_held_as_the_markers_promise_is_an_error(text, problem):
    with pytest.raises(SnippetError, match=re.escape(problem)):
        snippet("eventsource", "js", text=text)


def test_extract_snippets_keeps_the_code_exactly():
    text = "<!-- snippet: a -->\n```js\nconst x = `\n  ${y}`;\n\n// end\n```\nprose\n"
    (found,) = extract_snippets(text).values()
    assert (found.name, found.lang, found.line) == ("a", "js", 1)
    assert found.code == "const x = `\n  ${y}`;\n\n// end\n"


# -- eventsource: a same-origin page -----------------------------------------------------------------


async def test_eventsource_snippet_shows_tokens_and_tool_calls_and_closes_on_end_for_good(
    browser, start_upstream, start_gateway
):
    upstream, seen = await chat_upstream(start_upstream, ndjson_handler(ANSWER))
    gateway = await start_gateway([readme_route("route", upstream, **RETRY)])
    page = await SnippetPage.open(browser, gateway + "/healthz")

    await page.run(snippet("eventsource"))
    await page.wait_for("snippetLog.closed.length > 0")
    await asyncio.sleep(NO_RECONNECT_WAIT)

    assert await page.output() == SHOWN
    (close,) = await page.closed()
    assert (close["during"], close["readyState"], close["output"]) == ("end", 1, SHOWN)
    (source,) = await page.sources()
    assert source["url"].startswith(gateway + "/v1/chat?body=")
    assert source["readyState"] == CLOSED
    (request,) = seen  # closed on `end`: the browser did not ask again
    assert request.method == "POST"
    assert_is_the_question(request.body)
    assert page.errors == []


async def test_eventsource_snippet_shows_the_gateways_error_event_and_closes(
    browser, start_upstream, start_gateway
):
    upstream, seen = await chat_upstream(start_upstream, line_then_drop)
    gateway = await start_gateway([readme_route("route", upstream, **RETRY)])
    page = await SnippetPage.open(browser, gateway + "/healthz")

    await page.run(snippet("eventsource"))
    await page.wait_for("snippetLog.closed.length > 0")
    await asyncio.sleep(NO_RECONNECT_WAIT)

    shown = await page.output()
    assert shown.startswith("The sky is \n[error upstream_closed: ")
    assert shown.endswith("]")
    (close,) = await page.closed()
    assert (close["during"], close["readyState"]) == ("error", 1)  # told in-band, then closed
    assert len(seen) == 1
    assert page.errors == []


async def test_eventsource_snippet_reports_a_refused_connection_that_the_browser_closed(
    browser, start_upstream, start_gateway
):
    upstream, seen = await chat_upstream(start_upstream, model_not_found)
    gateway = await start_gateway([readme_route("route", upstream, **RETRY)])
    page = await SnippetPage.open(browser, gateway + "/healthz")

    await page.run(snippet("eventsource"))
    await page.wait_for("output.textContent !== ''")

    assert await page.output() == "\n[could not connect]"
    assert await page.closed() == []  # the browser's own decision, not the page's
    (source,) = await page.sources()
    assert source["readyState"] == CLOSED
    assert len(seen) == 1
    assert page.errors == []


# -- with-credentials: a page on another origin ----------------------------------------------------

APP_PAGE = "<!doctype html><html><head><title>app</title></head><body></body></html>"


async def app_page(request: web.Request) -> web.Response:
    return web.Response(text=APP_PAGE, content_type="text/html")


async def open_app_page(browser: Any, app: str, gateway: str) -> SnippetPage:
    """The app's page, on its own origin, with the session cookie the gateway is to receive."""
    assert app != gateway
    page = await SnippetPage.open(browser, app + "/app", gateway=gateway)
    # Cookies are per host, not per port: this one is also the gateway's (same site, so sent).
    await page.page.evaluate('() => { document.cookie = "session=abc123; path=/"; }')
    return page


async def test_with_credentials_snippet_streams_from_another_origin_and_sends_the_cookie(
    browser, start_upstream, start_gateway
):
    app = await start_upstream({"/app": app_page}, method="GET")
    upstream, seen = await chat_upstream(start_upstream, ndjson_handler(ANSWER))
    gateway = await start_gateway(
        [readme_route("cors-route", upstream, cors={"allow_origins": [app]}, **RETRY)]
    )
    page = await open_app_page(browser, app, gateway)

    await page.run(snippet("with-credentials"))
    await page.wait_for("snippetLog.closed.length > 0")
    await asyncio.sleep(NO_RECONNECT_WAIT)

    assert await page.output() == SHOWN_MESSAGES_ONLY
    (close,) = await page.closed()
    assert (close["during"], close["output"]) == ("end", SHOWN_MESSAGES_ONLY)
    (source,) = await page.sources()
    assert source["url"].startswith(gateway + "/v1/chat?body=")
    assert source["withCredentials"] is True
    (request,) = seen
    assert request.headers["Cookie"] == "session=abc123"
    assert_is_the_question(request.body)
    assert page.errors == []


@pytest.mark.parametrize(
    "cors",
    [
        pytest.param(None, id="route-without-cors"),
        pytest.param("as-on-the-page", id="origin-not-in-allow_origins"),
    ],
)
async def test_with_credentials_snippet_fails_without_cors_for_the_pages_origin(
    browser, start_upstream, start_gateway, cors
):
    app = await start_upstream({"/app": app_page}, method="GET")
    upstream, seen = await chat_upstream(start_upstream, ndjson_handler(ANSWER))
    route = readme_route("cors-route", upstream)  # allows https://app.example.com only
    if cors is None:
        del route["cors"]
    gateway = await start_gateway([route])
    page = await open_app_page(browser, app, gateway)

    await page.run(snippet("with-credentials"))
    await page.wait_for("output.textContent !== ''")

    # One error, no events: the browser hid the stream from a page the gateway did not allow.
    assert await page.output() == "\n[could not connect: is this origin in cors.allow_origins?]"
    assert await page.closed() == []
    (source,) = await page.sources()
    assert source["readyState"] == CLOSED
    if cors is not None:
        assert seen == []  # refused before the upstream was asked
    assert page.errors == []


CROSS_ORIGIN_FETCH_JS = """
async () => {
  try {
    const response = await fetch(GATEWAY + "/v1/chat", {
      method: "POST",
      credentials: "include",
      headers: {"Content-Type": "application/json", "X-Request-Id": "cross-1"},
      body: JSON.stringify({messages: [{role: "user", content: "Why?"}]}),
    });
    return {status: response.status, text: await response.text()};
  } catch (error) {
    return {failed: String(error)};
  }
}
"""


async def test_a_cross_origin_fetch_with_credentials_and_x_request_id_passes_the_preflight(
    browser, start_upstream, start_gateway
):
    app = await start_upstream({"/app": app_page}, method="GET")
    upstream, seen = await chat_upstream(start_upstream, ndjson_handler(ANSWER))
    gateway = await start_gateway(
        [readme_route("cors-route", upstream, cors={"allow_origins": [app]})]
    )
    page = await open_app_page(browser, app, gateway)

    # What the page's prose says to change in the fetch snippet for another origin.
    fetched = await page.page.evaluate(CROSS_ORIGIN_FETCH_JS)

    assert fetched.get("status") == 200, fetched
    assert [e.data for e in parse_events(fetched["text"].encode())][:2] == ["The sky is ", "blue, "]
    (request,) = seen  # the OPTIONS preflight is the gateway's own answer
    assert request.headers["X-Request-Id"] == "cross-1"
    assert request.headers["Cookie"] == "session=abc123"


async def test_a_cross_origin_fetch_with_a_header_not_in_allow_headers_fails_its_preflight(
    browser, start_upstream, start_gateway
):
    app = await start_upstream({"/app": app_page}, method="GET")
    upstream, seen = await chat_upstream(start_upstream, ndjson_handler(ANSWER))
    cors = {"allow_origins": [app], "allow_headers": ["Content-Type"]}
    gateway = await start_gateway([readme_route("cors-route", upstream, cors=cors)])
    page = await open_app_page(browser, app, gateway)

    fetched = await page.page.evaluate(CROSS_ORIGIN_FETCH_JS)

    assert fetched == {"failed": "TypeError: Failed to fetch"}
    assert seen == []  # Chromium never sent the POST


async def test_the_cors_answers_the_browser_page_describes(start_upstream, start_gateway, http):
    origin = "https://app.example.com"  # the one the snippet's route allows
    upstream, seen = await chat_upstream(start_upstream, ndjson_handler(ANSWER))
    gateway = await start_gateway([readme_route("cors-route", upstream)])
    url = gateway + "/v1/chat"

    async with http.post(url, json={"messages": []}, headers={"Origin": origin}) as response:
        assert response.status == 200
        assert response.headers["Access-Control-Allow-Origin"] == origin
        assert "Origin" in response.headers["Vary"]
        assert response.headers["Access-Control-Allow-Credentials"] == "true"
        await response.read()

    preflight = {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-request-id",
    }
    async with http.options(url, headers=preflight) as response:
        assert response.status == 204
        assert response.headers["Access-Control-Allow-Origin"] == origin
        assert response.headers["Access-Control-Allow-Credentials"] == "true"
        assert {m.strip() for m in response.headers["Access-Control-Allow-Methods"].split(",")} >= {
            "GET",
            "POST",
        }
        allowed = {
            h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")
        }
        assert allowed >= {"content-type", "x-request-id"}
        assert response.headers["Access-Control-Max-Age"] == "600"

    refused = {"Origin": "https://evil.example.net"}
    async with http.post(url, json={"messages": []}, headers=refused) as response:
        assert response.status == 403
        assert (await response.json())["error"]["code"] == "origin_not_allowed"
    assert len(seen) == 1  # the allowed POST only


# -- stream-url: POST, then EventSource, then DELETE ---------------------------------------------

TOKENS = [b'{"content": "%s"}\n' % word.encode() for word in ("The ", "sky ", "is ", "blue.")]


async def test_stream_url_snippet_posts_the_body_reads_it_with_eventsource_and_closes_on_end(
    browser, start_upstream, start_gateway
):
    upstream, seen = await chat_upstream(start_upstream, ndjson_handler(TOKENS, pause=0.05))
    gateway = await start_gateway([readme_route("streams-route", upstream, **RETRY)])
    page = await SnippetPage.open(browser, gateway + "/healthz")

    await page.run(snippet("stream-url"))
    await page.wait_for("snippetLog.closed.length > 0")
    await asyncio.sleep(NO_RECONNECT_WAIT)

    assert await page.output() == "The sky is blue."
    (close,) = await page.closed()
    assert close["during"] == "end"
    (source,) = await page.sources()
    assert re.fullmatch(re.escape(gateway) + r"/v1/chat/streams/[A-Za-z0-9_-]{22}", source["url"])
    (request,) = seen  # the POST's body went upstream once; the EventSource read the buffer
    assert request.method == "POST"
    assert_is_the_question(request.body)
    assert page.errors == []


async def test_stream_url_snippet_stops_the_upstream_request_when_the_page_calls_stop(
    browser, start_upstream, start_gateway
):
    closed: list[float] = []

    async def slow(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        try:
            for n in range(100):
                await response.write(b'{"content": "%d "}\n' % n)
                await asyncio.sleep(0.2)
        except (ConnectionError, asyncio.CancelledError):
            closed.append(time.monotonic())
            raise
        return response

    upstream, seen = await chat_upstream(start_upstream, slow)
    gateway = await start_gateway([readme_route("streams-route", upstream, **RETRY)])
    page = await SnippetPage.open(browser, gateway + "/healthz")

    await page.run(snippet("stream-url"))
    await page.wait_for("output.textContent.startsWith('0 1 ')")
    asked = time.monotonic()
    await page.page.evaluate("() => stopChat()")
    await page.wait_for("output.textContent.endsWith('[stopped]')")
    await eventually(lambda: bool(closed), "the upstream request is closed")

    assert closed[0] - asked < 1.0
    (close,) = await page.closed()
    assert close["during"] == "error"
    assert len(seen) == 1
    assert page.errors == []


# -- fetch-post: a same-origin page ----------------------------------------------------------------


async def test_fetch_snippet_posts_json_with_x_request_id_and_shows_the_answer(
    browser, start_upstream, start_gateway, http
):
    # Pauses longer than the heartbeat put ": ping" comments between the events.
    upstream, seen = await chat_upstream(start_upstream, ndjson_handler(ANSWER, pause=0.15))
    gateway = await start_gateway([readme_route("route", upstream, events={"heartbeat": 0.05})])
    page = await SnippetPage.open(browser, gateway + "/healthz")

    await page.run(snippet("fetch-post"))
    await page.wait_for(
        f"output.textContent === {json.dumps(SHOWN)} || output.textContent.includes('[error')"
    )
    await asyncio.sleep(0.5)  # nothing more comes: the snippet returned on `end`

    assert await page.output() == SHOWN
    (request,) = seen
    assert request.method == "POST"
    assert_is_the_question(request.body)
    assert request.headers["Content-Type"] == "application/json"
    assert re.fullmatch(r"req-\d+", request.headers["X-Request-Id"])

    # The snippet's parser gives exactly the events the gateway sent, pings and all.
    question = request.body
    in_page = await page.page.evaluate(
        """async (body) => {
          const response = await fetch("/v1/chat", {
            method: "POST",
            headers: {"Content-Type": "application/json", Accept: "text/event-stream"},
            body: JSON.stringify(body),
          });
          const events = [];
          for await (const e of readEvents(response)) events.push([e.event, e.data, e.id]);
          return events;
        }""",
        question,
    )
    async with http.post(gateway + "/v1/chat", json=question) as response:
        raw = await response.read()
    assert b"\n: ping\n" in raw
    sent = [(e.event, e.data, e.id) for e in parse_events(raw)]
    assert [tuple(e) for e in in_page] == sent
    assert sent[-2:] == [("message", "thanks to Rayleigh scattering ✓", "4"), ("end", "", "4")]
    assert page.errors == []


async def test_fetch_snippet_shows_the_json_error_of_an_upstream_4xx(
    browser, start_upstream, start_gateway
):
    upstream, seen = await chat_upstream(start_upstream, model_not_found)
    gateway = await start_gateway([readme_route("route", upstream)])
    page = await SnippetPage.open(browser, gateway + "/healthz")

    await page.run(snippet("fetch-post"))
    await page.wait_for("output.textContent !== ''")

    shown = await page.output()
    assert shown.startswith("\n[error 404 upstream_status: ")
    assert 'model "llama9" not found' in shown
    assert len(seen) == 1
    assert page.errors == []


# The WHATWG spec reads a line break right after a leading BOM as a line end, and so does
# readEvents (TextDecoder drops the BOM); Chromium, and the table, which follows it, do not.
SPEC_NOT_CHROMIUM = {
    "bom-then-lf-glues-to-the-next-line-as-in-chromium": (msg("a"),),
    "bom-then-cr-glues-to-the-next-line-as-in-chromium": (msg("a"),),
}
BYTEWISE_UP_TO = 4096  # bytes; beyond, one chunk per byte makes any line parser quadratic


def chunkings(case: Case) -> list[list[bytes]]:
    raw = case.raw
    ways = [[raw]]
    if len(raw) <= BYTEWISE_UP_TO:
        ways.append([raw[i : i + 1] for i in range(len(raw))])
    for seed in range(3):
        rng = random.Random(f"{case.id}/{seed}")
        cuts = sorted(rng.randint(0, len(raw)) for _ in range(rng.randint(1, 8)))
        ways.append([raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)])
    return ways


PARSE_CHUNKS_JS = """
async (ways) => {
  const results = [];
  for (const chunks of ways) {
    const body = new ReadableStream({
      start(controller) {
        for (const chunk of chunks) controller.enqueue(Uint8Array.from(atob(chunk), (c) => c.charCodeAt(0)));
        controller.close();
      },
    });
    const events = [];
    for await (const e of readEvents(new Response(body))) events.push([e.event, e.data, e.id]);
    results.push(events);
  }
  return results;
}
"""


async def test_fetch_snippet_parser_agrees_with_the_spec_on_every_conformance_case_however_cut(
    browser, start_upstream, start_gateway
):
    upstream, _ = await chat_upstream(start_upstream, ndjson_handler(ANSWER))
    gateway = await start_gateway([readme_route("route", upstream)])
    page = await SnippetPage.open(browser, gateway + "/healthz")
    await page.run(snippet("fetch-post"))
    await page.wait_for(f"output.textContent === {json.dumps(SHOWN)}")

    plan = [(case, chunks) for case in CASES for chunks in chunkings(case)]
    encoded = [[base64.b64encode(chunk).decode() for chunk in chunks] for _, chunks in plan]
    results = await page.page.evaluate(PARSE_CHUNKS_JS, encoded)

    mismatches = []
    for (case, chunks), got in zip(plan, results, strict=True):
        expected = SPEC_NOT_CHROMIUM.get(case.id, case.expected)
        want = [tuple(e) for e in expected if not isinstance(e, SSERetry)]
        if [tuple(e) for e in got] != want:
            cut = [len(c) for c in chunks]
            mismatches.append(f"{case.id} cut {cut[:12]}: got {got!r:.300}, want {want!r:.300}")
    assert not mismatches, f"{len(mismatches)} of {len(plan)}:\n" + "\n".join(mismatches[:20])
    assert page.errors == []
