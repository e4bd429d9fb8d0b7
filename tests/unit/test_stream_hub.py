"""The stream hub without a server: a tail reads the store once for all of its readers, serves a
late or slow reader from the store, forgets itself when nobody reads, and carries the store's
failures to every reader; cancels reach the producer; share claims and ownership hold."""

from __future__ import annotations

import asyncio

import pytest

from proxy.errors import StreamError
from proxy.respond import ClientGone
from proxy.resume.hub import CANCELLED, Parked, StreamHub, Subscription, Tail
from proxy.resume.reader import is_stream_key, new_stream_key, parse_resume_id
from proxy.resume.store import MemoryStore, ReplayBatch, StreamState
from proxy.streams import StopSignal


class CountingStore(MemoryStore):
    """A memory store that counts the reads made of it."""

    def __init__(self, max_events: int = 100, ttl: float = 60) -> None:
        super().__init__(max_events, ttl)
        self.reads = 0

    async def read(self, key: str, after: int, wait: float) -> ReplayBatch | None:
        self.reads += 1
        return await super().read(key, after, wait)


def later(seconds: float = 2.0) -> float:
    return asyncio.get_running_loop().time() + seconds


async def numbers(tail, after: int) -> list[int]:
    batch = await tail.read(after, later())
    assert batch is not None
    return [n for n, _ in batch.events]


async def test_a_tail_reads_the_store_once_for_many_readers():
    store = CountingStore()
    await store.create("k", "/chat")
    hub = StreamHub(store, 100, 5)
    tails = [hub.tail("k") for _ in range(50)]
    assert all(tail is tails[0] for tail in tails)
    readers = [asyncio.create_task(numbers(tail, 0)) for tail in tails]
    await asyncio.sleep(0.05)
    await store.append("k", [b"data: a", b"data: b"])
    assert [await r for r in readers] == [[1, 2]] * 50
    assert store.reads <= 3  # the tail's rounds, not one per reader


async def test_each_reader_gets_what_follows_its_own_position():
    store = MemoryStore(100, 60)
    await store.create("k", "/chat")
    await store.append("k", [b"data: %d" % n for n in range(1, 8)])
    tail = StreamHub(store, 100, 5).tail("k")
    assert await numbers(tail, 0) == [1, 2, 3, 4, 5, 6, 7]
    assert await numbers(tail, 5) == [6, 7]


async def test_a_reader_behind_the_window_reads_that_part_from_the_store():
    store = CountingStore(max_events=100)
    await store.create("k", "/chat")
    hub = StreamHub(store, 3, 5)  # a window of three events
    tail = hub.tail("k")
    await store.append("k", [b"data: %d" % n for n in range(1, 11)])
    assert await numbers(tail, 9) == [10]
    reads = store.reads
    assert await numbers(tail, 2) == [3, 4, 5, 6, 7, 8, 9, 10]
    assert store.reads == reads + 1


async def test_a_finished_stream_reads_to_its_end_and_the_tail_is_forgotten_after_its_readers():
    store = MemoryStore(100, 60)
    await store.create("k", "/chat")
    await store.append("k", [b"data: 1", b"event: end\ndata:"], finished=True)
    hub = StreamHub(store, 100, 5)
    tail = hub.tail("k")
    batch = await tail.read(0, later())
    assert batch is not None
    assert batch.finished
    assert batch.last == 2
    tail.detach()
    await asyncio.sleep(0.05)
    assert hub.tail("k") is not tail


async def test_an_expired_stream_reads_as_none():
    store = MemoryStore(100, 60)
    tail = StreamHub(store, 100, 5).tail("gone")
    assert await tail.read(0, later()) is None


async def test_a_store_failure_reaches_every_reader_as_a_stream_error():
    class BrokenStore(MemoryStore):
        async def read(self, key: str, after: int, wait: float) -> ReplayBatch | None:
            raise ConnectionError("redis went away")

    tail = StreamHub(BrokenStore(10, 60), 10, 5).tail("k")
    with pytest.raises(StreamError, match="redis went away") as raised:
        await tail.read(0, later())
    assert raised.value.code == "store_error"


async def test_a_wait_ends_by_its_deadline_when_nothing_comes():
    store = MemoryStore(100, 60)
    await store.create("k", "/chat")
    tail = StreamHub(store, 100, 5).tail("k")
    loop = asyncio.get_running_loop()
    started = loop.time()
    batch = await tail.read(0, started + 0.1)
    assert batch is not None
    assert batch.events == []
    assert 0.05 < loop.time() - started < 0.6


class LookupStore(MemoryStore):
    """A store that counts its state lookups and answers them after a pause (as over a network)."""

    lookups = 0

    async def state(self, key: str) -> StreamState | None:
        self.lookups += 1
        await asyncio.sleep(0.01)
        return await super().state(key)


async def test_readers_that_ask_for_a_stream_at_once_share_one_store_lookup():
    store = LookupStore(100, 60)
    await store.create("k", "/chat")
    hub = StreamHub(store, 100, 5, route="/chat")
    states = await asyncio.gather(*(hub.state("k") for _ in range(50)))
    assert states == [StreamState("/chat", 0, False)] * 50
    assert store.lookups == 1
    assert await hub.state("unknown") is None
    assert store.lookups == 2
    await hub.state("k")  # the earlier lookup is over: a new one
    assert store.lookups == 3


async def test_a_reader_that_goes_away_does_not_cancel_the_others_lookup():
    store = LookupStore(100, 60)
    await store.create("k", "/chat")
    hub = StreamHub(store, 100, 5, route="/chat")
    leaving = asyncio.create_task(hub.state("k"))
    staying = asyncio.create_task(hub.state("k"))
    await asyncio.sleep(0)
    leaving.cancel()
    assert await staying == StreamState("/chat", 0, False)
    assert store.lookups == 1


async def test_a_stream_followed_here_is_known_from_its_tail_without_the_store():
    store = LookupStore(100, 60)
    await store.create("k", "/chat")
    await store.append("k", [b"data: 1", b"data: 2"])
    hub = StreamHub(store, 100, 5, route="/chat")
    tail = hub.tail("k")
    batch = await tail.read(0, later())  # the tail's first round
    assert batch is not None
    assert len(batch.events) == 2
    assert await hub.state("k") == StreamState("/chat", 2, False)
    assert store.lookups == 0
    tail.detach()


async def test_a_cancel_stops_the_local_producer_and_marks_the_store():
    store = MemoryStore(100, 60)
    await store.create("k", "/chat")
    hub = StreamHub(store, 100, 5)
    hub.listen_for_cancels()
    stop = StopSignal()
    hub.add_producer("k", stop)
    assert await hub.cancel("k")
    assert stop.reason == CANCELLED
    assert await store.hold_producer("k", 5) is False
    assert not await hub.cancel("unknown")


async def test_a_claim_names_the_first_stream_until_released_or_expired():
    store = MemoryStore(100, 60)
    assert await store.claim("fp", "first", 5) == "first"
    assert await store.claim("fp", "second", 5) == "first"
    await store.release_claim("fp", "second")  # not its claim: kept
    assert await store.claim("fp", "third", 5) == "first"
    await store.release_claim("fp", "first")
    assert await store.claim("fp", "fourth", 0.05) == "fourth"
    await asyncio.sleep(0.1)
    assert await store.claim("fp", "fifth", 5) == "fifth"


async def test_a_stream_knows_its_owner_and_how_far_it_got():
    store = MemoryStore(100, 60)
    await store.create("k", "/chat")
    assert await store.state("k") == StreamState("/chat", 0, False)
    await store.append("k", [b"data: 1", b"data: 2"], finished=True)
    assert await store.state("k") == StreamState("/chat", 2, True)
    assert await store.state("other") is None


def test_stream_keys_are_128_bit_url_safe_and_resume_ids_name_them():
    key = new_stream_key()
    assert len(key) == 22
    assert is_stream_key(key)
    assert parse_resume_id(f"{key}-7") == (key, 7)
    assert parse_resume_id("AAAAAAAAAAAAAAAA-3") == ("AAAAAAAAAAAAAAAA", 3)  # 96-bit keys of old
    assert not is_stream_key("short")
    assert not is_stream_key("a/b" * 8)


# -- parked readers: the tail writes to them ------------------------------------------------------


class Sink:
    """A client's response as the tail sees it: what it was sent, whether it would block."""

    def __init__(self, blocks: bool = False, gone: bool = False) -> None:
        self.sent: list[bytes] = []
        self.blocks = blocks
        self.gone = gone

    def push(self, data: bytes, chunk: bytes) -> bool:
        assert chunk == b"%x\r\n%s\r\n" % (len(data), data)
        if self.gone:
            raise ClientGone
        if self.blocks:
            return False
        self.sent.append(data)
        return True


async def parked(tail, sink, position=0, until=5.0):
    subscription = Subscription(sink, None)
    subscription.position = position
    task = asyncio.create_task(tail.park(subscription, later(until)))
    await asyncio.sleep(0)
    return subscription, task


async def test_parked_readers_get_each_new_event_written_once_encoded_with_its_id():
    store = MemoryStore(100, 60)
    await store.create("k", "/chat")
    tail = StreamHub(store, 100, 5).tail("k")
    await asyncio.sleep(0.01)  # the tail's first round: nothing yet
    sinks = [Sink() for _ in range(3)]
    subscriptions = [await parked(tail, sink) for sink in sinks]
    await store.append("k", [b"data: a"])
    await asyncio.sleep(0.01)
    await store.append("k", [b"data: b", b"event: end\ndata:"], finished=True)
    outcomes = [await task for _, task in subscriptions]
    assert outcomes == [Parked.FINISHED] * 3
    for sink, (subscription, _) in zip(sinks, subscriptions, strict=True):
        assert sink.sent == [
            b"id: k-1\ndata: a\n\n",
            b"id: k-2\ndata: b\n\nid: k-3\nevent: end\ndata:\n\n",
        ]
        assert (subscription.position, subscription.events) == (3, 3)


async def test_a_reader_whose_client_would_block_goes_back_to_its_relay_and_the_others_go_on():
    store = MemoryStore(100, 60)
    await store.create("k", "/chat")
    tail = StreamHub(store, 100, 5).tail("k")
    await asyncio.sleep(0.01)
    slow, fast = Sink(blocks=True), Sink()
    (slow_sub, slow_task), (fast_sub, fast_task) = (
        await parked(tail, slow),
        await parked(tail, fast),
    )
    await store.append("k", [b"data: a"])
    assert await slow_task is Parked.BEHIND
    assert slow.sent == []
    assert slow_sub.position == 0
    await asyncio.sleep(0.01)
    assert fast.sent == [b"id: k-1\ndata: a\n\n"]
    fast_sub.release(Parked.WOKEN)
    assert await fast_task is Parked.WOKEN


async def test_a_parked_reader_whose_client_left_is_released_as_gone():
    store = MemoryStore(100, 60)
    await store.create("k", "/chat")
    tail = StreamHub(store, 100, 5).tail("k")
    await asyncio.sleep(0.01)
    _, task = await parked(tail, Sink(gone=True))
    await store.append("k", [b"data: a"])
    assert await task is Parked.GONE


async def test_a_parked_reader_is_due_back_at_its_deadline():
    store = MemoryStore(100, 60)
    await store.create("k", "/chat")
    tail = StreamHub(store, 100, 5).tail("k")
    _, task = await parked(tail, Sink(), until=0.05)
    assert await task is Parked.DUE


async def test_a_reader_that_resumes_mid_stream_before_the_tails_first_read_gets_what_it_lacks():
    store = MemoryStore(100, 60)
    await store.create("k", "/chat")
    await store.append("k", [b"data: 1", b"data: 2", b"data: 3"])
    tail = Tail(store, "k", 100, 5, lambda tail: None)
    # A reconnect at 2 parks before the tail has read anything; its first batch (1-3) holds
    # one event the reader lacks.
    sink = Sink()
    subscription, task = await parked(tail, sink, position=2)
    tail.attach()
    await asyncio.sleep(0.02)
    assert sink.sent == [b"id: k-3\ndata: 3\n\n"]
    assert subscription.position == 3
    subscription.release(Parked.WOKEN)
    await task
    tail.detach()
