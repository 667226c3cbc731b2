"""Time as the core sees it: injectable, so tests advance time instead of sleeping."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware (UTC)."""
        ...

    async def sleep_until(self, deadline: datetime) -> None:
        """Returns once now() >= deadline (may be cancelled)."""
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

    async def sleep_until(self, deadline: datetime) -> None:
        while True:
            remaining = (deadline - self.now()).total_seconds()
            if remaining <= 0:
                return
            await asyncio.sleep(min(remaining, self.MAX_NAP))


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
