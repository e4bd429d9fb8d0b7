"""A reader of a resumable stream: the relay's source for a client, fed from the replay store.

Events are stored without ids; the reader stamps each with ``id: <stream key>-<n>`` as it
writes, so a browser's ``Last-Event-ID`` names both the stream and the place in it. Each read
waits on the store at most a second (it is never cancelled, so a Redis read is never cut off
half-way), and touches the stream's reader lease, which keeps its producer reading.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from typing import Final

from proxy.convert import StreamConverter
from proxy.errors import StreamError
from proxy.respond import SSE_HEADERS
from proxy.streams import StopReason

from .store import ReplayBatch, ReplayStore

__all__ = ["ReplaySource", "new_stream_key", "parse_resume_id", "split_events"]

_RESUME_ID: Final = re.compile(r"([A-Za-z0-9_-]{16})-([0-9]{1,18})")
READ_WAIT: Final = 1.0
"""Longest wait on the store per read: how soon a reader notices a stop or a lost producer."""
_LOST: Final = (
    "the process reading this stream's upstream is gone; the events kept so far were sent"
)


def new_stream_key() -> str:
    return secrets.token_urlsafe(12)  # 16 URL-safe characters, 96 random bits


def parse_resume_id(last_event_id: str | None) -> tuple[str, int] | None:
    """``(stream key, n)`` from a ``Last-Event-ID`` this gateway gave, else None."""
    match = _RESUME_ID.fullmatch(last_event_id or "")
    return (match.group(1), int(match.group(2))) if match else None


def split_events(output: bytes) -> list[bytes]:
    """A converter's output as its events, each without the blank line that ends it (an encoded
    event never holds a blank line inside: every line of it starts with a field name)."""
    return output.split(b"\n\n")[:-1]


class ReplaySource:
    """The stream's events after ``after``, then whatever comes, until its last one."""

    __slots__ = ("_after", "_converter", "_finished", "_key", "_linger", "_store", "events")

    headers = SSE_HEADERS

    def __init__(
        self,
        store: ReplayStore,
        key: str,
        after: int,
        converter: StreamConverter,
        linger: float,
    ) -> None:
        self._store = store
        self._key = key
        self._after = after
        self._converter = converter  # for the retry line, heartbeats and our own error events
        self._linger = linger
        self._finished = False
        self.events = 0

    @property
    def ended(self) -> bool:
        return self._finished

    def opening(self) -> bytes:
        return self._converter.start()

    async def read(self, until: float) -> bytes | None:
        if self._finished:
            return None
        store, key = self._store, self._key
        await store.touch_reader(key, max(self._linger, READ_WAIT * 2))
        wait = min(READ_WAIT, max(0.0, until - asyncio.get_running_loop().time()))
        batch = await store.read(key, self._after, wait)
        if batch is None:
            raise StreamError("this stream is no longer kept", code="stream_expired")
        output = self._encode(batch) if batch.events else b""
        if batch.finished and self._after >= batch.last:
            self._finished = True
            return output or None
        if not batch.events and not batch.producing:
            raise StreamError(_LOST, code="stream_lost")
        return output

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
        """Nothing to wake: a read returns within a second, and the relay then sees the stop."""
