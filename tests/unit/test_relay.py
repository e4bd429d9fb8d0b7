"""The relay on its own: a scripted source, a recording sink, and the loop's decisions (the end,
heartbeats, the maximum duration, a stop's reason, a failure, the reader leaving). The sources
over real upstreams and the client's response are tested end to end elsewhere."""

from __future__ import annotations

import asyncio

import pytest

from proxy.errors import StreamError
from proxy.logs import StreamRecord
from proxy.relay import RelayLimits, relay
from proxy.respond import ClientGone
from proxy.streams import SHUTTING_DOWN, StopReason, StopSignal


class ScriptedSource:
    """Gives each step in turn: bytes (an output), a number (silence for that many seconds,
    returned as ``b""`` at ``until`` if that comes first), an exception (raised), or the end."""

    def __init__(self, *steps, last_is_end: bool = False) -> None:
        self.headers: dict[str, str] = {}
        self.steps = list(steps)
        self.last_is_end = last_is_end
        self.events = 0
        self.closed = False
        self.wake = asyncio.Event()
        self.silent_until: float | None = None
        self.usage = None

    @property
    def ended(self) -> bool:
        return self.last_is_end and not self.steps

    def opening(self) -> bytes:
        return b"retry: 1\n\n"

    async def read(self, until: float) -> bytes | None:
        loop = asyncio.get_running_loop()
        if not self.steps:
            return None
        step = self.steps[0]
        if isinstance(step, BaseException):
            self.steps.pop(0)
            raise step
        if isinstance(step, int | float):
            if self.silent_until is None:
                self.silent_until = loop.time() + step
            ends_at = self.silent_until
            try:
                async with asyncio.timeout_at(min(until, ends_at)):
                    await self.wake.wait()
            except TimeoutError:
                pass
            if self.closed:
                raise StreamError("closed", code="upstream_closed")
            if loop.time() >= ends_at:
                self.steps.pop(0)
                self.silent_until = None
            return b""
        self.steps.pop(0)
        self.events += 1
        return step

    def heartbeat(self) -> bytes:
        return b": ping\n\n"

    def failure(self, reason: StopReason) -> bytes:
        return f"event: error\ndata: {reason.code}\n\n".encode()

    def close(self) -> None:
        self.closed = True
        self.wake.set()


class RecordingSink:
    def __init__(self, gone_after: int | None = None) -> None:
        self.writes: list[tuple[str, bytes]] = []
        self.sent = 0
        self.gone_after = gone_after

    async def write(self, data: bytes) -> None:
        if not data:
            return
        if self.gone_after is not None and len(self.writes) >= self.gone_after:
            raise ClientGone
        self.writes.append(("write", data))
        self.sent += len(data)

    async def write_last(self, data: bytes) -> None:
        self.writes.append(("last", data))
        self.sent += len(data)


async def run(source, sink=None, stop=None, limits=None, record=None):
    limits = limits or RelayLimits()
    sink = sink or RecordingSink()
    stop = stop or StopSignal()
    stop.on_stop(source.close)
    ended = await relay(source, sink, stop, limits, record)
    return ended, sink.writes


async def test_each_output_is_written_and_the_last_goes_with_the_end():
    ended, writes = await run(ScriptedSource(b"a\n\n", b"b\n\n", b"end\n\n", last_is_end=True))
    assert ended == "eof"
    assert writes == [
        ("write", b"retry: 1\n\n"),
        ("write", b"a\n\n"),
        ("write", b"b\n\n"),
        ("last", b"end\n\n"),
    ]


async def test_a_source_that_ends_with_no_output_still_tells_the_sink_its_end():
    ended, writes = await run(ScriptedSource(b"a\n\n"))
    assert ended == "eof"
    assert writes[-1] == ("last", b"")


async def test_a_failure_ends_the_stream_with_its_error_event_after_what_came_before():
    ended, writes = await run(ScriptedSource(b"a\n\n", StreamError("gone", code="upstream_closed")))
    assert ended == "upstream_closed"
    assert writes[-2:] == [
        ("write", b"a\n\n"),
        ("last", b"event: error\ndata: upstream_closed\n\n"),
    ]


async def test_a_silent_source_gets_heartbeats_at_the_heartbeat_period():
    ended, writes = await run(ScriptedSource(0.35, b"a\n\n"), limits=RelayLimits(heartbeat=0.1))
    assert ended == "eof"
    pings = [data for kind, data in writes if data == b": ping\n\n"]
    assert 2 <= len(pings) <= 4
    assert writes[-2] == ("write", b"a\n\n")


async def test_no_heartbeat_while_output_flows():
    steps = [b"x\n\n", 0.02] * 10
    ended, writes = await run(ScriptedSource(*steps), limits=RelayLimits(heartbeat=0.1))
    assert ended == "eof"
    assert b": ping\n\n" not in [data for _, data in writes]


async def test_the_maximum_duration_stops_the_stream_with_its_reason():
    record = StreamRecord("GET", "/x")
    loop = asyncio.get_running_loop()
    started = loop.time()
    source = ScriptedSource(b"a\n\n", 5)
    ended, writes = await run(source, limits=RelayLimits(max_duration=0.2), record=record)
    assert loop.time() - started < 2
    assert ended == "max_duration"
    assert source.closed  # the stop woke (closed) the source
    assert writes[-1] == ("last", b"event: error\ndata: max_duration\n\n")
    assert (record.ended, record.events) == ("max_duration", 1)


async def test_a_stop_wins_over_the_error_its_closing_causes():
    stop = StopSignal()
    source = ScriptedSource(b"a\n\n", 5)
    asyncio.get_running_loop().call_later(0.1, stop.stop, SHUTTING_DOWN)
    ended, writes = await run(source, stop=stop)
    assert ended == "shutting_down"
    assert writes[-1] == ("last", b"event: error\ndata: shutting_down\n\n")


async def test_a_stream_stopped_before_it_starts_is_refused_with_the_reason():
    stop = StopSignal()
    stop.stop(SHUTTING_DOWN)
    with pytest.raises(Exception, match="shutting down") as caught:
        stop.on_stop(lambda: None)
    assert caught.value.status == 503
    assert caught.value.headers == {"Retry-After": "1"}


async def test_the_first_reason_given_is_the_one_kept():
    stop = StopSignal()
    stop.stop(StopReason("cancelled", "the client asked"))
    stop.stop(SHUTTING_DOWN)
    assert stop.reason == StopReason("cancelled", "the client asked")


async def test_a_reader_that_leaves_ends_the_relay_with_its_reason_and_fills_the_record():
    record = StreamRecord("GET", "/x")
    ended, writes = await run(
        ScriptedSource(b"a\n\n", b"b\n\n", b"c\n\n"), RecordingSink(gone_after=2), record=record
    )
    assert ended == "client_gone"
    assert len(writes) == 2
    assert record.ended == "client_gone"
    assert record.bytes == len(b"retry: 1\n\n") + len(b"a\n\n")
    assert record.first_event_ms is not None


async def test_the_first_output_is_noted_even_when_it_is_also_the_last():
    record = StreamRecord("GET", "/x")
    ended, _ = await run(ScriptedSource(b"a\n\nend\n\n", last_is_end=True), record=record)
    assert ended == "eof"
    assert record.first_event_ms is not None


async def test_the_record_keeps_the_gaps_between_writes_with_events_and_not_heartbeats():
    # Outputs 0.1 s and 0.3 s apart, with heartbeats in the silence between them.
    record = StreamRecord("GET", "/x")
    source = ScriptedSource(b"a\n\n", 0.1, b"b\n\n", 0.3, b"c\n\n")
    ended, _ = await run(source, limits=RelayLimits(heartbeat=0.05), record=record)
    assert ended == "eof"
    record.note_gaps()
    assert record.timeline.gaps == 2
    assert 0.38 < record.timeline.total < 0.6
    assert record.gap_p50_ms in (100.0, 250.0)  # 0.1 s: the bucket up to 0.1 s, or the next
    assert record.gap_p99_ms == record.gap_max_ms  # 0.3 s: its bucket goes to 0.5 s; no gap did
    assert 290 < record.gap_max_ms < 450
