"""The replay store in Redis (Redis Streams via redis-py's asyncio client), shared by replicas.

Per stream key ``K``: the stream ``proxy:replay:K`` holds the events under the entry ids ``0-1``,
``0-2``, … (our numbers, so a resume is ``XRANGE (0-n +`` and a live tail is ``XREAD BLOCK … 0-n``);
the hash ``proxy:replay:K:meta`` holds ``last`` and ``finished``; ``…:producer`` and ``…:reader``
are leases (keys with a PX expiry). Every key expires ``ttl`` seconds after the last write, and the
stream is trimmed to about ``max_events``. One producer writes a stream, so numbering it with
``HINCRBY`` first and the entries after cannot race.

A cancel sets ``cancelled`` in the meta hash (the producer sees it when it renews its lease, at
most a second later) and is published on ``proxy:replay:cancels``, which one subscription per
process hears at once. A share claim is ``proxy:share:<fingerprint>`` set with ``NX`` to the key of
the stream that reads that request, so replicas agree on one winner.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, Final

import redis.asyncio as redis

from .store import ReplayBatch, StreamState

__all__ = ["RedisStore"]

_CANCELS: Final = "proxy:replay:cancels"
# Delete a claim only while it still names our stream (another may have taken it after expiry).
_RELEASE_CLAIM: Final = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class RedisStore:
    def __init__(self, url: str, max_events: int, ttl: float) -> None:
        self._redis: redis.Redis = redis.from_url(url)
        self._max_events = max_events
        self._ttl_ms = int(ttl * 1000)
        self._listeners: list[Callable[[str], None]] = []
        self._subscription: asyncio.Task[None] | None = None

    @staticmethod
    def _keys(key: str) -> tuple[str, str, str, str]:
        base = f"proxy:replay:{key}"
        return base, f"{base}:meta", f"{base}:producer", f"{base}:reader"

    async def create(self, key: str, owner: str) -> None:
        _, meta, _, _ = self._keys(key)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(meta, mapping={"last": 0, "finished": 0, "cancelled": 0, "owner": owner})
            pipe.pexpire(meta, self._ttl_ms)
            await pipe.execute()

    async def state(self, key: str) -> StreamState | None:
        owner, last, finished = await self._redis.hmget(
            self._keys(key)[1], ["owner", "last", "finished"]
        )
        if owner is None or last is None:
            return None
        return StreamState(_text(owner), int(last), finished == b"1")

    async def append(self, key: str, events: list[bytes], *, finished: bool = False) -> int:
        stream, meta, _, _ = self._keys(key)
        last = int(await self._redis.hincrby(meta, "last", len(events)))
        async with self._redis.pipeline(transaction=True) as pipe:
            for offset, event in enumerate(events):
                number = last - len(events) + 1 + offset
                pipe.xadd(
                    stream,
                    {"e": event},
                    id=f"0-{number}",
                    maxlen=self._max_events,
                    approximate=True,
                )
            if finished:
                pipe.hset(meta, "finished", 1)
            pipe.pexpire(meta, self._ttl_ms)
            if events:
                pipe.pexpire(stream, self._ttl_ms)
            await pipe.execute()
        return last

    async def read(self, key: str, after: int, wait: float) -> ReplayBatch | None:
        stream, meta, producer, _ = self._keys(key)
        state = await self._redis.hgetall(meta)
        if not state:
            return None
        entries = await self._redis.xrange(stream, min=f"(0-{after}", max="+")
        if not entries and state[b"finished"] == b"0" and wait > 0:
            await self._redis.xread({stream: f"0-{after}"}, block=max(1, int(wait * 1000)))
            state = await self._redis.hgetall(meta)
            if not state:
                return None
            entries = await self._redis.xrange(stream, min=f"(0-{after}", max="+")
        return ReplayBatch(
            _events(entries),
            state[b"finished"] == b"1",
            int(state[b"last"]),
            bool(await self._redis.exists(producer)),
        )

    async def hold_producer(self, key: str, seconds: float) -> bool:
        _, meta, producer, _ = self._keys(key)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(producer, 1, px=max(1, int(seconds * 1000)))
            pipe.hget(meta, "cancelled")
            _, cancelled = await pipe.execute()
        return bool(cancelled != b"1")

    async def release_producer(self, key: str) -> None:
        await self._redis.delete(self._keys(key)[2])

    async def touch_reader(self, key: str, seconds: float) -> None:
        await self._redis.set(self._keys(key)[3], 1, px=max(1, int(seconds * 1000)))

    async def has_reader(self, key: str) -> bool:
        return bool(await self._redis.exists(self._keys(key)[3]))

    async def cancel(self, key: str) -> bool:
        meta = self._keys(key)[1]
        if not await self._redis.exists(meta):
            return False
        await self._redis.hset(meta, "cancelled", 1)
        await self._redis.publish(_CANCELS, key)
        return True

    def on_cancel(self, listener: Callable[[str], None]) -> None:
        self._listeners.append(listener)
        if self._subscription is None:
            self._subscription = asyncio.create_task(self._hear_cancels())

    async def _hear_cancels(self) -> None:
        """One subscription per process: each cancel, wherever it was asked, to our listeners."""
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(_CANCELS)
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            key = _text(message["data"])
                            for listener in self._listeners:
                                listener(key)
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                # Redis away for a moment: the producer's lease renewal still sees the cancel.
                await asyncio.sleep(1.0)

    async def claim(self, fingerprint: str, key: str, seconds: float) -> str:
        name = f"proxy:share:{fingerprint}"
        for _ in range(3):  # a claim that expires between SET and GET: try again
            if await self._redis.set(name, key, nx=True, px=max(1, int(seconds * 1000))):
                return key
            held = await self._redis.get(name)
            if held is not None:
                return _text(held)
        return key

    async def renew_claim(self, fingerprint: str, key: str, seconds: float) -> None:
        await self._redis.pexpire(f"proxy:share:{fingerprint}", max(1, int(seconds * 1000)))

    async def release_claim(self, fingerprint: str, key: str) -> None:
        await self._redis.eval(_RELEASE_CLAIM, 1, f"proxy:share:{fingerprint}", key)

    async def close(self) -> None:
        if self._subscription is not None:
            self._subscription.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._subscription
        await self._redis.aclose()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _events(entries: Any) -> list[tuple[int, bytes]]:
    """XRANGE's ``[(b"0-7", {b"e": event}), ...]`` as ``[(7, event), ...]``."""
    events = []
    for entry_id, fields in entries or ():
        text = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        events.append((int(text.split("-", 1)[1]), bytes(fields[b"e"])))
    return events
