"""The built-in demo: an upstream in the shape of Ollama's ``POST /api/chat`` and a page at ``/``.

The bundled ``config.yaml`` routes ``/v1/chat`` to ``/demo/api/chat`` on this same server, so the
gateway works out of the box with nothing else running, through a real HTTP hop.
"""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime
from importlib.resources import files
from typing import Any, Final

import orjson
from aiohttp import web

from proxy.paths import DEMO_PATHS

__all__ = ["DEMO_CHAT_PATH", "add_demo_routes", "demo_reply_tokens"]

DEMO_PAGE_PATH, DEMO_CHAT_PATH = DEMO_PATHS
DEFAULT_DELAY_MS: Final = 60
_TOKEN: Final = re.compile(r"\S+\s*|\s+")


def add_demo_routes(app: web.Application) -> None:
    app.router.add_get(DEMO_PAGE_PATH, _page)
    app.router.add_post(DEMO_CHAT_PATH, _chat)


def demo_reply_tokens(prompt: str) -> list[str]:
    """The demo's answer, cut into word tokens the way a language model streams them."""
    asked = " ".join(prompt.split())[:200] or "nothing"
    text = (
        f"You asked: {asked} — this reply comes from the demo upstream as NDJSON, one token per "
        "line, and the gateway turns every line into a Server-Sent Event the moment it arrives."
    )
    return _TOKEN.findall(text)


async def _page(request: web.Request) -> web.Response:
    page = files(__package__).joinpath("index.html").read_text(encoding="utf-8")
    return web.Response(text=page, content_type="text/html", charset="utf-8")


async def _chat(request: web.Request) -> web.StreamResponse:
    try:
        body = orjson.loads(await request.read() or b"{}")
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        return web.json_response({"error": "request body must be a JSON object"}, status=400)
    model = str(body.get("model") or "demo")
    tokens = demo_reply_tokens(_last_user_message(body.get("messages")))
    options = body.get("options")
    delay_ms = options.get("delay_ms", DEFAULT_DELAY_MS) if isinstance(options, dict) else None
    delay = _bounded_delay(delay_ms) / 1000
    started = time.perf_counter_ns()
    if body.get("stream") is False:
        await asyncio.sleep(delay * len(tokens))
        return web.json_response(
            _line(model, "".join(tokens), done=True, started=started, count=len(tokens)),
            dumps=lambda v: orjson.dumps(v).decode(),
        )
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    for token in tokens:
        await asyncio.sleep(delay)
        await response.write(orjson.dumps(_line(model, token)) + b"\n")
    await response.write(
        orjson.dumps(_line(model, "", done=True, started=started, count=len(tokens))) + b"\n"
    )
    await response.write_eof()
    return response


def _last_user_message(messages: Any) -> str:
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role", "user") == "user":
                return str(message.get("content", ""))
    return ""


def _bounded_delay(value: Any) -> float:
    try:
        delay = float(value)
    except (TypeError, ValueError):
        return float(DEFAULT_DELAY_MS)
    return min(max(delay, 0.0), 2000.0)


def _line(
    model: str, content: str, *, done: bool = False, started: int = 0, count: int = 0
) -> dict[str, Any]:
    line: dict[str, Any] = {
        "model": model,
        "created_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "message": {"role": "assistant", "content": content},
        "done": done,
    }
    if done:
        line.update(
            done_reason="stop",
            total_duration=time.perf_counter_ns() - started,
            eval_count=count,
        )
    return line
