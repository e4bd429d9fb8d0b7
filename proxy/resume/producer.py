"""The producer of a resumable stream: one task per stream that reads the upstream into the
replay store, through the same relay as a client's stream (the store is its sink).

It outlives the request that started it. A client that goes away does not stop it at once: it
keeps reading while some reader has touched the stream within ``resume.linger`` seconds, then
stops with ``abandoned``, which closes the upstream request and stores that error event as the
stream's last. Its lease in the store says it is still alive (a reader on another replica that
finds no lease and no new event knows the stream is lost).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

from proxy.relay import RelayLimits, Source, relay
from proxy.streams import StopReason, StopSignal

from .reader import split_events
from .store import ReplayStore

__all__ = ["Producer"]

_LEASE: Final = 5.0


class StoreSink:
    """The relay's sink for a producer: each output's events appended to the stream."""

    __slots__ = ("_key", "_store", "sent")

    def __init__(self, store: ReplayStore, key: str) -> None:
        self._store = store
        self._key = key
        self.sent = 0

    async def write(self, data: bytes) -> None:
        events = split_events(data)
        if events:
            await self._store.append(self._key, events)
            self.sent += len(data)

    async def write_last(self, data: bytes) -> None:
        await self._store.append(self._key, split_events(data), finished=True)
        self.sent += len(data)


class Producer:
    """Relays ``source`` (the upstream's events, without ids) into the store until its end, an
    error, a stop (the drain) or no readers."""

    def __init__(
        self, store: ReplayStore, key: str, source: Source, linger: float, limits: RelayLimits
    ) -> None:
        self._store = store
        self._key = key
        self._source = source
        self._linger = linger
        self._limits = limits
        self.stop = StopSignal()
        self.stop.on_stop(source.close)

    async def run(self) -> None:
        store, key = self._store, self._key
        sink = StoreSink(store, key)
        pump = asyncio.create_task(relay(self._source, sink, self.stop, self._limits))
        try:
            while not pump.done():
                await store.hold_producer(key, _LEASE)
                await asyncio.wait({pump}, timeout=_LEASE / 5)
                if not pump.done() and not await store.has_reader(key):
                    self.stop.stop(_abandoned(self._linger))
            await pump
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
            await store.release_producer(key)


def _abandoned(linger: float) -> StopReason:
    return StopReason(
        "abandoned",
        f"no client read this stream for {linger} s; the upstream request was closed",
    )
