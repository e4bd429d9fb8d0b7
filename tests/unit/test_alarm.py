"""The upstream reader's alarm: one timer for many waits, and it never swallows a real cancel
(aiohttp-sse once shipped exactly that bug: a client's disconnect taken for a timeout)."""

from __future__ import annotations

import asyncio

import pytest

from proxy.sources import _Alarm, _Rang


async def test_a_wait_past_its_deadline_is_interrupted():
    loop = asyncio.get_running_loop()
    alarm = _Alarm(loop)
    started = loop.time()
    with pytest.raises(_Rang):
        await alarm.interrupting(asyncio.sleep(5, b""), started + 0.05)
    assert 0.04 <= loop.time() - started < 1


async def test_a_wait_that_ends_in_time_returns_its_result_and_the_alarm_waits_for_the_next():
    loop = asyncio.get_running_loop()
    alarm = _Alarm(loop)
    assert await alarm.interrupting(asyncio.sleep(0, b"x"), loop.time() + 0.1) == b"x"
    # The alarm stays armed for that deadline: a later wait with a later deadline is woken then.
    started = loop.time()
    with pytest.raises(_Rang):
        await alarm.interrupting(asyncio.sleep(5, b""), started + 10)
    assert loop.time() - started < 1


async def test_an_earlier_deadline_moves_the_alarm():
    loop = asyncio.get_running_loop()
    alarm = _Alarm(loop)
    await alarm.interrupting(asyncio.sleep(0, b""), loop.time() + 10)
    started = loop.time()
    with pytest.raises(_Rang):
        await alarm.interrupting(asyncio.sleep(5, b""), started + 0.05)
    assert loop.time() - started < 1


async def test_a_cancel_from_outside_is_never_taken_for_the_alarm():
    loop = asyncio.get_running_loop()
    alarm = _Alarm(loop)
    deadline = loop.time() + 0.05
    task = asyncio.create_task(alarm.interrupting(asyncio.sleep(5, b""), deadline))
    # The client leaves at the very moment the alarm rings: the task must still end cancelled.
    loop.call_at(deadline, task.cancel)
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()


async def test_a_disarmed_alarm_does_not_ring():
    loop = asyncio.get_running_loop()
    alarm = _Alarm(loop)
    await alarm.interrupting(asyncio.sleep(0, b""), loop.time() + 0.05)
    alarm.disarm()
    assert await alarm.interrupting(asyncio.sleep(0.15, b"late"), loop.time() + 10) == b"late"
