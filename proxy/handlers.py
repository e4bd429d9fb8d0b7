"""aiohttp glue: a route's request in, the upstream's stream out.

Strategy: everything that can be decided before a byte goes to the client is decided first (the
client's body, the upstream's status and Content-Type), so those failures are plain HTTP errors
with a JSON body. Once the event stream has started, a failure can only be told in-band: the client
gets every event that was complete, then one ``error`` event, then the end of the response.

The pump writes once per upstream chunk. ``StreamResponse.write`` only drains when aiohttp's buffer
is past its high-water mark, so awaiting it is the backpressure: a client that stops reading stops
our reads from the upstream, whose socket then fills and pauses. A client that goes away cancels
the handler (the server runs with ``handler_cancellation``) or fails the next write; either way the
upstream response is closed on the way out of :func:`open_upstream`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Collection
from typing import Final

import aiohttp
import orjson
from aiohttp import web
from aiohttp.typedefs import Handler
from multidict import MultiDict, MultiDictProxy

from .config import CONSOLE_TAP_PARAM, GatewayConfig, RouteConfig
from .console.tap import TappedConverter
from .convert import StreamConverter, body_decoder
from .errors import BadRequest, HTTPFailure, StreamError, UpstreamFailure
from .logs import STREAM_RECORD, StreamRecord
from .redaction import redact
from .respond import (
    SSE_HEADERS,
    ClientGone,
    CountingResponse,
    read_chunk,
    send,
    stream_failure,
    upstream_gone,
)
from .resume import REPLAY_STORES, Producer, new_stream_key, parse_resume_id, read_stream
from .streams import OpenStream, StreamRegistry
from .upstream import (
    body_from_json,
    body_from_query,
    choose_framing,
    client_wants_ndjson,
    fill_upstream_url,
    merge_under,
    open_upstream,
    query_from_body,
    upstream_headers,
)

__all__ = [
    "CLIENT_SESSION",
    "CONFIG",
    "SSE_HEADERS",
    "STREAMS",
    "json_errors",
    "stream_handler",
]

log = logging.getLogger("proxy")

CLIENT_SESSION: Final = web.AppKey("client_session", aiohttp.ClientSession)
CONFIG: Final = web.AppKey("config", GatewayConfig)
# Below this, a write to a client whose queue is empty goes out without pausing the transport
# (asyncio pauses at 64 KiB queued): it cannot block.
_UNBLOCKING_WRITE: Final = 16 * 1024
STREAMS: Final = web.AppKey("streams", StreamRegistry)


def stream_handler(route: RouteConfig) -> Handler:
    """The request handler for one configured route."""
    return functools.partial(_stream, route)


async def _stream(route: RouteConfig, request: web.Request) -> web.StreamResponse:
    record = request[STREAM_RECORD]  # the access log's middleware made it for every route
    record.route = route.path
    registry = request.app[STREAMS]
    stream = registry.admit(route.path, route.limits.max_streams, request.transport)
    try:
        return await _open_and_relay(route, request, stream, record)
    finally:
        registry.release(stream)


async def _open_and_relay(
    route: RouteConfig, request: web.Request, stream: OpenStream, record: StreamRecord
) -> web.StreamResponse:
    server = request.app[CONFIG].server
    tap = server.console_enabled and CONSOLE_TAP_PARAM in request.query
    # Query parameters that are the gateway's, never the upstream's.
    drop = {CONSOLE_TAP_PARAM} if tap else set()
    if route.auth is not None and route.auth.query_param is not None:
        drop.add(route.auth.query_param)
    body = await _client_body(request, route, drop)
    url = fill_upstream_url(
        route.upstream, request.match_info, _self_origin(request), route.multi_segment_variables
    )
    if route.upstream_method == "GET":
        url = url.extend_query(query_from_body(body))
    resumable = (
        route.resume is not None
        and not tap
        and not client_wants_ndjson(request.headers.get("Accept", ""))
    )
    if resumable:
        store = request.app[REPLAY_STORES][route.path]
        resumed = parse_resume_id(request.headers.get("Last-Event-ID"))
        if resumed is not None:
            key, after = resumed
            batch = await store.read(key, after, 0)
            if batch is not None:  # a stream we keep: no upstream request at all
                if batch.finished and after >= batch.last:
                    # Already whole: 204 is EventSource's "stop reconnecting", so a client that
                    # missed the end event does not start a second (LLM) request.
                    return web.Response(status=204)
                return await read_stream(
                    request, store, key, after, route, stream, record, server.write_timeout
                )
    async with contextlib.AsyncExitStack() as upstream_scope:
        upstream = await upstream_scope.enter_async_context(
            open_upstream(
                request.app[CLIENT_SESSION],
                route.upstream_method,
                url,
                body=None if route.upstream_method == "GET" else orjson.dumps(body),
                headers=upstream_headers(route, request.headers),
                timeouts=route.timeouts,
                secrets=route.secrets,
            )
        )
        stream.attach(upstream)
        record.upstream_status = upstream.status
        framing = choose_framing(route.framing, upstream.headers.get("Content-Type"))
        if framing == "ndjson" and client_wants_ndjson(request.headers.get("Accept", "")):
            return await _relay_ndjson(request, upstream, route, stream, record)
        if resumable:
            # From here the upstream belongs to the producer, which outlives this request.
            key = await _start_producer(request, route, upstream, framing, upstream_scope.pop_all())
            return await read_stream(
                request, store, key, 0, route, stream, record, server.write_timeout
            )
        converter_class = TappedConverter if tap else StreamConverter
        converter = converter_class(
            route.events,
            last_event_id=request.headers.get("Last-Event-ID"),
            secrets=route.secrets,
        )
        return await _relay_events(request, upstream, route, framing, converter, stream, record)


async def _start_producer(
    request: web.Request,
    route: RouteConfig,
    upstream: aiohttp.ClientResponse,
    framing: str,
    upstream_scope: contextlib.AsyncExitStack,
) -> str:
    """A new resumable stream: its key, with a producer reading the upstream into the store."""
    assert route.resume is not None
    store = request.app[REPLAY_STORES][route.path]
    key = new_stream_key()
    await store.create(key)
    await store.touch_reader(key, route.resume.linger)
    # The store's readers stamp the ids (<key>-<n>), so the producer's converter writes none.
    converter = StreamConverter(
        route.events.model_copy(update={"id": "none"}), secrets=route.secrets
    )
    decoder = body_decoder(framing, converter, route.limits.max_line_bytes)
    producer = Producer(store, key, route, upstream, decoder, converter)

    async def produce() -> None:
        async with upstream_scope:
            await producer.run()

    request.app[STREAMS].add_producer(producer, asyncio.create_task(produce()))
    return key


async def _relay_events(
    request: web.Request,
    upstream: aiohttp.ClientResponse,
    route: RouteConfig,
    framing: str,
    converter: StreamConverter,
    stream: OpenStream,
    record: StreamRecord,
) -> web.StreamResponse:
    response = CountingResponse(
        headers=SSE_HEADERS, write_timeout=request.app[CONFIG].server.write_timeout
    )
    await response.prepare(request)
    first_sequence = converter.sequence
    decoder = body_decoder(framing, converter, route.limits.max_line_bytes)
    outcome = "client_gone"  # unless we get further: a cancelled handler means the client left
    try:
        await send(response, converter.start())
        async with asyncio.timeout(route.limits.max_duration) as deadline:
            await _pump(
                response,
                upstream,
                decoder.feed,
                route.events.heartbeat,
                record,
                route.timeouts.read,
            )
        if stream.stopping:
            raise aiohttp.ClientConnectionError("closed by the drain")
        await send(response, decoder.finish() + converter.end())
        outcome = "eof" if converter.complete else "incomplete"
    except ClientGone as gone:
        outcome = gone.reason
    except (StreamError, aiohttp.ClientError, TimeoutError) as exc:
        code, message = stream_failure(
            exc, route, draining=stream.stopping, out_of_time=deadline.expired()
        )
        output = exc.output if isinstance(exc, StreamError) else b""
        outcome = code
        with contextlib.suppress(ClientGone):
            await send(response, output + converter.error(code, message))
    finally:
        record.events = converter.sequence - first_sequence
        record.bytes = response.sent
        record.ended = outcome
    return response


async def _relay_ndjson(
    request: web.Request,
    upstream: aiohttp.ClientResponse,
    route: RouteConfig,
    stream: OpenStream,
    record: StreamRecord,
) -> web.StreamResponse:
    """A client that asked for NDJSON gets the upstream bytes untouched; a failure is told in the
    NDJSON way (as Ollama does): a last line ``{"error": {...}}``."""
    response = CountingResponse(
        headers={
            **SSE_HEADERS,
            "Content-Type": upstream.headers.get("Content-Type", "application/x-ndjson"),
        },
        write_timeout=request.app[CONFIG].server.write_timeout,
    )
    await response.prepare(request)
    last_byte = b"\n"

    def passthrough(chunk: bytes) -> bytes:
        nonlocal last_byte
        last_byte = chunk[-1:]
        return chunk

    outcome = "client_gone"
    try:
        async with asyncio.timeout(route.limits.max_duration) as deadline:
            await _pump(response, upstream, passthrough, 0, record, route.timeouts.read)
        if stream.stopping:
            raise aiohttp.ClientConnectionError("closed by the drain")
        outcome = "eof"
    except ClientGone as gone:
        outcome = gone.reason
    except (aiohttp.ClientError, TimeoutError) as exc:
        code, message = stream_failure(
            exc, route, draining=stream.stopping, out_of_time=deadline.expired()
        )
        outcome = code
        message = redact(message, route.secrets)
        line = orjson.dumps({"error": {"code": code, "message": message}}) + b"\n"
        with contextlib.suppress(ClientGone):
            await send(response, line if last_byte == b"\n" else b"\n" + line)
    finally:
        record.bytes = response.sent
        record.ended = outcome
    return response


async def _pump(
    response: CountingResponse,
    upstream: aiohttp.ClientResponse,
    convert: Callable[[bytes], bytes],
    heartbeat: float,
    record: StreamRecord,
    read_timeout: float | None,
) -> None:
    """Upstream chunks through ``convert`` to the client, until the upstream's EOF.

    The heartbeat and the read timeout are one deadline on the loop, not timer tasks: armed for
    whichever comes first, once per period, not per chunk. When it fires, the loop looks at the
    clock: a silence of ``read_timeout`` from the upstream ends the stream (aiohttp's own
    ``sock_read`` is not enough: it is dropped when the upstream breaks its chunked framing),
    ``heartbeat`` seconds without a write send a comment, and anything else just re-arms. An
    idle stream costs one timer and few wake-ups. A write that may block on a slow client is
    never interrupted by the deadline (the loop would go on reading while the client is not): it
    is lifted for that write, which ``server.write_timeout`` bounds instead. A write can block
    only if bytes are still queued for the client or it is too large to leave the socket at
    once; other writes keep the deadline and cost nothing extra.
    """
    content = upstream.content
    convert = _noting_first_output(convert, record)
    loop = asyncio.get_running_loop()
    last_write = last_read = loop.time()

    def deadline() -> float:
        # Without heartbeats, still a wake-up a second: aiohttp does not wake a pending read when
        # the upstream breaks its chunked framing (it just closes the connection).
        at = last_write + heartbeat if heartbeat else loop.time() + 1.0
        return min(at, last_read + read_timeout) if read_timeout else at

    while True:
        try:
            async with asyncio.timeout_at(deadline()) as timer:
                while chunk := await read_chunk(content):
                    last_read = loop.time()
                    output = convert(chunk)
                    if not output:
                        continue
                    if len(output) > _UNBLOCKING_WRITE or response.may_block():
                        timer.reschedule(None)
                        await send(response, output)
                        last_write = last_read = loop.time()
                        timer.reschedule(deadline())
                    else:
                        await send(response, output)
                        last_write = last_read
                return
        except TimeoutError:
            if not timer.expired():
                raise
        if upstream_gone(upstream):
            raise aiohttp.ClientPayloadError("the upstream connection closed")
        # A timer may fire a clock tick early; a millisecond of slack avoids a needless re-arm.
        now = loop.time() + 0.001
        if read_timeout and now - last_read >= read_timeout:
            raise TimeoutError
        if heartbeat and now - last_write >= heartbeat:
            await send(response, StreamConverter.heartbeat())
            last_write = loop.time()


def _noting_first_output(
    convert: Callable[[bytes], bytes], record: StreamRecord
) -> Callable[[bytes], bytes]:
    """``convert``, noting in ``record`` when it first gives something to send (the time to first
    event in the access log)."""

    def noting(chunk: bytes) -> bytes:
        output = convert(chunk)
        if output and record.first_event_ms is None:
            record.first_event_now()
        return output

    return noting


async def _client_body(
    request: web.Request, route: RouteConfig, drop: Collection[str]
) -> dict[str, object]:
    """The upstream body: the client's fields (less the query parameter ``drop``) over the route's
    defaults, with ``Last-Event-ID`` where the route wants it."""
    limit = route.limits.max_body_bytes
    if request.method == "GET":
        query = request.query
        if drop:
            query = MultiDictProxy(MultiDict((k, v) for k, v in query.items() if k not in drop))
        fields = body_from_query(query, route.body.query_param, limit)
    else:
        fields = body_from_json(await _read_limited(request, limit))
    body = merge_under(route.body.defaults, fields)
    last_event_id = request.headers.get("Last-Event-ID")
    if route.body.last_event_id and last_event_id is not None:
        body[route.body.last_event_id] = last_event_id
    return body


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


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error answer is JSON: ``{"error": {"code", "message"[, "upstream_status"]}}``."""
    try:
        return await handler(request)
    except HTTPFailure as exc:
        error: dict[str, object] = {"code": exc.code, "message": exc.message}
        # No record on the paths the access log skips (health checks, metrics).
        record = request.get(STREAM_RECORD)
        if record is not None:
            record.ended = exc.code
        if isinstance(exc, UpstreamFailure):
            error["upstream_status"] = exc.upstream_status
            if record is not None:
                record.upstream_status = exc.upstream_status
        return web.json_response(
            {"error": error}, status=exc.status, headers=exc.headers, dumps=_dumps
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = exc.reason.lower().replace(" ", "_").replace("-", "_")
        record = request.get(STREAM_RECORD)
        if record is not None:
            record.ended = code
        message = f"{request.method} {request.path}: {exc.reason}"
        if "Allow" in exc.headers:
            message += f" (allowed: {exc.headers['Allow']})"
        return web.json_response(
            {"error": {"code": code, "message": message}},
            status=exc.status,
            headers={k: v for k, v in exc.headers.items() if k.lower() == "allow"},
            dumps=_dumps,
        )


def _dumps(value: object) -> str:
    return orjson.dumps(value).decode()
