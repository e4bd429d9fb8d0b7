"""Replay stores: the events of a stream, kept so a reconnecting client resumes where it was.

Each stream (its key is in every event id: ``<key>-<n>``) is an ordered list of encoded events
numbered from 1, with a bound (``max_events``, oldest dropped first), a lifetime (``ttl`` seconds
after the last write), a *finished* mark (its last event is the end or error event), and two
leases: the producer's (someone is still reading the upstream) and the readers' (someone is still
listening; when nobody is for ``linger`` seconds, the producer stops the upstream request). A
stream belongs to the route that made it (its *owner*), and may be *cancelled* (a client's
``DELETE``): the store tells every process, so the producer stops wherever it runs.

A route with ``streams: {share: true}`` also keeps *claims*: the fingerprint of an upstream
request names the stream that reads it, so an equal request joins that stream (while it is still
being opened, too) instead of opening another upstream request.

:class:`MemoryStore` keeps them in this process; :class:`proxy.resume.redis_store.RedisStore`
keeps them in Redis Streams, so a reconnect that lands on another replica resumes too.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["MemoryStore", "ReplayBatch", "ReplayStore", "StreamState"]


@dataclass(frozen=True, slots=True)
class ReplayBatch:
    events: list[tuple[int, bytes]]
    """``(n, encoded event)`` after the number asked for, in order."""
    finished: bool
    """The stream's last event is stored: nothing will follow ``last``."""
    last: int
    """The number of the newest event stored (0: none yet)."""
    producing: bool
    """Someone holds the producer's lease: more events may come."""


@dataclass(frozen=True, slots=True)
class StreamState:
    owner: str
    """The route that made the stream (its path)."""
    last: int
    """The number of the newest event stored (0: none yet)."""
    finished: bool
    """The stream's last event is stored."""


class ReplayStore(Protocol):
    async def create(self, key: str, owner: str) -> None: ...

    async def state(self, key: str) -> StreamState | None:
        """Whose the stream is and how far it got, without its events; None for a stream this
        store does not know."""
        ...

    async def append(self, key: str, events: list[bytes], *, finished: bool = False) -> int:
        """Store ``events`` as the next numbers; the number of the last one."""
        ...

    async def read(self, key: str, after: int, wait: float) -> ReplayBatch | None:
        """Events after ``after``, waiting up to ``wait`` seconds for one if there is none yet
        and the stream is not finished; None for a stream this store does not know (expired)."""
        ...

    async def hold_producer(self, key: str, seconds: float) -> bool:
        """Renew the producer's lease; False once the stream is cancelled."""
        ...

    async def release_producer(self, key: str) -> None: ...

    async def touch_reader(self, key: str, seconds: float) -> None: ...

    async def has_reader(self, key: str) -> bool: ...

    async def cancel(self, key: str) -> bool:
        """Mark the stream cancelled and tell every process's :meth:`on_cancel` listener; False
        for a stream this store does not know."""
        ...

    def on_cancel(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(key)`` in this process whenever a stream is cancelled, wherever."""
        ...

    async def claim(self, fingerprint: str, key: str, seconds: float) -> str:
        """The stream that reads the upstream request ``fingerprint``: ``key`` if no live claim
        names another one (then it is ours for ``seconds``), else that other stream's key."""
        ...

    async def renew_claim(self, fingerprint: str, key: str, seconds: float) -> None: ...

    async def release_claim(self, fingerprint: str, key: str) -> None:
        """Drop the claim if it still names ``key``."""
        ...

    async def close(self) -> None: ...


@dataclass(slots=True)
class _Stream:
    events: deque[tuple[int, bytes]]
    owner: str
    last: int = 0
    finished: bool = False
    expires: float = 0.0
    producer_until: float = 0.0
    reader_until: float = 0.0
    cancelled: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class MemoryStore:
    """In this process: the default, and enough for one replica."""

    def __init__(self, max_events: int, ttl: float) -> None:
        self._max_events = max_events
        self._ttl = ttl
        self._streams: dict[str, _Stream] = {}
        self._claims: dict[str, tuple[str, float]] = {}
        self._listeners: list[Callable[[str], None]] = []
        self._next_sweep = 0.0

    async def create(self, key: str, owner: str) -> None:
        self._sweep()
        self._streams[key] = _Stream(deque(maxlen=self._max_events), owner, expires=self._expiry())

    async def state(self, key: str) -> StreamState | None:
        stream = self._live(key)
        return None if stream is None else StreamState(stream.owner, stream.last, stream.finished)

    async def append(self, key: str, events: list[bytes], *, finished: bool = False) -> int:
        stream = self._streams[key]
        for event in events:
            stream.last += 1
            stream.events.append((stream.last, event))
        stream.finished = stream.finished or finished
        stream.expires = self._expiry()
        self._wake(stream)
        return stream.last

    async def read(self, key: str, after: int, wait: float) -> ReplayBatch | None:
        stream = self._live(key)
        if stream is None:
            return None
        if stream.last <= after and not stream.finished and wait > 0:
            try:
                async with asyncio.timeout(wait):
                    await stream.changed.wait()
            except TimeoutError:
                pass
        # The numbers are consecutive: what follows ``after`` is the newest last - after of them,
        # taken from the end (a live reader's read costs what it gets, not the whole window).
        wanted = min(stream.last - after, len(stream.events))
        newest = list(itertools.islice(reversed(stream.events), max(0, wanted)))
        newest.reverse()
        return ReplayBatch(
            newest,
            stream.finished,
            stream.last,
            time.monotonic() < stream.producer_until,
        )

    async def hold_producer(self, key: str, seconds: float) -> bool:
        if (stream := self._live(key)) is None:
            return True
        stream.producer_until = time.monotonic() + seconds
        return not stream.cancelled

    async def release_producer(self, key: str) -> None:
        if (stream := self._live(key)) is not None:
            stream.producer_until = 0.0
            self._wake(stream)

    async def touch_reader(self, key: str, seconds: float) -> None:
        if (stream := self._live(key)) is not None:
            stream.reader_until = time.monotonic() + seconds

    async def has_reader(self, key: str) -> bool:
        stream = self._live(key)
        return stream is not None and time.monotonic() < stream.reader_until

    async def cancel(self, key: str) -> bool:
        if (stream := self._live(key)) is None:
            return False
        stream.cancelled = True
        for listener in self._listeners:
            listener(key)
        return True

    def on_cancel(self, listener: Callable[[str], None]) -> None:
        self._listeners.append(listener)

    async def claim(self, fingerprint: str, key: str, seconds: float) -> str:
        held = self._claims.get(fingerprint)
        if held is not None and held[1] > time.monotonic():
            return held[0]
        self._claims[fingerprint] = (key, time.monotonic() + seconds)
        return key

    async def renew_claim(self, fingerprint: str, key: str, seconds: float) -> None:
        held = self._claims.get(fingerprint)
        if held is not None and held[0] == key:
            self._claims[fingerprint] = (key, time.monotonic() + seconds)

    async def release_claim(self, fingerprint: str, key: str) -> None:
        held = self._claims.get(fingerprint)
        if held is not None and held[0] == key:
            del self._claims[fingerprint]

    async def close(self) -> None:
        self._streams.clear()
        self._claims.clear()

    def _live(self, key: str) -> _Stream | None:
        stream = self._streams.get(key)
        if stream is not None and stream.expires < time.monotonic():
            del self._streams[key]
            return None
        return stream

    def _wake(self, stream: _Stream) -> None:
        # Every reader waiting wakes once; the next wait gets a fresh event.
        stream.changed.set()
        stream.changed = asyncio.Event()

    def _expiry(self) -> float:
        return time.monotonic() + self._ttl

    def _sweep(self) -> None:
        """Drop expired streams, at most once a second: a bound on memory without a timer."""
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + 1.0
        for key in [k for k, s in self._streams.items() if s.expires < now]:
            del self._streams[key]
        for fingerprint in [f for f, (_, until) in self._claims.items() if until < now]:
            del self._claims[fingerprint]
