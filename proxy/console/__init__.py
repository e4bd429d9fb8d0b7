"""The stream console at ``/_console``: pick a route, fill in its query or JSON body, and watch the
stream live, each raw upstream line beside the event it became, and the run's timeline of arrivals
(time to first event, the gaps between events, tokens when the route has ``usage``).

Plain files served by the gateway (no build step, no CDN). GET opens a native ``EventSource``, so
DevTools' EventStream tab shows the stream; POST reads it with ``fetch``. Both ask the real route
with the tap parameter (:mod:`proxy.console.tap`), which only a gateway with the console on
honours. On a route with ``streams``, POST creates a stream (``{path}/streams``) and reads its URL
with ``EventSource`` (``fetch`` if ``event_from`` names the events) instead: untapped, as a stream
keeps the route's events, not the raw lines.
``/_console/routes`` describes the routes without anything secret: no header values and no
credentials or query in upstream URLs.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any, Final

from aiohttp import web
from aiohttp.typedefs import Handler
from yarl import URL

from proxy.config import GatewayConfig, RouteConfig
from proxy.paths import CONSOLE_PATH
from proxy.state import CONVERTER, hide_query_param

from .tap import CONSOLE_TAP_PARAM, TAP_EVENT, TappedConverter

__all__ = ["CONSOLE_TAP_PARAM", "add_console_routes", "add_tap"]

_ASSETS: Final = {
    "": ("index.html", "text/html"),
    "/console.js": ("console.js", "text/javascript"),
    "/timeline.js": ("timeline.js", "text/javascript"),
    "/console.css": ("console.css", "text/css"),
}


def add_console_routes(app: web.Application, config: GatewayConfig) -> None:
    for suffix, (name, content_type) in _ASSETS.items():
        app.router.add_get(CONSOLE_PATH + suffix, _asset(name, content_type))
    description = {
        "tap_param": CONSOLE_TAP_PARAM,
        "tap_event": TAP_EVENT,
        "routes": [_describe(route) for route in config.routes],
    }

    async def routes(request: web.Request) -> web.Response:
        return web.json_response(description, headers={"Cache-Control": "no-store"})

    app.router.add_get(CONSOLE_PATH + "/routes", routes)


def add_tap(handler: Handler) -> Handler:
    """A route's ``handler`` that taps a stream asked with the tap parameter (the console's own,
    never sent upstream)."""

    async def tapped(request: web.Request) -> web.StreamResponse:
        if CONSOLE_TAP_PARAM in request.query:
            hide_query_param(request, CONSOLE_TAP_PARAM)
            request[CONVERTER] = TappedConverter
        return await handler(request)

    return tapped


def _asset(name: str, content_type: str) -> Any:
    text = files(__package__).joinpath(name).read_text(encoding="utf-8")

    async def serve(request: web.Request) -> web.Response:
        return web.Response(
            text=text,
            content_type=content_type,
            charset="utf-8",
            headers={"Cache-Control": "no-store"},
        )

    return serve


def _describe(route: RouteConfig) -> dict[str, Any]:
    events = route.events
    return {
        "path": route.path,
        "variables": route.path_variables,
        "methods": route.methods,
        "upstream": _public_upstream(route.upstream),
        "upstream_method": route.upstream_method,
        "query_param": route.body.query_param,
        "body_defaults": route.body.defaults,
        "streams": route.streams is not None,
        "injected_headers": sorted(route.headers),  # names only: the values are often secrets
        "events": {
            "event": events.event,
            "event_from": events.event_from.text if events.event_from else None,
            "id": events.id if isinstance(events.id, str) else events.id.text,
            "data": events.data if isinstance(events.data, str) else events.data.text,
            "end_event": events.end_event,
            "error_event": events.error_event,
            "complete_when": events.complete_when.text if events.complete_when else None,
        },
        "usage": _usage(route),
    }


def _usage(route: RouteConfig) -> dict[str, str | None] | None:
    """The route's token-count pointers, which the console's timeline reads from the lines."""
    if route.usage is None:
        return None
    pointers = route.usage.pointers
    return {
        "prompt_tokens": None if pointers.prompt_tokens is None else pointers.prompt_tokens.text,
        "completion_tokens": (
            None if pointers.completion_tokens is None else pointers.completion_tokens.text
        ),
    }


def _public_upstream(upstream: str) -> str:
    if upstream.startswith("/"):
        return upstream
    url = URL(upstream, encoded=True)
    return str(url.with_user(None).with_query(None).with_fragment(None))
