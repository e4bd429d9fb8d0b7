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

A reader that has caught up *parks* on the tail, and the tail writes the events that come next to
every parked reader itself, encoded once (``id: <key>-<n>`` included) and written in one pass:
with thousands of readers, waking a task per reader per event would cost more than the writes.
So each client's response has two writers, never at once: its own relay while it catches up,
writes a heartbeat or the end, and the tail while it is parked. A parked reader goes back to its
own relay when its client's buffer holds unsent bytes (it would make the others wait: there,
``write_timeout`` applies), when it is stopped, when its heartbeat is due, or at the end.

A cancel (a client's ``DELETE``, on any replica) reaches the stream's producer through the store's
cancel listener; the producer stops with ``cancelled``, whose error event its readers then read
as the stream's last.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import itertools
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Final, Protocol

from proxy.errors import StreamError
from proxy.respond import ClientGone
from proxy.streams import StopReason, StopSignal

from .store import ReplayBatch, ReplayStore, StreamState

if TYPE_CHECKING:
    from proxy.logs import StreamRecord
    from proxy.usage import UsageTally

__all__ = ["CANCELLED", "READ_WAIT", "Parked", "StreamHub", "Subscription", "Tail"]

READ_WAIT: Final = 1.0
"""Longest wait on the store per round: how soon readers notice a stop or a lost producer."""
CANCELLED: Final = StopReason("cancelled", "the stream was stopped by a DELETE of its URL")


class PushSink(Protocol):
    """A client's response, as the tail writes to it (see ``CountingResponse.push``)."""

    def push(self, data: bytes, chunk: bytes) -> bool: ...


class Parked(enum.Enum):
    """Why a parked reader is handed back to its own relay."""

    DUE = "due"  # its deadline came: a heartbeat, or a look at the stop signal
    BEHIND = "behind"  # it could not take the next events at once
    GONE = "gone"  # its client went away
    FINISHED = "finished"  # it has the stream's last event
    WOKEN = "woken"  # stopped, or the tail failed or expired


class Subscription:
    """A reader parked on its tail: where it is, and how to tell its record what it got."""

    __slots__ = ("events", "position", "record", "sink", "waiter")

    def __init__(self, sink: PushSink, record: StreamRecord | None) -> None:
        self.sink = sink
        self.record = record
        self.position = 0
        self.events = 0
        self.waiter: asyncio.Future[Parked] | None = None

    def release(self, why: Parked) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(why)


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
        self._parked: dict[Subscription, None] = {}  # an ordered set
        self._prefix = key.encode()
        self._rounds = 0

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

    def progress(self) -> tuple[int, bool] | None:
        """``(last, finished)`` as of the tail's latest round; None before its first one, or
        once it no longer follows the store."""
        if self._rounds == 0 or not self.reusable:
            return None
        return self._last, self._finished

    def caught_up(self, after: int) -> bool:
        """A reader at ``after`` has everything so far, and more may come: it may park."""
        return after >= self._last and not self._finished and self.reusable

    async def park(self, subscription: Subscription, until: float) -> Parked:
        """Hand the reader's next events to the tail until one of :class:`Parked` happens (at the
        latest at ``until``); ``subscription.position`` says where it is then."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Parked] = loop.create_future()
        subscription.waiter = waiter
        self._parked[subscription] = None
        due = loop.call_at(until, subscription.release, Parked.DUE)
        try:
            return await waiter
        finally:
            due.cancel()
            self._parked.pop(subscription, None)
            subscription.waiter = None

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
                self._rounds += 1
                self._wake()
                if self._parked:
                    self._push(batch.events)
                    if not batch.events and not self._producing and not self._finished:
                        for subscription in list(self._parked):  # to find the stream lost
                            subscription.release(Parked.WOKEN)
        except Exception as exc:
            # Any store failure (Redis away, say) is every reader's error event: none of them
            # may wait on a tail that no longer reads.
            self._failure = f"the replay store failed: {exc}"
        finally:
            self._task = None
            self._wake()
            for subscription in list(self._parked):
                subscription.release(Parked.WOKEN)
            if self._readers == 0:
                self._on_idle(self)

    def _push(self, events: list[tuple[int, bytes]]) -> None:
        """The events each parked reader lacks, written to it at once (encoded once per position:
        all of them, for readers that were caught up); a reader that lacks older ones, or whose
        client cannot take them now, goes back to its own relay."""
        first = events[0][0] if events else self._last + 1
        encoded: dict[int, tuple[bytes, bytes]] = {}
        now = asyncio.get_running_loop().time()
        for subscription in list(self._parked):
            position = subscription.position
            if position >= self._last:
                if self._finished:
                    subscription.release(Parked.FINISHED)
                continue
            if position < first - 1:
                subscription.release(Parked.BEHIND)  # it lacks older events: its relay reads them
                continue
            framed = encoded.get(position)
            if framed is None:
                data = self._encode(e for e in events if e[0] > position)
                framed = encoded[position] = (data, b"%x\r\n%s\r\n" % (len(data), data))
            try:
                written = subscription.sink.push(*framed)
            except ClientGone:
                subscription.release(Parked.GONE)
                continue
            if not written:
                subscription.release(Parked.BEHIND)  # it would keep the others waiting
                continue
            subscription.events += self._last - position
            subscription.position = self._last
            if (record := subscription.record) is not None:
                record.first_event_now()
                record.timeline.mark(now)
            if self._finished:
                subscription.release(Parked.FINISHED)

    def _wake(self) -> None:
        # Every reader waiting wakes once; the next wait gets a fresh event.
        self._changed.set()
        self._changed = asyncio.Event()

    def _encode(self, events: Iterable[tuple[int, bytes]]) -> bytes:
        prefix = self._prefix
        return b"".join([b"id: %s-%d\n%s\n\n" % (prefix, n, e) for n, e in events])


class StreamHub:
    """A resumable route's streams in this process."""

    def __init__(
        self,
        store: ReplayStore,
        window: int,
        linger: float,
        count_tokens: Callable[[UsageTally], None] | None = None,
        *,
        route: str = "",
    ) -> None:
        self.store = store
        self.route = route
        """The route's path: the owner of the streams it makes."""
        self.count_tokens = count_tokens
        """Where a producer's token counts go at its end (the route's metrics)."""
        self._window = window
        self._linger = linger
        self._tails: dict[str, Tail] = {}
        self._producers: dict[str, StopSignal] = {}
        self._lookups: dict[str, asyncio.Future[StreamState | None]] = {}

    def listen_for_cancels(self) -> None:
        self.store.on_cancel(self._stop_producer)

    async def state(self, key: str) -> StreamState | None:
        """The stream's owner and progress: from its tail when readers here follow it (no store
        request at all: only this route's streams have tails here), else from the store in one
        request for every reader that asks meanwhile, so a thousand dashboards opening one
        stream URL at once cost one lookup and one connection, not a thousand."""
        tail = self._tails.get(key)
        if tail is not None and (progress := tail.progress()) is not None:
            return StreamState(self.route, *progress)
        lookup = self._lookups.get(key)
        if lookup is None:
            lookup = self._lookups[key] = asyncio.ensure_future(self.store.state(key))
            lookup.add_done_callback(functools.partial(self._looked_up, key))
        # Shielded: a reader that goes away does not cancel the others' lookup.
        return await asyncio.shield(lookup)

    def _looked_up(self, key: str, lookup: asyncio.Future[StreamState | None]) -> None:
        del self._lookups[key]
        if not lookup.cancelled():
            lookup.exception()  # retrieved: raised to each reader that awaits it, if any

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
