"""The open streams of one gateway: admission against the limits, and the drain at shutdown.

Strategy: every stream is admitted before its upstream request (so a refused one costs nothing
upstream) and released when its handler ends, whatever the way. Admission is where the two limits
and the drain say no, each with a 503 and ``Retry-After`` that tells a client (or a load balancer)
to try again, elsewhere if it can. Draining marks every open stream as stopping and closes its
upstream response: the handler's pump ends at once, and the handler, seeing ``stopping``, tells
the client ``shutting_down`` instead of ``end``, so it reconnects (with its ``Last-Event-ID``) to
another replica rather than believing the answer was whole.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Final, Protocol

import aiohttp

from .errors import HTTPFailure

__all__ = ["OpenStream", "StreamRegistry", "shutting_down"]

RETRY_AFTER_SECONDS: Final = 1


class OpenStream:
    __slots__ = ("_client", "_upstream", "route", "stopping")

    def __init__(self, route: str, client: asyncio.BaseTransport | None = None) -> None:
        self.route = route
        self.stopping = False
        self._upstream: aiohttp.ClientResponse | None = None
        self._client = client

    def attach(self, upstream: aiohttp.ClientResponse) -> None:
        """The upstream response to close if the gateway drains before the stream ends."""
        if self.stopping:
            raise shutting_down()
        self._upstream = upstream

    def stop(self) -> None:
        self.stopping = True
        if self._upstream is not None:
            self._upstream.close()

    def abort(self) -> None:
        """Cut the client's connection: a handler blocked on a client that does not read is
        freed at once (its write fails), instead of waiting out the server's own shutdown."""
        if self._client is not None:
            self._client.abort()  # type: ignore[attr-defined]


class Stoppable(Protocol):
    def stop(self, code: str, message: str) -> None: ...


class StreamRegistry:
    def __init__(self, max_streams: int | None) -> None:
        self._max_streams = max_streams
        self._open: set[OpenStream] = set()
        # Producers of resumable streams: they outlive the request that started them.
        self._producers: dict[asyncio.Task[None], Stoppable] = {}
        self._per_route: Counter[str] = Counter()
        self._idle = asyncio.Event()
        self._idle.set()
        self.draining = False

    def admit(
        self, route: str, route_max: int | None, client: asyncio.BaseTransport | None = None
    ) -> OpenStream:
        if self.draining:
            raise shutting_down()
        if self._max_streams is not None and len(self._open) >= self._max_streams:
            raise _too_many(f"the gateway has its maximum of {self._max_streams} open streams")
        if route_max is not None and self._per_route[route] >= route_max:
            raise _too_many(f"route {route} has its maximum of {route_max} open streams")
        stream = OpenStream(route, client)
        self._open.add(stream)
        self._per_route[route] += 1
        self._idle.clear()
        return stream

    def release(self, stream: OpenStream) -> None:
        self._open.discard(stream)
        self._per_route[stream.route] -= 1
        if not self._open:
            self._idle.set()

    def open_streams(self, route: str | None = None) -> int:
        return len(self._open) if route is None else self._per_route[route]

    def add_producer(self, producer: Stoppable, task: asyncio.Task[None]) -> None:
        self._producers[task] = producer
        task.add_done_callback(self._producers.pop)

    def drain(self) -> int:
        """Refuse new streams and stop the open ones; the number stopped."""
        self.draining = True
        for producer in self._producers.values():
            producer.stop(shutting_down().code, shutting_down().message)
        stopping = list(self._open)
        for stream in stopping:
            stream.stop()
        return len(stopping)

    def abort(self) -> int:
        """The end of a drain that ran out of time: every open stream's client cut off."""
        left = list(self._open)
        for stream in left:
            stream.abort()
        return len(left)

    async def close_producers(self) -> None:
        """At the app's cleanup: every producer stopped and awaited."""
        for producer in self._producers.values():
            producer.stop(shutting_down().code, shutting_down().message)
        tasks = list(self._producers)
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        for task in tasks:
            task.cancel()

    async def wait_idle(self, within: float) -> bool:
        """True once no stream is open, False if ``within`` seconds pass first."""
        try:
            async with asyncio.timeout(within):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True


def shutting_down() -> HTTPFailure:
    return HTTPFailure(
        503,
        "shutting_down",
        "this gateway is shutting down; retry, and another replica will answer",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def _too_many(message: str) -> HTTPFailure:
    return HTTPFailure(
        503, "too_many_streams", message, headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
    )
