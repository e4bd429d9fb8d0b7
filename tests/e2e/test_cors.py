"""CORS per route over real sockets: what a browser's requests get, a preflight included.

(Chromium itself opening a ``withCredentials`` EventSource cross-origin is in
tests/clients/test_doc_snippets.py.)
"""

from __future__ import annotations

import pytest

from tests.support.sse import parse_events
from tests.support.upstreams import ndjson_handler

APP = "http://127.0.0.1:5173"
OTHER = "http://evil.example"


# -- over real sockets -----------------------------------------------------------------------------


@pytest.fixture
async def counted_gateway(start_upstream, start_gateway):
    """A gateway with one CORS route (credentials) and one without; and the upstream's count."""
    requests: list[str] = []
    stream = ndjson_handler([b'{"n": 1}\n'])

    async def upstream_handler(request):
        requests.append(request.headers.get("Cookie", ""))
        return await stream(request)

    upstream = await start_upstream({"/chat": upstream_handler})
    cors = {"allow_origins": [APP], "allow_credentials": True, "allow_headers": ["X-Request-Id"]}
    gateway = await start_gateway(
        [
            {
                "path": "/chat",
                "upstream": upstream + "/chat",
                "forward_headers": ["Cookie"],
                "cors": cors,
            },
            {"path": "/plain", "upstream": upstream + "/chat"},
        ]
    )
    return gateway, requests


async def test_allowed_origin_gets_the_stream_with_cors_headers(counted_gateway, http):
    gateway, requests = counted_gateway
    headers = {"Origin": APP, "Cookie": "session=abc"}
    async with http.get(f"{gateway}/chat", headers=headers) as response:
        assert response.status == 200
        assert response.headers["Access-Control-Allow-Origin"] == APP
        assert response.headers["Access-Control-Allow-Credentials"] == "true"
        assert response.headers["Vary"] == "Origin"
        events = parse_events(await response.read())
    assert [e.data for e in events] == ['{"n": 1}', ""]
    assert requests == ["session=abc"]


async def test_other_origin_gets_403_json_and_no_upstream_request(counted_gateway, http):
    gateway, requests = counted_gateway
    async with http.get(f"{gateway}/chat", headers={"Origin": OTHER}) as response:
        assert response.status == 403
        assert "Access-Control-Allow-Origin" not in response.headers
        error = (await response.json())["error"]
    assert error["code"] == "origin_not_allowed"
    assert OTHER in error["message"]
    assert requests == []


async def test_same_origin_and_originless_requests_need_no_cors(counted_gateway, http):
    gateway, requests = counted_gateway
    for headers in ({"Origin": gateway}, {}):
        async with http.post(f"{gateway}/chat", json={}, headers=headers) as response:
            assert response.status == 200
            assert "Access-Control-Allow-Origin" not in response.headers
            await response.read()
    assert len(requests) == 2


async def test_upstream_error_reaches_an_allowed_page_readably(start_upstream, start_gateway, http):
    upstream = await start_upstream({})  # every path 404
    gateway = await start_gateway(
        [{"path": "/chat", "upstream": upstream + "/nope", "cors": {"allow_origins": [APP]}}]
    )
    async with http.get(f"{gateway}/chat", headers={"Origin": APP}) as response:
        assert response.status == 404
        assert response.headers["Access-Control-Allow-Origin"] == APP
        assert (await response.json())["error"]["upstream_status"] == 404


async def test_preflight_from_an_allowed_origin_is_204_with_the_rules(counted_gateway, http):
    gateway, requests = counted_gateway
    headers = {
        "Origin": APP,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, x-request-id",
    }
    async with http.options(f"{gateway}/chat", headers=headers) as response:
        assert response.status == 204
        assert response.headers["Access-Control-Allow-Origin"] == APP
        assert response.headers["Access-Control-Allow-Methods"] == "GET, POST"
        assert response.headers["Access-Control-Allow-Headers"] == "X-Request-Id"
        assert response.headers["Access-Control-Max-Age"] == "600"
        assert response.headers["Access-Control-Allow-Credentials"] == "true"
    async with http.options(f"{gateway}/chat", headers={**headers, "Origin": OTHER}) as response:
        assert response.status == 403
        assert (await response.json())["error"]["code"] == "origin_not_allowed"
    assert requests == []


async def test_route_without_cors_has_no_preflight_and_no_cors_headers(counted_gateway, http):
    gateway, requests = counted_gateway
    async with http.options(f"{gateway}/plain", headers={"Origin": APP}) as response:
        assert response.status == 405
    async with http.get(f"{gateway}/plain", headers={"Origin": gateway}) as response:
        assert response.status == 200
        assert "Access-Control-Allow-Origin" not in response.headers
        await response.read()
    assert len(requests) == 1


@pytest.mark.parametrize("origin", [APP, OTHER, "null", "http://127.0.0.1:1"])
async def test_a_foreign_origin_on_a_route_without_cors_is_403_before_any_upstream_request(
    counted_gateway, http, origin
):
    # Without cors a route is for the gateway's own pages and for clients that send no Origin;
    # a page on another site must not spend the route's upstream (an LLM's budget) in the
    # visitor's name, with the visitor's cookies.
    gateway, requests = counted_gateway
    for method in ("GET", "POST"):
        async with http.request(method, f"{gateway}/plain", headers={"Origin": origin}) as response:
            assert response.status == 403
            assert "Access-Control-Allow-Origin" not in response.headers
            error = (await response.json())["error"]
        assert error["code"] == "origin_not_allowed"
        assert origin in error["message"]
    assert requests == []
