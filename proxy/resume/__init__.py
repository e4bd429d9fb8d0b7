"""Resumable streams: a bounded replay buffer per stream, in memory or in Redis (see relay)."""

from __future__ import annotations

from typing import Final

from aiohttp import web

from .relay import Producer, new_stream_key, parse_resume_id, read_stream
from .store import MemoryStore, ReplayBatch, ReplayStore

__all__ = [
    "REPLAY_STORES",
    "MemoryStore",
    "Producer",
    "ReplayBatch",
    "ReplayStore",
    "new_stream_key",
    "open_store",
    "parse_resume_id",
    "read_stream",
]

REPLAY_STORES: Final = web.AppKey("replay_stores", dict[str, ReplayStore])


def open_store(store: str, max_events: int, ttl: float) -> ReplayStore:
    if store == "memory":
        return MemoryStore(max_events, ttl)
    from .redis_store import RedisStore  # redis is imported only by routes that use it

    return RedisStore(store, max_events, ttl)
