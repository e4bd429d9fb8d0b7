"""The upstream request, built from the route and the client's request: pure functions of plain
data, so the rules that matter for safety are tested without a network (table-driven): a path
variable is always escaped as exactly one path segment, hop-by-hop headers never cross, the
gateway's own query parameters never go upstream, and the client's JSON object always wins over
the route's defaults.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

import orjson
from multidict import CIMultiDict, MultiDict, MultiMapping
from yarl import URL

from .errors import BadRequest
from .headers import HOP_BY_HOP_HEADERS
from .paths import PLACEHOLDER
from .tracecontext import TRACE_HEADER_NAMES, TRACEPARENT

if TYPE_CHECKING:
    from .config import RouteConfig

__all__ = [
    "UPSTREAM_ACCEPT",
    "ClientRequest",
    "UpstreamRequest",
    "body_from_json",
    "body_from_query",
    "build_upstream_request",
    "fill_upstream_url",
    "merge_under",
    "query_from_body",
    "upstream_headers",
]

UPSTREAM_ACCEPT: Final = (
    "application/x-ndjson, application/stream+json, application/jsonl, application/json-seq, "
    "text/event-stream;q=0.9, application/json;q=0.8"
)
_DOT_SEGMENT: Final = re.compile(r"(?:^|[/\\])\.{1,2}(?:$|[/\\])")


@dataclass(frozen=True, slots=True)
class ClientRequest:
    """What the builder needs of the client's request, as plain data."""

    method: str
    query: MultiMapping[str] = field(default_factory=MultiDict)
    headers: MultiMapping[str] = field(default_factory=CIMultiDict)
    body: bytes = b""
    """The request body, already read within ``limits.max_body_bytes``."""
    path_variables: Mapping[str, str] = field(default_factory=dict)
    self_origin: str = "http://127.0.0.1"
    """This gateway as the client reached it (for an upstream that is the gateway itself)."""
    hidden_query: Collection[str] = ()
    """Query parameters that are the gateway's (auth's, the console's), never the upstream's."""
    trace_headers: Mapping[str, str] = field(default_factory=dict)
    """``traceparent`` and ``tracestate`` for the upstream (:mod:`proxy.tracing`); none when
    ``server.trace_propagation`` is off."""


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    method: str
    url: URL
    body: bytes | None
    headers: CIMultiDict[str]

    def fingerprint(self, scope: str) -> str:
        """What makes two upstream requests the same one (method, URL, body, every header, the
        credentials among them), as a digest: a shared stream is joined only by a request whose
        upstream request would have been identical, so no one reads another's answer. ``scope``
        (the route's path) goes in too: two routes may send the same request and make other
        events of its lines. The trace headers are left out: each request has its own, and they
        say where it belongs in a trace, not what it asks for."""
        digest = hashlib.sha256()
        headers = sorted(
            (name.lower(), value)
            for name, value in self.headers.items()
            if name.lower() not in TRACE_HEADER_NAMES
        )
        texts = (scope, self.method, str(self.url), *(f"{n}: {v}" for n, v in headers))
        for part in (*(text.encode("utf-8", "surrogateescape") for text in texts), self.body):
            # Each part with its length: no two different requests run together the same.
            digest.update(len(part or b"").to_bytes(8, "big"))
            digest.update(part or b"")
        return digest.hexdigest()


def build_upstream_request(route: RouteConfig, client: ClientRequest) -> UpstreamRequest:
    body = client_body(route, client)
    url = fill_upstream_url(
        route.upstream, client.path_variables, client.self_origin, route.multi_segment_variables
    )
    headers = upstream_headers(route, client.headers, client.trace_headers)
    if route.upstream_method == "GET":
        return UpstreamRequest("GET", url.extend_query(query_from_body(body)), None, headers)
    return UpstreamRequest("POST", url, orjson.dumps(body), headers)


def client_body(route: RouteConfig, client: ClientRequest) -> dict[str, Any]:
    """The upstream body: the client's fields (checked against the route's schema) over the
    route's defaults and under its pinned fields, with ``Last-Event-ID`` where the route wants
    it."""
    limit = route.limits.max_body_bytes
    if client.method == "GET":
        query = client.query
        if client.hidden_query:
            hidden = client.hidden_query
            query = MultiDict((k, v) for k, v in query.items() if k not in hidden)
        fields = body_from_query(query, route.body.query_param, limit)
    else:
        fields = body_from_json(client.body)
    if route.body.schema_check is not None:
        route.body.schema_check.check(fields)
    body = merge_under(route.body.defaults, fields)
    if route.body.pinned:
        body = merge_under(body, route.body.pinned)  # last: a client value never overrides it
    last_event_id = client.headers.get("Last-Event-ID")
    if route.body.last_event_id and last_event_id is not None:
        body[route.body.last_event_id] = last_event_id
    return body


# -- the request body ------------------------------------------------------------------------------


def merge_under(defaults: Mapping[str, Any], fields: Mapping[str, Any]) -> dict[str, Any]:
    """``fields`` over ``defaults``; where both hold an object, the objects merge the same way."""
    merged = dict(defaults)
    for key, value in fields.items():
        below = merged.get(key)
        if isinstance(value, dict) and isinstance(below, dict):
            merged[key] = merge_under(below, value)
        else:
            merged[key] = value
    return merged


def body_from_query(
    query: MultiMapping[str], query_param: str | None, max_bytes: int
) -> dict[str, Any]:
    """A GET's query as a JSON object: each parameter a string field, a repeated one a list, and
    ``query_param`` (if set) a URL-encoded JSON object that the other parameters go over."""
    fields: dict[str, Any] = {}
    nested: dict[str, Any] = {}
    for key in dict.fromkeys(query):
        values = query.getall(key)
        if key == query_param:
            if len(values) != 1:
                raise BadRequest(f"query parameter {key!r} must be given once")
            raw = values[0].encode()
            if len(raw) > max_bytes:
                raise BadRequest(
                    f"query parameter {key!r} is larger than {max_bytes} bytes",
                    code="body_too_large",
                    status=413,
                )
            nested = body_from_json(raw, what=f"query parameter {key!r}")
        else:
            fields[key] = values[0] if len(values) == 1 else list(values)
    return merge_under(nested, fields)


def body_from_json(raw: bytes, *, what: str = "request body") -> dict[str, Any]:
    """A client's JSON object; an empty body is an empty object."""
    if not raw.strip():
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"{what} is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(value, dict):
        raise BadRequest(f"{what} must be a JSON object", code="not_an_object")
    return value


def query_from_body(body: Mapping[str, Any]) -> list[tuple[str, str]]:
    """A body as query parameters, for an upstream read with GET (a Kubernetes watch): strings as
    they are, lists as repeated parameters, everything else as its JSON text (``true``, ``5``).
    A ``null`` field is left out, as an absent parameter is the query's only way to say none."""
    pairs: list[tuple[str, str]] = []
    for key, value in body.items():
        for item in value if isinstance(value, list) else [value]:
            if item is None:
                continue
            pairs.append((key, item if isinstance(item, str) else orjson.dumps(item).decode()))
    return pairs


# -- the URL and headers ---------------------------------------------------------------------------


def fill_upstream_url(
    template: str,
    variables: Mapping[str, str],
    self_origin: str,
    multi_segment: Collection[str] = (),
) -> URL:
    """The upstream URL with each ``{var}`` escaped as one path segment.

    Everything that could move the request elsewhere is escaped: ``/`` (new segments), ``?`` and
    ``#`` (query, fragment), ``%`` (double decoding). A value with a ``.`` or ``..`` segment
    between its ``/`` or ``\\`` is refused (400 ``invalid_path``): escaped, it would still climb
    out of the prefix on a server that decodes ``%2E`` and ``%2F`` before it normalizes the path
    (RFC 3986 6.2.2.2 allows the first; nginx does both). A variable named in ``multi_segment``
    (``{tail:.*}``) keeps its ``/``, each segment escaped.
    A template that starts with ``/`` is this gateway itself, reached at ``self_origin``.
    """

    def escape(match: re.Match[str]) -> str:
        name = match.group(1)
        value = variables[name]
        if _DOT_SEGMENT.search(value):
            raise BadRequest(
                f"path variable {name!r} has a '.' or '..' segment", code="invalid_path"
            )
        if name in multi_segment:
            return "/".join(quote(segment, safe="") for segment in value.split("/"))
        return quote(value, safe="")

    filled = PLACEHOLDER.sub(escape, template)
    if filled.startswith("/"):
        filled = self_origin + filled
    return URL(filled, encoded=True)


def upstream_headers(
    route: RouteConfig,
    client_headers: MultiMapping[str],
    trace_headers: Mapping[str, str] | None = None,
) -> CIMultiDict[str]:
    """Headers for the upstream request: forwarded client headers, the trace headers (instead of
    forwarded ones: the gateway is a hop), then the route's own (which replace any of
    the same name, whatever its case). A route that sets ``traceparent`` itself sends its own
    pair: the gateway's ``tracestate`` would belong to another trace."""
    headers = CIMultiDict({"Accept": UPSTREAM_ACCEPT})
    # Headers the client names in Connection are hop-by-hop for this hop too (RFC 9110 7.6.1);
    # Connection is a list header, so every field line of it counts.
    connection = {
        token.strip().lower()
        for line in client_headers.getall("Connection", [])
        for token in line.split(",")
    }
    for name in (*route.forward_headers, "Last-Event-ID"):
        lowered = name.lower()
        if lowered in connection or lowered in HOP_BY_HOP_HEADERS:
            continue
        values = client_headers.getall(name, [])
        if values:
            headers[name] = ", ".join(values)
    route_headers = CIMultiDict(route.headers)
    if trace_headers and TRACEPARENT not in route_headers:
        for name in TRACE_HEADER_NAMES:
            headers.popall(name, None)  # forwarded ones: a tracestate must go with its parent
        headers.update(trace_headers)
    headers.update(route_headers)
    return headers
