"""One route's resumable streams in this process: the store, one tail per stream its readers
share, and the producers this process runs.

Strategy: a stream may have thousands of readers on one replica (dashboards watching one
Kubernetes resource). Each would otherwise poll the store on its own: a Redis connection and an
``XREAD`` per client. Instead a :class:`Tail` per stream and process reads the store once, keeps
the events it read in a window as large as the store's, and wakes its readers; each reader takes
what follows its own position from that window, so a slow reader costs the others nothing. A
reader whose position the window no longer covers (it joined late, or fell behind) reads that
part from the store once. The tail also keeps the stream's reader lease for all of them, and
ends within a round after its last reader leaves.

A cancel (a client's ``DELETE``, on any replica) reaches the stream's producer through the store's
cancel listener; the producer stops with ``cancelled``, whose error event its readers then read
as the stream's last.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from proxy.errors import StreamError
from proxy.streams import StopReason, StopSignal

from .store import ReplayBatch, ReplayStore

if TYPE_CHECKING:
    from proxy.usage import UsageTally

__all__ = ["CANCELLED", "READ_WAIT", "StreamHub", "Tail"]

READ_WAIT: Final = 1.0
"""Longest wait on the store per round: how soon readers notice a stop or a lost producer."""
CANCELLED: Final = StopReason("cancelled", "the stream was stopped by a DELETE of its URL")


class Tail:
    """The store's events of one stream, read once for every reader in this process."""

    def __init__(
        self,
        store: ReplayStore,
        key: str,
        window: int,
        linger: float,
        on_idle: Callable[[Tail], None],
    ) -> None:
        self._store = store
        self._on_idle = on_idle
        self.key = key
        self._events: deque[tuple[int, bytes]] = deque(maxlen=window)
        self._linger = linger
        self._last = 0
        self._finished = False
        self._producing = True
        self._expired = False
        self._failure: str | None = None
        self._changed = asyncio.Event()
        self._readers = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def reusable(self) -> bool:
        """Still true to the store: not failed, not expired."""
        return self._failure is None and not self._expired

    def attach(self) -> None:
        self._readers += 1
        if self._task is None:
            self._task = asyncio.create_task(self._follow())

    def detach(self) -> None:
        self._readers -= 1
        if self._readers == 0 and self._task is None:
            self._on_idle(self)  # a finished stream's tail: nobody left to read its window

    async def read(self, after: int, until: float) -> ReplayBatch | None:
        """Like :meth:`ReplayStore.read` for a reader at ``after``: what follows it, waiting until
        ``until`` (or the tail's next round) when nothing does yet."""
        if self._window_misses(after):
            return await self._store.read(self.key, after, 0)
        if self._last <= after and not self._finished and self._live():
            await self._wait(until)
        if not self._live():
            return None
        events = list(itertools.islice(reversed(self._events), self._last - after))
        events.reverse()
        return ReplayBatch(events, self._finished, self._last, self._producing)

    def _live(self) -> bool:
        if self._failure is not None:
            raise StreamError(self._failure, code="store_error")
        return not self._expired

    def _window_misses(self, after: int) -> bool:
        return bool(self._events) and after + 1 < self._events[0][0]

    async def _wait(self, until: float) -> None:
        changed = self._changed
        if until - asyncio.get_running_loop().time() >= READ_WAIT:
            # The tail wakes its readers every round, so this wait needs no timer of its own.
            await changed.wait()
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(until):
                await changed.wait()

    async def _follow(self) -> None:
        store, key = self._store, self.key
        try:
            while self._readers > 0 and not self._finished:
                await store.touch_reader(key, max(self._linger, READ_WAIT * 2))
                batch = await store.read(key, self._last, READ_WAIT)
                if batch is None:
                    self._expired = True
                    break
                if batch.events:
                    self._events.extend(batch.events)
                    self._last = batch.events[-1][0]
                self._finished = batch.finished and self._last >= batch.last
                self._producing = batch.producing
                self._wake()
        except Exception as exc:
            # Any store failure (Redis away, say) is every reader's error event: none of them
            # may wait on a tail that no longer reads.
            self._failure = f"the replay store failed: {exc}"
        finally:
            self._task = None
            self._wake()
            if self._readers == 0:
                self._on_idle(self)

    def _wake(self) -> None:
        # Every reader waiting wakes once; the next wait gets a fresh event.
        self._changed.set()
        self._changed = asyncio.Event()


class StreamHub:
    """A resumable route's streams in this process."""

    def __init__(
        self,
        store: ReplayStore,
        window: int,
        linger: float,
        count_tokens: Callable[[UsageTally], None] | None = None,
    ) -> None:
        self.store = store
        self.count_tokens = count_tokens
        """Where a producer's token counts go at its end (the route's metrics)."""
        self._window = window
        self._linger = linger
        self._tails: dict[str, Tail] = {}
        self._producers: dict[str, StopSignal] = {}

    def listen_for_cancels(self) -> None:
        self.store.on_cancel(self._stop_producer)

    def tail(self, key: str) -> Tail:
        """The stream's tail in this process, attached to (detach it when done)."""
        tail = self._tails.get(key)
        if tail is None or not tail.reusable:
            tail = Tail(self.store, key, self._window, self._linger, self._forget)
            self._tails[key] = tail
        tail.attach()
        return tail

    def _forget(self, tail: Tail) -> None:
        if self._tails.get(tail.key) is tail:
            del self._tails[tail.key]

    def add_producer(self, key: str, stop: StopSignal) -> None:
        self._producers[key] = stop

    def remove_producer(self, key: str) -> None:
        self._producers.pop(key, None)

    async def cancel(self, key: str) -> bool:
        """Stop the stream wherever its producer runs; False for an unknown stream."""
        found = await self.store.cancel(key)
        self._stop_producer(key)  # here at once, whether or not the store's message comes back
        return found

    def _stop_producer(self, key: str) -> None:
        stop = self._producers.get(key)
        if stop is not None:
            stop.stop(CANCELLED)
