"""Building and opening the upstream request.

The builders are pure functions of plain data (the route, the client's query, headers and body), so
the rules that matter for safety are tested without a network: a path variable is always escaped as
exactly one path segment, hop-by-hop headers never cross, and the client's JSON object always wins
over the route's defaults.

:func:`open_upstream` is the one place that talks to aiohttp's client: it turns every failure before
the response headers into an :class:`UpstreamFailure` with the status the client should see (502
unreachable, 504 timeout, the upstream's own 4xx/5xx mirrored) and makes sure the upstream
connection is closed, not left half-read in the pool, when the stream ends early.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final
from urllib.parse import quote

import aiohttp
import orjson
from multidict import CIMultiDict, CIMultiDictProxy, MultiMapping
from yarl import URL

from .config import HOP_BY_HOP_HEADERS, PLACEHOLDER, Framing, RouteConfig, TimeoutsConfig
from .errors import BadRequest, UpstreamFailure
from .redaction import redact

__all__ = [
    "NDJSON_MEDIA_TYPES",
    "body_from_json",
    "body_from_query",
    "choose_framing",
    "client_wants_ndjson",
    "fill_upstream_url",
    "merge_under",
    "open_upstream",
    "query_from_body",
    "upstream_headers",
]

NDJSON_MEDIA_TYPES: Final = frozenset(
    {
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonl",
        "application/x-jsonlines",
        "application/jsonlines",
        "application/stream+json",
        "application/x-json-stream",
    }
)
UPSTREAM_ACCEPT: Final = (
    "application/x-ndjson, application/stream+json, application/jsonl, application/json-seq, "
    "text/event-stream;q=0.9, application/json;q=0.8"
)
ERROR_BODY_LIMIT: Final = 64 * 1024
_DOT_SEGMENT: Final = re.compile(r"(?:^|[/\\])\.{1,2}(?:$|[/\\])")


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


def upstream_headers(route: RouteConfig, client_headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """Headers for the upstream request: forwarded client headers, then the route's own (which
    replace any of the same name, whatever its case)."""
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
    headers.update(route.headers)
    return headers


# -- negotiation -----------------------------------------------------------------------------------


def choose_framing(route_framing: Framing, content_type: str | None) -> Framing:
    """How to read the upstream body. ``auto`` trusts the Content-Type; none at all means NDJSON."""
    if route_framing != "auto":
        return route_framing
    if content_type is None:
        return "ndjson"
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type in NDJSON_MEDIA_TYPES:
        return "ndjson"
    if media_type == "application/json-seq":
        return "json-seq"
    if media_type == "text/event-stream":
        return "sse"
    if media_type == "application/json" or media_type.endswith("+json"):
        return "json"
    raise UpstreamFailure(
        502,
        "unsupported_content_type",
        f"the upstream answered Content-Type {media_type!r}, which is not a stream this gateway "
        "reads; if it is NDJSON, set 'framing: ndjson' on the route",
    )


def client_wants_ndjson(accept: str) -> bool:
    """True when the client asks for NDJSON and not for an event stream."""
    media_types = {part.split(";", 1)[0].strip().lower() for part in accept.split(",")}
    return "text/event-stream" not in media_types and not media_types.isdisjoint(NDJSON_MEDIA_TYPES)


# -- opening it ------------------------------------------------------------------------------------


@asynccontextmanager
async def open_upstream(
    session: aiohttp.ClientSession,
    method: str,
    url: URL,
    *,
    body: bytes | None,
    headers: Mapping[str, str],
    timeouts: TimeoutsConfig,
    secrets: Collection[str] = (),
) -> AsyncIterator[aiohttp.ClientResponse]:
    """The upstream response, once its status says a stream follows. The connection is closed on
    the way out unless the body was read to its end (then it goes back to the pool).

    Every failure's message is redacted of ``secrets``: it may quote the upstream's reason
    phrase, its ``Location``, its error body or aiohttp's text with the URL in it."""
    try:
        async with _open(
            session, method, url, body=body, headers=headers, timeouts=timeouts
        ) as response:
            yield response
    except UpstreamFailure as exc:
        exc.message = redact(exc.message, secrets)
        raise


@asynccontextmanager
async def _open(
    session: aiohttp.ClientSession,
    method: str,
    url: URL,
    *,
    body: bytes | None,
    headers: Mapping[str, str],
    timeouts: TimeoutsConfig,
) -> AsyncIterator[aiohttp.ClientResponse]:
    # No total timeout: it would cut long streams. sock_read bounds each silence instead.
    timeout = aiohttp.ClientTimeout(
        total=None, connect=timeouts.connect, sock_connect=timeouts.connect, sock_read=timeouts.read
    )
    request_headers = dict(headers)
    if body is not None:
        request_headers["Content-Type"] = "application/json"
    try:
        response = await session.request(
            method,
            url,
            data=body,
            headers=request_headers,
            timeout=timeout,
            allow_redirects=False,
        )
    except aiohttp.ConnectionTimeoutError:
        raise UpstreamFailure(
            504, "upstream_timeout", f"no connection to the upstream within {timeouts.connect} s"
        ) from None
    except aiohttp.ServerTimeoutError:
        raise UpstreamFailure(
            504,
            "upstream_timeout",
            f"the upstream sent no response headers within {timeouts.read} s",
        ) from None
    except aiohttp.ClientConnectorError as exc:
        reason = exc.os_error.strerror or str(exc.os_error)
        raise UpstreamFailure(
            502,
            "upstream_unreachable",
            f"cannot connect to the upstream {url.host}:{url.port}: {reason}",
        ) from None
    except aiohttp.ClientError as exc:
        raise UpstreamFailure(
            502, "upstream_error", f"the upstream request failed: {exc or type(exc).__name__}"
        ) from None
    try:
        await _check_status(response)
        yield response
    finally:
        if response.content.is_eof():
            response.release()
        else:
            response.close()


async def _check_status(response: aiohttp.ClientResponse) -> None:
    status = response.status
    if 200 <= status < 300:
        return
    if 300 <= status < 400:
        raise UpstreamFailure(
            502,
            "upstream_redirect",
            f"the upstream redirected ({status}) to {response.headers.get('Location', '?')}; "
            "point the route at the final URL",
            upstream_status=status,
        )
    try:
        detail = _error_detail(await response.content.read(ERROR_BODY_LIMIT))
    except (aiohttp.ClientError, TimeoutError):
        detail = ""
    message = f"the upstream answered {status} {response.reason or ''}".rstrip()
    raise UpstreamFailure(
        status if 400 <= status < 600 else 502,
        "upstream_status",
        f"{message}: {detail}" if detail else message,
        upstream_status=status,
    )


def _error_detail(body: bytes) -> str:
    """A short, one-line reason from an upstream error body (JSON ``error``/``message`` or text)."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body.decode("utf-8", "replace")
    else:
        if isinstance(value, dict):
            found = next((value[k] for k in ("error", "message", "detail") if k in value), value)
            if isinstance(found, dict) and isinstance(found.get("message"), str):
                found = found["message"]
            text = found if isinstance(found, str) else orjson.dumps(found).decode()
        else:
            text = orjson.dumps(value).decode()
    return " ".join(text.split())[:500]
