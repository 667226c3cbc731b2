"""Time as the core sees it: injectable, so tests advance time instead of sleeping."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Timer(Protocol):
    def cancel(self) -> object: ...


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware (UTC)."""
        ...

    async def sleep_until(self, deadline: datetime) -> None:
        """Returns once now() >= deadline (may be cancelled)."""
        ...

    def wake_at(self, deadline: datetime, callback: Callable[[], None]) -> Timer:
        """Calls `callback` on the running loop once now() >= deadline, unless cancelled first: a timer
        handle, where sleep_until needs a task to wait in."""
        ...


class SystemClock:
    """The wall clock.

    asyncio sleeps on the monotonic clock, which stops while the machine is suspended and ignores
    wall-clock steps; so a long sleep is cut into pieces of at most MAX_NAP and the wall clock is
    read again after each, and a run due during a suspend starts within MAX_NAP of waking.
    """

    MAX_NAP = 30.0

    def now(self) -> datetime:
        return datetime.now(UTC)

    def nap(self, deadline: datetime) -> float:
        """Seconds to sleep before reading the clock again; 0 once the deadline is reached.

        Rounded up to a whole millisecond: uvloop's timers count milliseconds and may fire up to one
        early (its clock is read once per turn of the loop), so a nap of the exact remainder wakes
        before the deadline and naps again for a fraction of a millisecond, over and over: 13 wake-ups
        per wait on average, up to 95, when measured. Rounded up, it is one (the run starts 0.5 ms later
        on average)."""
        remaining = (deadline - self.now()).total_seconds()
        return 0.0 if remaining <= 0 else min(math.ceil(remaining * 1000) / 1000, self.MAX_NAP)

    async def sleep_until(self, deadline: datetime) -> None:
        while True:
            nap = self.nap(deadline)
            if nap <= 0:
                return
            await asyncio.sleep(nap)

    def wake_at(self, deadline: datetime, callback: Callable[[], None]) -> Timer:
        return _WallTimer(self, deadline, callback)


class _WallTimer:
    """Naps of at most MAX_NAP on the loop's timer, reading the wall clock after each (as sleep_until)."""

    def __init__(self, clock: SystemClock, deadline: datetime, callback: Callable[[], None]) -> None:
        self._clock, self._deadline, self._callback = clock, deadline, callback
        self._loop = asyncio.get_running_loop()
        self._handle: asyncio.Handle = self._loop.call_later(clock.nap(deadline), self._check)

    def _check(self) -> None:
        nap = self._clock.nap(self._deadline)
        if nap > 0:
            self._handle = self._loop.call_later(nap, self._check)
        else:
            self._callback()

    def cancel(self) -> None:
        self._handle.cancel()


class FakeClock:
    """A clock that only moves when a test calls advance() or set()."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._sleepers: list[tuple[datetime, int, asyncio.Future[None]]] = []
        self._counter = itertools.count()

    def now(self) -> datetime:
        return self._now

    async def sleep_until(self, deadline: datetime) -> None:
        if deadline <= self._now:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (deadline, next(self._counter), future))
        await future

    def wake_at(self, deadline: datetime, callback: Callable[[], None]) -> Timer:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.add_done_callback(lambda f: None if f.cancelled() else callback())
        if deadline <= self._now:
            future.set_result(None)
        else:
            heapq.heappush(self._sleepers, (deadline, next(self._counter), future))
        return future

    @property
    def sleeper_count(self) -> int:
        return sum(1 for _, _, f in self._sleepers if not f.done())

    def set(self, when: datetime) -> None:
        if when < self._now:
            raise ValueError("a FakeClock does not go backwards")
        self._now = when
        while self._sleepers and self._sleepers[0][0] <= when:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)

    def advance(self, delta: timedelta | float) -> None:
        self.set(self._now + (delta if isinstance(delta, timedelta) else timedelta(seconds=delta)))
