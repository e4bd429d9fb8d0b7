"""The producer of a resumable stream: one task per stream that reads the upstream into the
replay store, through the same relay as a client's stream (the store is its sink).

It outlives the request that started it. A client that goes away does not stop it at once: it
keeps reading while some reader has touched the stream within ``resume.linger`` seconds, then
stops with ``abandoned``, which closes the upstream request and stores that error event as the
stream's last. Its lease in the store says it is still alive (a reader on another replica that
finds no lease and no new event knows the stream is lost). Renewing it also tells the producer
when the stream was cancelled (the store's message may have been missed), and renews the share
claim of the request it reads, which it drops at its end so that the next equal request opens a
new upstream request.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

from proxy.relay import RelayLimits, Source, relay
from proxy.streams import StopReason, StopSignal

from .hub import CANCELLED, StreamHub
from .reader import split_events
from .store import ReplayStore

__all__ = ["LEASE", "Producer"]

LEASE: Final = 5.0
"""Seconds a producer's lease (and its share claim) lasts unrenewed."""


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
    error, a stop (the drain, a cancel) or no readers."""

    def __init__(
        self,
        hub: StreamHub,
        key: str,
        source: Source,
        linger: float,
        limits: RelayLimits,
        fingerprint: str | None = None,
    ) -> None:
        self._hub = hub
        self._key = key
        self._source = source
        self._linger = linger
        self._limits = limits
        self._fingerprint = fingerprint
        self.stop = StopSignal()
        self.stop.on_stop(source.close)

    async def run(self) -> None:
        store, key = self._hub.store, self._key
        self._hub.add_producer(key, self.stop)
        sink = StoreSink(store, key)
        pump = asyncio.create_task(relay(self._source, sink, self.stop, self._limits))
        try:
            while not pump.done():
                await self._renew(store)
                await asyncio.wait({pump}, timeout=LEASE / 5)
                if not pump.done() and not await store.has_reader(key):
                    self.stop.stop(_abandoned(self._linger))
            await pump
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
            self._hub.remove_producer(key)
            usage = self._source.usage
            if usage is not None and self._hub.count_tokens is not None:
                self._hub.count_tokens(usage)
            await store.release_producer(key)
            if self._fingerprint is not None:
                await store.release_claim(self._fingerprint, key)

    async def _renew(self, store: ReplayStore) -> None:
        if not await store.hold_producer(self._key, LEASE):
            self.stop.stop(CANCELLED)
        if self._fingerprint is not None:
            await store.renew_claim(self._fingerprint, self._key, LEASE)


def _abandoned(linger: float) -> StopReason:
    return StopReason(
        "abandoned",
        f"no client read this stream for {linger} s; the upstream request was closed",
    )
