"""CORS for a route: which browser origins may open it, and the headers that tell them so.

Strategy: the decision is a pure function of the route's :class:`CorsConfig` and three request
headers (``Origin``, ``Host``, and for a preflight the requested method and headers), so it is
tested without a server. The aiohttp side is two thin pieces: a wrapper that checks a route's
requests before anything else happens (a refused origin costs no upstream request, which for an
LLM is money; a route without ``cors`` refuses every foreign origin the same way), and an
``on_response_prepare`` hook that puts the allowed headers on whatever response goes out: the
event stream, a JSON error (so a cross-origin page can read why), or a preflight.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler
from multidict import CIMultiDict
from yarl import URL

from .config import CorsConfig, RouteConfig
from .errors import HTTPFailure

__all__ = [
    "add_cors",
    "apply_cors_headers",
    "cors_headers",
    "is_same_origin",
    "preflight_headers",
]

_CORS_HEADERS: Final = web.RequestKey("cors_headers", CIMultiDict[str])


class OriginNotAllowed(HTTPFailure):
    def __init__(self, origin: str) -> None:
        super().__init__(
            403, "origin_not_allowed", f"origin {origin} is not allowed to open this route"
        )


def is_same_origin(origin: str, host: str | None) -> bool:
    """The page is the gateway's own: its origin's host[:port] is the Host it asked. Both omit a
    default port, and both come from the browser, so the scheme (lost behind a TLS proxy) is not
    compared."""
    if not host:
        return False
    try:
        authority = URL(origin).raw_authority
    except ValueError:
        return False
    return authority.lower() == host.lower()


def cors_headers(cors: CorsConfig, origin: str) -> CIMultiDict[str] | None:
    """The headers for a response to ``origin``, or None when it is not allowed."""
    if not (cors.any_origin or origin in cors.allow_origins):
        return None
    headers: CIMultiDict[str] = CIMultiDict()
    # Credentials always echo the exact origin ('*' is refused with them by the config), and an
    # echoed origin makes the response vary by Origin for caches.
    headers["Access-Control-Allow-Origin"] = "*" if cors.any_origin else origin
    if not cors.any_origin:
        headers["Vary"] = "Origin"
    if cors.allow_credentials:
        headers["Access-Control-Allow-Credentials"] = "true"
    return headers


def preflight_headers(
    cors: CorsConfig, origin: str, methods: Sequence[str]
) -> CIMultiDict[str] | None:
    headers = cors_headers(cors, origin)
    if headers is None:
        return None
    headers["Access-Control-Allow-Methods"] = ", ".join(methods)
    headers["Access-Control-Allow-Headers"] = ", ".join(cors.allow_headers)
    headers["Access-Control-Max-Age"] = str(cors.max_age)
    headers["Vary"] = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
    return headers


def add_cors(
    app: web.Application,
    route: RouteConfig,
    handler: Handler,
    path: str | None = None,
    methods: Sequence[str] | None = None,
) -> Handler:
    """Register the route's preflight and return ``handler`` wrapped with the origin check.

    A route without ``cors`` is for the gateway's own pages and for clients that send no
    ``Origin`` (curl, SDKs, services): a page on another site gets 403 before any upstream
    request, so it cannot spend the route's upstream in its visitor's name. ``path`` and
    ``methods`` name another resource of the route (its streams' URLs) for the preflight."""
    cors = route.cors
    if cors is None:
        return _own_origin_only(handler)
    allowed = list(route.methods if methods is None else methods)

    async def checked(request: web.Request) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is not None and not is_same_origin(origin, request.host):
            headers = cors_headers(cors, origin)
            if headers is None:
                raise OriginNotAllowed(origin)
            request[_CORS_HEADERS] = headers
        return await handler(request)

    async def preflight(request: web.Request) -> web.StreamResponse:
        origin = request.headers.get("Origin", "")
        headers = preflight_headers(cors, origin, allowed)
        if headers is None:
            raise OriginNotAllowed(origin or "(none)")
        return web.Response(status=204, headers=headers)

    app.router.add_route("OPTIONS", route.path if path is None else path, preflight)
    return checked


def _own_origin_only(handler: Handler) -> Handler:
    async def checked(request: web.Request) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is not None and not is_same_origin(origin, request.host):
            raise OriginNotAllowed(origin)
        return await handler(request)

    return checked


async def apply_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: the route's CORS headers on every response it sends."""
    headers = request.get(_CORS_HEADERS)
    if headers:
        response.headers.update(headers)
