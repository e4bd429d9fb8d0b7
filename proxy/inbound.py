"""The client's request as the pure request builder's input (:class:`ClientRequest`): its body
read within the route's limit, this server's own origin as the client reached it, and the trace
headers :mod:`proxy.tracing` chose for its upstream request."""

from __future__ import annotations

from aiohttp import web

from .config import RouteConfig
from .errors import BadRequest
from .state import HIDDEN_QUERY
from .tracing import TRACE_HEADERS
from .upstream_request import ClientRequest

__all__ = ["client_request"]


async def client_request(request: web.Request, route: RouteConfig) -> ClientRequest:
    body = b""
    if request.method != "GET":
        body = await _read_limited(request, route.limits.max_body_bytes)
    return ClientRequest(
        method=request.method,
        query=request.query,
        headers=request.headers,
        body=body,
        path_variables=request.match_info,
        self_origin=_self_origin(request),
        hidden_query=request.get(HIDDEN_QUERY, frozenset()),
        trace_headers=request.get(TRACE_HEADERS, {}),
    )


async def _read_limited(request: web.Request, limit: int) -> bytes:
    too_large = BadRequest(
        f"the request body is larger than {limit} bytes", code="body_too_large", status=413
    )
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    body = bytearray()
    while chunk := await request.content.read(64 * 1024):
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


def _self_origin(request: web.Request) -> str:
    """This server as the client reached it: the socket's own address, never the Host header,
    which a client controls."""
    transport = request.transport
    sockname = transport.get_extra_info("sockname") if transport is not None else None
    if not isinstance(sockname, tuple):
        return "http://127.0.0.1"
    host, port = sockname[0], sockname[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
