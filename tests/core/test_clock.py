"""The wall clock's naps and timers: never wake before the deadline, never spin waiting for it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from xcron.server.core.clock import SystemClock

T = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


class StoppedClock(SystemClock):
    """The wall clock, stopped at a time the test moves."""

    def __init__(self) -> None:
        self.at = T

    def now(self) -> datetime:
        return self.at


def test_naps_are_whole_milliseconds_so_a_timer_that_fires_early_does_not_spin() -> None:
    """uvloop's timers count milliseconds and fire up to one early: naps of the exact remainder (2.5 ms, then
    0.4 ms, then 0.1 ms ...) woke 13 times per wait on average. Rounded up, one nap reaches the deadline."""
    clock = StoppedClock()
    assert clock.nap(T + timedelta(microseconds=2500)) == 0.003
    assert clock.nap(T + timedelta(microseconds=1)) == 0.001
    assert clock.nap(T + timedelta(hours=1)) == SystemClock.MAX_NAP  # the wall clock is read again after each
    assert clock.nap(T) == 0 and clock.nap(T - timedelta(seconds=1)) == 0


async def test_a_timer_calls_back_once_the_deadline_is_reached_and_not_once_cancelled() -> None:
    clock = StoppedClock()
    clock.at = T + timedelta(milliseconds=1)  # reached by the time the loop's timers fire
    wrong, fired = asyncio.Event(), asyncio.Event()
    cancelled = clock.wake_at(T + timedelta(milliseconds=1), wrong.set)  # made first: it would fire first
    clock.wake_at(T + timedelta(milliseconds=1), fired.set)
    cancelled.cancel()
    await asyncio.wait_for(fired.wait(), 10)
    assert not wrong.is_set()
