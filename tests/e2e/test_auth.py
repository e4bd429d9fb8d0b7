"""Inbound auth over real sockets: a 401 JSON before any upstream request, a credential from the
header, a cookie, the query or a JWT opens the stream, and the query credential is never
forwarded nor logged. The pure decision: tests/unit/test_auth.py."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiohttp import web

from tests.support.credentials import KEY, SECRET, future, hs256
from tests.support.sse import parse_events
from tests.support.upstreams import ndjson_handler

# -- over real sockets -----------------------------------------------------------------------------


@pytest.fixture
async def guarded(start_upstream, start_gateway):
    seen: list[dict[str, Any]] = []

    async def upstream_handler(request: web.Request) -> web.StreamResponse:
        headers = {str(name): value for name, value in request.headers.items()}
        seen.append({"headers": headers, "body": orjson.loads(await request.read())})
        return await ndjson_handler([b'{"n": 1}\n'])(request)

    upstream = await start_upstream({"/chat": upstream_handler})
    gateway = await start_gateway(
        [
            {
                "path": "/chat",
                "upstream": upstream + "/chat",
                "auth": {
                    "api_keys": ["${CHAT_KEY}"],
                    "cookie": "sid",
                    "query_param": "access_token",
                    "jwt": {"secret": SECRET, "audience": "chat"},
                },
                "cors": {"allow_origins": ["http://app.test"]},
            }
        ],
        environ={"CHAT_KEY": KEY},
    )
    return gateway, seen


async def test_missing_or_wrong_credential_is_401_json_before_any_upstream_request(guarded, http):
    gateway, seen = guarded
    for headers, query in [
        ({}, ""),
        ({"Authorization": "Bearer nope"}, ""),
        ({}, "?access_token=x"),
    ]:
        async with http.get(f"{gateway}/chat{query}", headers=headers) as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"] == 'Bearer realm="proxy"'
            error = (await response.json())["error"]
            assert error["code"] == "unauthorized"
    assert seen == []


async def test_a_401_reaches_an_allowed_cross_origin_page_readably(guarded, http):
    gateway, _ = guarded
    async with http.get(f"{gateway}/chat", headers={"Origin": "http://app.test"}) as response:
        assert response.status == 401
        assert response.headers["Access-Control-Allow-Origin"] == "http://app.test"


async def test_key_from_header_cookie_or_query_and_a_jwt_each_open_the_stream(guarded, http):
    gateway, seen = guarded
    token = hs256({"exp": future(), "aud": "chat"})
    attempts = [
        ("", {"Authorization": f"Bearer {KEY}"}),
        ("", {"Cookie": f"sid={KEY}"}),
        (f"?access_token={KEY}&q=1", {}),
        (f"?access_token={token}", {}),
    ]
    for query, headers in attempts:
        async with http.get(f"{gateway}/chat{query}", headers=headers) as response:
            assert response.status == 200
            assert [e.data for e in parse_events(await response.read())] == ['{"n": 1}', ""]
    # The credential is the gateway's: never forwarded, in the body or in headers.
    assert [request["body"] for request in seen] == [{}, {}, {"q": "1"}, {}]
    for request in seen:
        assert KEY not in orjson.dumps(request).decode()
        assert "Authorization" not in request["headers"]


async def test_the_credential_never_appears_in_the_access_log(guarded, http, caplog):
    gateway, _ = guarded
    with caplog.at_level("INFO", logger="proxy"):
        async with http.get(f"{gateway}/chat?access_token={KEY}") as response:
            await response.read()
        async with http.get(f"{gateway}/chat?access_token=wrong-{KEY}") as response:
            assert response.status == 401
    lines = [
        r.getMessage() + orjson.dumps(r.stream.as_fields()).decode()
        for r in caplog.records
        if hasattr(r, "stream")
    ]
    assert len(lines) == 2
    assert not [line for line in lines if KEY in line]
