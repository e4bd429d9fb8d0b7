"""Fake backends that answer the way the real services do, byte for byte where it matters.

Each fake reproduces its service's Content-Type, framing, field names and terminal line (or lack of
one), so a recipe in ``examples/`` is tested against what it will really meet, not against what the
gateway would like to read. Where the real service's behaviour depends on the request (Ollama's
model, Kubernetes' ``resourceVersion``, an API key), the fake honours the same input.

Every fake records each request it got in ``requests`` (:class:`~tests.support.upstreams.Seen`:
method, path, query pairs in order, headers, JSON body) so a test can assert what the gateway sent
upstream; each streams its lines with :func:`~tests.support.upstreams.ndjson_handler`.

Sources for the bytes: Ollama's ``docs/api.md`` and its Go response structs (``api/types.go``:
field order, ``omitempty``), the Kubernetes API concepts page ("Efficient detection of changes",
watch bookmarks, 410 Gone), Spring WebFlux's ``Jackson2JsonEncoder`` (one value per line, ``\\n``
after each, no terminal line), OpenAI's streaming chat completions reference.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from tests.support.upstreams import Handler, Seen, json_body, ndjson_handler, recorded

__all__ = [
    "FakeInternalApi",
    "FakeKubernetes",
    "FakeOllama",
    "FakeOpenAI",
    "FakeSpringWebFlux",
]


def _line(document: dict[str, Any]) -> bytes:
    # Go's encoding/json and Jackson both write compact JSON, fields in declaration order.
    return orjson.dumps(document) + b"\n"


# -- Ollama ----------------------------------------------------------------------------------------


class FakeOllama:
    """``POST /api/chat`` and ``POST /api/generate`` with ``"stream": true``.

    ``ending`` picks how the stream ends: ``"done"`` (the real final line: ``"done": true``,
    ``done_reason``, timings, empty content), ``"cut"`` (the body ends cleanly before the done
    line, as when something in between gives up) or ``"error"`` (Ollama's own mid-stream error: a
    line ``{"error": "..."}``, then the end of the body). A model it does not have is a 404 with
    Ollama's JSON error, as the real server answers.
    """

    method = "POST"
    ERROR = "an error was encountered while running the model: unexpected EOF"

    def __init__(
        self,
        tokens: tuple[str, ...] = ("Hel", "lo", "!\n\n", "How", " can", " I", " help?"),
        *,
        ending: str = "done",
        models: tuple[str, ...] = ("llama3.2",),
    ) -> None:
        self.tokens = tokens
        self.ending = ending
        self.models = models
        self.requests: list[Seen] = []

    def handlers(self) -> dict[str, Handler]:
        return {
            "/api/chat": recorded(self.chat, self.requests),
            "/api/generate": recorded(self.generate, self.requests),
        }

    @staticmethod
    def created_at(index: int) -> str:
        return f"2024-11-24T15:36:{index:02d}.512345678Z"

    def chat_lines(self, model: str) -> list[bytes]:
        lines = [
            _line(
                {
                    "model": model,
                    "created_at": self.created_at(i),
                    "message": {"role": "assistant", "content": token},
                    "done": False,
                }
            )
            for i, token in enumerate(self.tokens)
        ]
        final = {
            "model": model,
            "created_at": self.created_at(len(self.tokens)),
            "message": {"role": "assistant", "content": ""},
            "done_reason": "stop",
            "done": True,
            **self._timings(),
        }
        return self._end(lines, final)

    def generate_lines(self, model: str) -> list[bytes]:
        lines = [
            _line(
                {
                    "model": model,
                    "created_at": self.created_at(i),
                    "response": token,
                    "done": False,
                }
            )
            for i, token in enumerate(self.tokens)
        ]
        final = {
            "model": model,
            "created_at": self.created_at(len(self.tokens)),
            "response": "",
            "done": True,
            "done_reason": "stop",
            "context": [128006, 882, 128007, 271, 9906],
            **self._timings(),
        }
        return self._end(lines, final)

    def _timings(self) -> dict[str, int]:
        return {
            "total_duration": 4883583458,
            "load_duration": 1334875,
            "prompt_eval_count": 26,
            "prompt_eval_duration": 342546000,
            "eval_count": len(self.tokens),
            "eval_duration": 4535599000,
        }

    def _end(self, lines: list[bytes], final: dict[str, Any]) -> list[bytes]:
        if self.ending == "done":
            return [*lines, _line(final)]
        if self.ending == "error":
            return [*lines[:3], _line({"error": self.ERROR})]
        assert self.ending == "cut", self.ending
        return lines

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, self.chat_lines)

    async def generate(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, self.generate_lines)

    async def _serve(
        self, request: web.Request, lines: Callable[[str], list[bytes]]
    ) -> web.StreamResponse:
        body = await json_body(request) or {}
        model = body.get("model", "")
        if model not in self.models:
            return web.json_response(
                {"error": f'model "{model}" not found, try pulling it first'}, status=404
            )
        return await ndjson_handler(lines(model))(request)


# -- Kubernetes ------------------------------------------------------------------------------------


class FakeKubernetes:
    """``GET /api/v1/namespaces/{namespace}/pods?watch=true``, as the API server answers it:
    ``Content-Type: application/json`` (not NDJSON) and one ``{"type", "object"}`` per line.

    Its history has five changes after a compaction point. Without ``resourceVersion`` a watch
    starts with a synthetic ``ADDED`` for every pod that exists now; with one it sends only the
    changes after it, and a version older than the compaction point is an in-stream ``ERROR``
    event carrying a 410 ``Status`` (HTTP 200 all the same). With ``allowWatchBookmarks=true`` a
    ``BOOKMARK`` at the newest version follows. The real server then keeps the watch open until
    ``timeoutSeconds``; this fake ends it at once, as if that time had come, or after ``hold``
    seconds of quiet.
    """

    method = "GET"
    COMPACTED = 12344  # the oldest version a watch can still start from
    HISTORY = (
        ("ADDED", "web-1", "12345", "Pending"),
        ("ADDED", "web-2", "12346", "Pending"),
        ("MODIFIED", "web-1", "12347", "Running"),
        ("DELETED", "web-2", "12348", "Pending"),
        ("ADDED", "web-3", "12349", "Pending"),
    )

    def __init__(self, hold: float = 0.0) -> None:
        self.requests: list[Seen] = []
        self.hold = hold

    def handlers(self) -> dict[str, Handler]:
        return {"/api/v1/namespaces/{namespace}/pods": recorded(self.pods, self.requests)}

    @staticmethod
    def pod(name: str, namespace: str, resource_version: str, phase: str) -> dict[str, Any]:
        return {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": f"6f1c2a3e-0000-4000-8000-00000000000{name[-1]}",
                "resourceVersion": resource_version,
                "creationTimestamp": "2024-11-24T15:30:00Z",
                "labels": {"app": "web"},
            },
            "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]},
            "status": {"phase": phase},
        }

    def event(self, kind: str, name: str, resource_version: str, phase: str, ns: str) -> bytes:
        return _line({"type": kind, "object": self.pod(name, ns, resource_version, phase)})

    def watch_lines(self, namespace: str, query: dict[str, str]) -> list[bytes]:
        newest = self.HISTORY[-1][2]
        since = query.get("resourceVersion")
        if since is None:
            alive: dict[str, tuple[str, str, str]] = {}
            for kind, name, version, phase in self.HISTORY:
                if kind == "DELETED":
                    alive.pop(name, None)
                else:
                    alive[name] = ("ADDED", version, phase)
            lines = [
                self.event(kind, name, version, phase, namespace)
                for name, (kind, version, phase) in alive.items()
            ]
        elif int(since) < self.COMPACTED:
            status = {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": f"too old resource version: {since} ({self.COMPACTED})",
                "reason": "Expired",
                "code": 410,
            }
            return [_line({"type": "ERROR", "object": status})]
        else:
            lines = [
                self.event(kind, name, version, phase, namespace)
                for kind, name, version, phase in self.HISTORY
                if int(version) > int(since)
            ]
        if query.get("allowWatchBookmarks") == "true":
            bookmark = {
                "kind": "Pod",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": newest, "creationTimestamp": None},
                "spec": {"containers": None},
                "status": {},
            }
            lines.append(_line({"type": "BOOKMARK", "object": bookmark}))
        return lines

    async def pods(self, request: web.Request) -> web.StreamResponse:
        query = dict(request.query.items())
        namespace = request.match_info["namespace"]
        if query.get("watch") not in ("true", "1"):
            items = [
                self.pod(name, namespace, version, phase)
                for _, name, version, phase in self.HISTORY[:2]
            ]
            return web.json_response(
                {
                    "kind": "PodList",
                    "apiVersion": "v1",
                    "metadata": {"resourceVersion": self.HISTORY[-1][2]},
                    "items": items,
                }
            )
        lines = self.watch_lines(namespace, query)
        if not self.hold:
            return await ndjson_handler(lines, "application/json")(request)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        for line in lines:
            await response.write(line)
        await asyncio.sleep(self.hold)  # a quiet namespace: the watch stays open
        await response.write_eof()
        return response


# -- Spring WebFlux --------------------------------------------------------------------------------


class FakeSpringWebFlux:
    """A ``Flux<Quote>`` controller: ``POST /api/quotes/stream`` with a JSON body, answered with
    ``application/stream+json`` (Spring before 5.3) or ``application/x-ndjson`` (after). Jackson
    writes each element and a ``\\n``; the Flux completing just ends the body (no terminal line).
    A Flux that fails after the response started cannot say so: Spring drops the connection,
    leaving the chunked body unterminated (``fail_after``)."""

    method = "POST"
    PRICES = (("ACME", 101.25), ("INIT", 42.5), ("ACME", 101.3), ("INIT", 42.45))

    def __init__(
        self, content_type: str = "application/stream+json", *, fail_after: int | None = None
    ) -> None:
        self.content_type = content_type
        self.fail_after = fail_after
        self.requests: list[Seen] = []

    def handlers(self) -> dict[str, Handler]:
        return {"/api/quotes/stream": recorded(self.quotes, self.requests)}

    def quote_lines(self, symbols: list[str], limit: int) -> list[bytes]:
        quotes = [
            {"symbol": symbol, "price": price, "time": f"2024-11-24T15:36:0{i}Z"}
            for i, (symbol, price) in enumerate(self.PRICES)
            if symbol in symbols
        ]
        return [_line(quote) for quote in quotes[:limit]]

    async def quotes(self, request: web.Request) -> web.StreamResponse:
        body = await json_body(request) or {}
        if not isinstance(body.get("symbols"), list):
            # Spring's default error body for a failed @RequestBody validation.
            return web.json_response(
                {
                    "timestamp": "2024-11-24T15:36:00.000+00:00",
                    "path": "/api/quotes/stream",
                    "status": 400,
                    "error": "Bad Request",
                    "requestId": "1a2b3c4d-1",
                },
                status=400,
            )
        lines = self.quote_lines(body["symbols"], int(body.get("limit", 100)))
        if self.fail_after is not None and 0 < self.fail_after <= len(lines):
            failing = ndjson_handler(lines[: self.fail_after], self.content_type, end="abort")
            return await failing(request)
        return await ndjson_handler(lines, self.content_type)(request)


# -- OpenAI-compatible -----------------------------------------------------------------------------


class FakeOpenAI:
    """``POST /v1/chat/completions`` with ``"stream": true``: ``text/event-stream`` with one
    ``data: {chunk}`` block per delta, blank-line separated, then ``data: [DONE]``. The first chunk
    carries the role, the last an empty delta and ``finish_reason``. A wrong bearer token is a 401
    with OpenAI's error object."""

    method = "POST"
    ID = "chatcmpl-AXs6bT3qJkz9Lq1vY2mN8pR4tU7wE"
    CREATED = 1732462560

    def __init__(self, api_key: str, tokens: tuple[str, ...] = ("Hel", "lo", "!")) -> None:
        self.api_key = api_key
        self.tokens = tokens
        self.requests: list[Seen] = []

    def handlers(self) -> dict[str, Handler]:
        return {"/v1/chat/completions": recorded(self.completions, self.requests)}

    def chunk(self, model: str, delta: dict[str, Any], finish_reason: str | None) -> bytes:
        return orjson.dumps(
            {
                "id": self.ID,
                "object": "chat.completion.chunk",
                "created": self.CREATED,
                "model": model,
                "system_fingerprint": "fp_0ba0d124f1",
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
                ],
            }
        )

    def chunks(self, model: str) -> list[bytes]:
        """The ``data:`` values of the stream, in order, ``[DONE]`` included."""
        return [
            self.chunk(model, {"role": "assistant", "content": "", "refusal": None}, None),
            *(self.chunk(model, {"content": token}, None) for token in self.tokens),
            self.chunk(model, {}, "stop"),
            b"[DONE]",
        ]

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await json_body(request) or {}
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response(
                {
                    "error": {
                        "message": "Incorrect API key provided. You can find your API key at "
                        "https://platform.openai.com/account/api-keys.",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": "invalid_api_key",
                    }
                },
                status=401,
            )
        blocks = [b"data: " + data + b"\n\n" for data in self.chunks(body.get("model", ""))]
        return await ndjson_handler(blocks, "text/event-stream; charset=utf-8")(request)


# -- a generic internal API ------------------------------------------------------------------------


class FakeInternalApi:
    """``POST /v1/jobs/{job_id}/events``: needs ``X-Api-Key`` (a 401 JSON error otherwise) and
    streams ``application/x-ndjson`` lines ``{"seq", "kind", "payload"}``. A body field
    ``after_seq`` resumes after that sequence number."""

    method = "POST"
    EVENTS = (
        ("progress", {"percent": 25}),
        ("progress", {"percent": 75}),
        ("log", {"level": "info", "text": "merged 3 shards"}),
        ("result", {"rows": 1200, "url": "/v1/jobs/job-7/result"}),
    )

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.requests: list[Seen] = []

    def handlers(self) -> dict[str, Handler]:
        return {"/v1/jobs/{job_id}/events": recorded(self.events, self.requests)}

    def event_lines(self, after: int = 0) -> list[bytes]:
        return [
            _line({"seq": seq, "kind": kind, "payload": payload})
            for seq, (kind, payload) in enumerate(self.EVENTS, 1)
            if seq > after
        ]

    async def events(self, request: web.Request) -> web.StreamResponse:
        body = await json_body(request) or {}
        if request.headers.get("X-Api-Key") != self.api_key:
            return web.json_response(
                {"error": "unauthorized", "message": "missing or invalid X-Api-Key"}, status=401
            )
        after = int(body.get("after_seq", 0))
        return await ndjson_handler(self.event_lines(after))(request)
