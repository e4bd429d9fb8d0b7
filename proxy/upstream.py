"""Opening the upstream request (built by :mod:`proxy.upstream_request`) and reading its answer's
Content-Type.

:func:`open_upstream` is the one place that talks to aiohttp's client: it turns every failure before
the response headers into an :class:`UpstreamFailure` with the status the client should see (502
unreachable, 504 timeout, the upstream's own 4xx/5xx mirrored) and makes sure the upstream
connection is closed, not left half-read in the pool, when the stream ends early.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager
from typing import Final

import aiohttp
import orjson
from yarl import URL

from .config import Framing, TimeoutsConfig
from .errors import UpstreamFailure
from .redaction import redact
from .upstream_request import UpstreamRequest

__all__ = ["NDJSON_MEDIA_TYPES", "choose_framing", "client_wants_ndjson", "open_upstream"]

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
ERROR_BODY_LIMIT: Final = 64 * 1024


# -- negotiation -----------------------------------------------------------------------------------


def choose_framing(route_framing: Framing, content_type: str | None) -> str:
    """How to read the upstream body (a key of :data:`proxy.decoders.DECODERS`). ``auto`` goes
    by the Content-Type, none at all meaning NDJSON, except that a JSON label is not trusted to
    mean one document: Kubernetes watch and etcd stream NDJSON labelled ``application/json``,
    so the body's first line decides (``json-or-ndjson``)."""
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
        return "json-or-ndjson"
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
    request: UpstreamRequest,
    timeouts: TimeoutsConfig,
    secrets: Collection[str] = (),
) -> AsyncIterator[aiohttp.ClientResponse]:
    """The upstream response, once its status says a stream follows. The connection is closed on
    the way out unless the body was read to its end (then it goes back to the pool).

    Every failure's message is redacted of ``secrets``: it may quote the upstream's reason
    phrase, its ``Location``, its error body or aiohttp's text with the URL in it."""
    try:
        async with _open(
            session,
            request.method,
            request.url,
            body=request.body,
            headers=request.headers,
            timeouts=timeouts,
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
    except aiohttp.ClientError as exc:
        raise _request_failure(exc, url, timeouts) from None
    try:
        await _check_status(response)
        yield response
    finally:
        if response.content.is_eof():
            response.release()
        else:
            response.close()


def _request_failure(
    exc: aiohttp.ClientError, url: URL, timeouts: TimeoutsConfig
) -> UpstreamFailure:
    """What the client hears of a request that got no response head."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return UpstreamFailure(
            504, "upstream_timeout", f"no connection to the upstream within {timeouts.connect} s"
        )
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return UpstreamFailure(
            504,
            "upstream_timeout",
            f"the upstream sent no response headers within {timeouts.read} s",
        )
    if isinstance(exc, aiohttp.ClientConnectorError):
        reason = exc.os_error.strerror or str(exc.os_error)
        return UpstreamFailure(
            502,
            "upstream_unreachable",
            f"cannot connect to the upstream {url.host}:{url.port}: {reason}",
        )
    return UpstreamFailure(
        502, "upstream_error", f"the upstream request failed: {exc or type(exc).__name__}"
    )


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
