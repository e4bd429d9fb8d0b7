"""The one relay: every stream, whatever feeds it, reaches its reader through :func:`relay`.

Strategy: what varies is the *source* of encoded output (an upstream read through a decoder,
NDJSON passed through, a replay store's events) and the *sink* it goes to (a client's response,
or the replay store a resumable stream's producer fills). The loop that joins them is written
once: the opening bytes, each output written as soon as the source gives it, a heartbeat comment
after ``heartbeat`` seconds without a write, the stream's maximum duration, the end, the in-band
error, the client leaving, and the stream record.

A source's ``read(until)`` returns the next output (``b""`` when nothing came by ``until``, which
is when the relay next needs to wake: a heartbeat or the maximum duration), or None at its end
(``ended`` also says when an output is its last, so a sink such as the replay store takes the
end with it); a :class:`~proxy.errors.StreamError` from it ends the stream with that error
event. The source owns how it waits, so a store read is never cancelled half-way, and the relay
sets no timer of its own. Writes are awaited: ``StreamResponse.write`` drains only past aiohttp's
high-water mark, so a client that stops reading stops the reads from the source (backpressure).

Stopping is a reason (:class:`~proxy.streams.StopReason`) given to the stream's
:class:`~proxy.streams.StopSignal`; it wakes the source (closes the upstream), and the relay,
finding the reason after a read, ends the stream with it as the error event.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from .errors import StreamError
from .respond import ClientGone
from .streams import StopReason, StopSignal

if TYPE_CHECKING:
    from .logs import StreamRecord
    from .usage import UsageTally

__all__ = ["RelayLimits", "Sink", "Source", "relay"]


class Source(Protocol):
    @property
    def headers(self) -> dict[str, str]:
        """The response headers for a client reading this source."""
        ...

    @property
    def events(self) -> int:
        """How many events it has given so far (for the access log)."""
        ...

    @property
    def ended(self) -> bool:
        """Nothing follows the output just read: no more output, no failure."""
        ...

    @property
    def usage(self) -> UsageTally | None:
        """Token counts read from the upstream, where this source reads it and the route asks."""
        ...

    def opening(self) -> bytes: ...

    async def read(self, until: float) -> bytes | None: ...

    def heartbeat(self) -> bytes: ...

    def failure(self, reason: StopReason) -> bytes:
        """The in-band error that ends the stream for ``reason``."""
        ...

    def close(self) -> None:
        """Stop reading: wake a pending read (the stream was told to stop)."""
        ...


class Sink(Protocol):
    sent: int

    async def write(self, data: bytes) -> None: ...

    async def write_last(self, data: bytes) -> None: ...


@dataclass(frozen=True, slots=True)
class RelayLimits:
    heartbeat: float = 0
    """Seconds without a write before a heartbeat comment; 0: none."""
    max_duration: float | None = None
    """Seconds the stream may last; then it ends with a ``max_duration`` error event."""


async def relay(
    source: Source,
    sink: Sink,
    stop: StopSignal,
    limits: RelayLimits,
    record: StreamRecord | None = None,
) -> str:
    """``source`` to ``sink`` until its end, an error, a stop or the reader leaving; how it ended
    (``eof``, an error code, ``client_gone``, ``write_timeout``), also filled into ``record``."""
    ended = "client_gone"  # unless we get further: a cancelled task means the client left
    try:
        await sink.write(source.opening())
        reason = await _pump(source, sink, stop, limits, record)
        if reason is None:
            ended = "eof"
        else:
            ended = reason.code
            await sink.write_last(source.failure(reason))
    except ClientGone as gone:
        ended = gone.reason
    finally:
        if record is not None:
            record.events = source.events
            record.bytes = sink.sent
            record.ended = ended
            if (usage := source.usage) is not None:
                record.prompt_tokens = usage.prompt_tokens
                record.completion_tokens = usage.completion_tokens
    return ended


async def _pump(
    source: Source,
    sink: Sink,
    stop: StopSignal,
    limits: RelayLimits,
    record: StreamRecord | None,
) -> StopReason | None:
    """Source output to the sink; None at the source's end, else the reason the stream ends."""
    loop = asyncio.get_running_loop()
    heartbeat = limits.heartbeat
    last_write = loop.time()
    end_at = last_write + limits.max_duration if limits.max_duration else math.inf
    noted_first = record is None
    timeline = None if record is None else record.timeline
    while True:
        # Without heartbeats, still a wake-up a second (an upstream source checks then that its
        # connection is still there; aiohttp does not always wake a pending read).
        wake = last_write + heartbeat if heartbeat else loop.time() + 1.0
        try:
            output = await source.read(min(wake, end_at))
        except StreamError as failure:
            return stop.reason or StopReason(failure.code, str(failure))
        if output and not noted_first and record is not None:
            record.first_event_now()
            noted_first = True
        if output is None or (output and source.ended):
            if stop.reason is None:  # the end: the sink learns it with the last bytes
                await sink.write_last(output or b"")
            return stop.reason
        if output:
            await sink.write(output)
            last_write = now = loop.time()
            if timeline is not None:
                timeline.mark(now)
        else:
            # A timer may fire a clock tick early; a millisecond of slack avoids a needless wake.
            now = loop.time() + 0.001
            if heartbeat and now - last_write >= heartbeat:
                await sink.write(source.heartbeat())
                last_write = loop.time()
        if now >= end_at:
            stop.stop(_out_of_time(limits.max_duration))
        if stop.reason is not None:
            return stop.reason


def _out_of_time(max_duration: float | None) -> StopReason:
    return StopReason("max_duration", f"the stream reached its maximum of {max_duration} s")
