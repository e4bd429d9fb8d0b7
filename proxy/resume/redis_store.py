"""The replay store in Redis (Redis Streams via redis-py's asyncio client), shared by replicas.

Per stream key ``K``: the stream ``proxy:replay:K`` holds the events under the entry ids ``0-1``,
``0-2``, … (our numbers, so a resume is ``XRANGE (0-n +`` and a live tail is ``XREAD BLOCK … 0-n``);
the hash ``proxy:replay:K:meta`` holds ``last`` and ``finished``; ``…:producer`` and ``…:reader``
are leases (keys with a PX expiry). Every key expires ``ttl`` seconds after the last write, and the
stream is trimmed to about ``max_events``. One producer writes a stream, so numbering it with
``HINCRBY`` first and the entries after cannot race.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as redis

from .store import ReplayBatch

__all__ = ["RedisStore"]


class RedisStore:
    def __init__(self, url: str, max_events: int, ttl: float) -> None:
        self._redis: redis.Redis = redis.from_url(url)
        self._max_events = max_events
        self._ttl_ms = int(ttl * 1000)

    @staticmethod
    def _keys(key: str) -> tuple[str, str, str, str]:
        base = f"proxy:replay:{key}"
        return base, f"{base}:meta", f"{base}:producer", f"{base}:reader"

    async def create(self, key: str) -> None:
        _, meta, _, _ = self._keys(key)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(meta, mapping={"last": 0, "finished": 0})
            pipe.pexpire(meta, self._ttl_ms)
            await pipe.execute()

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

    async def hold_producer(self, key: str, seconds: float) -> None:
        await self._redis.set(self._keys(key)[2], 1, px=max(1, int(seconds * 1000)))

    async def release_producer(self, key: str) -> None:
        await self._redis.delete(self._keys(key)[2])

    async def touch_reader(self, key: str, seconds: float) -> None:
        await self._redis.set(self._keys(key)[3], 1, px=max(1, int(seconds * 1000)))

    async def has_reader(self, key: str) -> bool:
        return bool(await self._redis.exists(self._keys(key)[3]))

    async def close(self) -> None:
        await self._redis.aclose()


def _events(entries: Any) -> list[tuple[int, bytes]]:
    """XRANGE's ``[(b"0-7", {b"e": event}), ...]`` as ``[(7, event), ...]``."""
    events = []
    for entry_id, fields in entries or ():
        text = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        events.append((int(text.split("-", 1)[1]), bytes(fields[b"e"])))
    return events
