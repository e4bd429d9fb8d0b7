"""A reader of a resumable stream: the relay's source for a client, fed from the stream's tail
in this process (:mod:`.hub`), which reads the replay store once for all its readers.

Events are stored without ids; the reader stamps each with ``id: <stream key>-<n>`` as it
writes, so a browser's ``Last-Event-ID`` names both the stream and the place in it. A stream key
is 128 random bits, URL-safe: with ``streams`` on, it is also the stream's URL, a capability.
"""

from __future__ import annotations

import re
import secrets
from typing import TYPE_CHECKING, Final

from proxy.convert import StreamConverter
from proxy.errors import StreamError
from proxy.respond import SSE_HEADERS, ClientGone
from proxy.streams import StopReason

from .hub import Parked, PushSink, Subscription, Tail
from .store import ReplayBatch

if TYPE_CHECKING:
    from proxy.logs import StreamRecord

__all__ = ["ReplaySource", "is_stream_key", "new_stream_key", "parse_resume_id", "split_events"]

# 16 characters: the keys of earlier releases (96 bits), still readable from a shared store.
_KEY: Final = r"[A-Za-z0-9_-]{16,43}"
_RESUME_ID: Final = re.compile(rf"({_KEY})-([0-9]{{1,18}})")
_STREAM_KEY: Final = re.compile(_KEY)
_LOST: Final = (
    "the process reading this stream's upstream is gone; the events kept so far were sent"
)


def new_stream_key() -> str:
    return secrets.token_urlsafe(16)  # 22 URL-safe characters, 128 random bits


def is_stream_key(text: str) -> bool:
    return _STREAM_KEY.fullmatch(text) is not None


def parse_resume_id(last_event_id: str | None) -> tuple[str, int] | None:
    """``(stream key, n)`` from a ``Last-Event-ID`` this gateway gave, else None."""
    match = _RESUME_ID.fullmatch(last_event_id or "")
    return (match.group(1), int(match.group(2))) if match else None


def split_events(output: bytes) -> list[bytes]:
    """A converter's output as its events, each without the blank line that ends it (an encoded
    event never holds a blank line inside: every line of it starts with a field name)."""
    return output.split(b"\n\n")[:-1]


class ReplaySource:
    """The stream's events after ``after``, then whatever comes, until its last one. With a
    ``sink`` (the client's response), a reader that has caught up parks on the tail, which then
    writes the next events to the sink itself (:mod:`.hub`)."""

    __slots__ = (
        "_after",
        "_converter",
        "_finished",
        "_key",
        "_may_park",
        "_subscription",
        "_tail",
        "events",
    )

    headers = SSE_HEADERS
    usage = None  # counted where the upstream is read: by the producer

    def __init__(
        self,
        tail: Tail,
        after: int,
        converter: StreamConverter,
        sink: PushSink | None = None,
        record: StreamRecord | None = None,
    ) -> None:
        self._tail = tail
        self._key = tail.key
        self._after = after
        self._converter = converter  # for the retry line, heartbeats and our own error events
        self._finished = False
        self._subscription = None if sink is None else Subscription(sink, record)
        self._may_park = True
        self.events = 0

    @property
    def ended(self) -> bool:
        return self._finished

    def opening(self) -> bytes:
        return self._converter.start()

    async def read(self, until: float) -> bytes | None:
        if self._finished:
            return None
        subscription = self._subscription
        if subscription is not None and self._may_park and self._tail.caught_up(self._after):
            return await self._park(subscription, until)
        self._may_park = True
        batch = await self._tail.read(self._after, until)
        if batch is None:
            raise StreamError("this stream is no longer kept", code="stream_expired")
        output = self._encode(batch) if batch.events else b""
        if batch.finished and self._after >= batch.last:
            self._finished = True
            return output or None
        if not batch.events and not batch.producing:
            raise StreamError(_LOST, code="stream_lost")
        return output

    async def _park(self, subscription: Subscription, until: float) -> bytes | None:
        subscription.position, subscription.events = self._after, 0
        why = await self._tail.park(subscription, until)
        self._after = subscription.position
        self.events += subscription.events
        if why is Parked.FINISHED:
            self._finished = True
            return None
        if why is Parked.GONE:
            raise ClientGone
        # Back to this relay for one read at least: it catches up, writes the heartbeat, or
        # finds the stop or what became of the stream.
        self._may_park = False
        return b""

    def _encode(self, batch: ReplayBatch) -> bytes:
        first = batch.events[0][0]
        gap = b""
        if first > self._after + 1:
            gap = self._converter.error(
                "replay_gap",
                f"events {self._after + 1} to {first - 1} are no longer kept (resume.max_events)",
            )
        prefix = self._key.encode()
        self.events += len(batch.events)
        self._after = batch.events[-1][0]
        return gap + b"".join([b"id: %s-%d\n%s\n\n" % (prefix, n, e) for n, e in batch.events])

    def heartbeat(self) -> bytes:
        return self._converter.heartbeat()

    def failure(self, reason: StopReason) -> bytes:
        return self._converter.error(reason.code, reason.message)

    def close(self) -> None:
        """Told to stop: a parked reader goes back to its relay, which sees the stop; a waiting
        one is woken by the tail's next round."""
        if self._subscription is not None:
            self._subscription.release(Parked.WOKEN)
