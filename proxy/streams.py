"""The open streams of one gateway: admission against the limits, and the drain at shutdown.

Strategy: every stream is admitted before its upstream request (so a refused one costs nothing
upstream) and released when its handler ends, whatever the way. Admission is where the two limits
and the drain say no, each with a 503 and ``Retry-After`` that tells a client (or a load balancer)
to try again, elsewhere if it can.

Stopping is a reason, not an exception: :meth:`StopSignal.stop` takes a :class:`StopReason` (a
code and a message: the drain's ``shutting_down``, ``max_duration``, ``abandoned``, a client's
cancel) and wakes whoever reads the stream's source (it closes the upstream response); the relay,
finding a reason, ends the stream with it as its error event. The drain stops every open stream
with ``shutting_down``, so a client reconnects (with its ``Last-Event-ID``) to another replica
rather than believing the answer was whole.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from .errors import HTTPFailure

__all__ = ["SHUTTING_DOWN", "OpenStream", "StopReason", "StopSignal", "StreamRegistry"]

RETRY_AFTER_SECONDS: Final = 1


@dataclass(frozen=True, slots=True)
class StopReason:
    """Why a stream was told to stop: the ``code`` and ``message`` of its last (error) event."""

    code: str
    message: str


SHUTTING_DOWN: Final = StopReason(
    "shutting_down", "this gateway is shutting down; retry, and another replica will answer"
)


class StopSignal:
    """A stream's stop: the first reason given wins, and wakes the reader of its source."""

    __slots__ = ("_wake", "reason")

    def __init__(self) -> None:
        self.reason: StopReason | None = None
        self._wake: Callable[[], None] | None = None

    def stop(self, reason: StopReason) -> None:
        if self.reason is None:
            self.reason = reason
            if self._wake is not None:
                self._wake()

    def on_stop(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` (close the upstream) when the stream is told to stop. A stream stopped
        before its upstream answered is refused like a new one (503 ``shutting_down``)."""
        if self.reason is not None:
            raise _refused(self.reason)
        self._wake = wake


class OpenStream(StopSignal):
    """A client's stream, admitted: its route and the client's connection."""

    __slots__ = ("_client", "route")

    def __init__(self, route: str, client: asyncio.BaseTransport | None = None) -> None:
        super().__init__()
        self.route = route
        self._client = client

    def abort(self) -> None:
        """Cut the client's connection: a handler blocked on a client that does not read is
        freed at once (its write fails), instead of waiting out the server's own shutdown."""
        if self._client is not None:
            self._client.abort()  # type: ignore[attr-defined]


class StreamRegistry:
    def __init__(self, max_streams: int | None) -> None:
        self._max_streams = max_streams
        self._open: set[OpenStream] = set()
        # Producers of resumable streams: they outlive the request that started them.
        self._producers: dict[asyncio.Task[None], StopSignal] = {}
        self._per_route: Counter[str] = Counter()
        self._idle = asyncio.Event()
        self._idle.set()
        self.draining = False

    def admit(
        self, route: str, route_max: int | None, client: asyncio.BaseTransport | None = None
    ) -> OpenStream:
        if self.draining:
            raise _refused(SHUTTING_DOWN)
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

    def add_producer(self, stop: StopSignal, task: asyncio.Task[None]) -> None:
        """A task that reads an upstream for no one request (a resumable stream's producer)."""
        self._producers[task] = stop
        if self.draining:
            stop.stop(SHUTTING_DOWN)
        task.add_done_callback(self._producers.pop)

    def drain(self) -> int:
        """Refuse new streams and stop the open ones; the number stopped."""
        self.draining = True
        for producer in self._producers.values():
            producer.stop(SHUTTING_DOWN)
        stopping = list(self._open)
        for stream in stopping:
            stream.stop(SHUTTING_DOWN)
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
            producer.stop(SHUTTING_DOWN)
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


def _refused(reason: StopReason) -> HTTPFailure:
    return HTTPFailure(
        503, reason.code, reason.message, headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
    )


def _too_many(message: str) -> HTTPFailure:
    return _refused(StopReason("too_many_streams", message))
