"""Resumable streams: a bounded replay buffer per stream, in memory or in Redis.

A route with ``resume`` decouples the upstream from the client. The first request opens the
upstream (so its failures are still plain HTTP errors) and hands it to a producer
(:mod:`.producer`) that outlives the request and relays the upstream's events into the store;
each client request is a reader of the store (:mod:`.reader`). A reconnect with an id this
gateway gave reads on from the store (in Redis: on any replica) without a second upstream
request; one whose id is the last of a finished stream gets ``204 No Content``, which tells an
``EventSource`` to stop reconnecting. :mod:`.serve` is the handler's way in.
"""

from __future__ import annotations

from .store import MemoryStore, ReplayBatch, ReplayStore

__all__ = ["MemoryStore", "ReplayBatch", "ReplayStore", "open_store"]


def open_store(store: str, max_events: int, ttl: float) -> ReplayStore:
    if store == "memory":
        return MemoryStore(max_events, ttl)
    from .redis_store import RedisStore  # redis is imported only by routes that use it

    return RedisStore(store, max_events, ttl)
