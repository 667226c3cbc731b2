"""The SQLite store thread's gather delay (GATHER_DELAY): a transaction that would start back to back with the
previous one first waits, so that the calls of the loop's turns meanwhile join it; a call to a store idle for
that long does not wait. The store thread's clock and sleep are replaced, so nothing depends on timing."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from xcron.server.core.model import JobState
from xcron.server.core.ports import JobRecord
from xcron.server.stores.sqlite import GATHER_DELAY, SqliteStateStore


class _Clock:
    """The store thread's monotonic clock, standing still unless a test moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _Waits:
    """The store thread's sleep: records each wait and holds it until released."""

    def __init__(self, *, hold: bool = False) -> None:
        self.delays: list[float] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        if not hold:
            self.release.set()

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.entered.set()
        self.release.wait(10)


def _job(name: str) -> JobRecord:
    return JobRecord(job_id=name, state=JobState.COMPLETED, execution_id=f"x-{name}")


@pytest.fixture
def opened(tmp_path: Path) -> Callable[..., AsyncIterator[SqliteStateStore]]:
    async def make(**options: object) -> AsyncIterator[SqliteStateStore]:
        store = SqliteStateStore(tmp_path / "state.sqlite3", **options)  # type: ignore[arg-type]
        await store.open()
        try:
            yield store
        finally:
            await store.close()

    return make


async def test_only_a_transaction_back_to_back_with_the_last_waits(
    opened: Callable[..., AsyncIterator[SqliteStateStore]],
) -> None:
    clock, waits = _Clock(), _Waits()
    async for store in opened(clock=clock, sleep=waits):
        await store.save_job(_job("a"))  # the first transaction: none before it
        assert waits.delays == []
        await store.save_job(_job("b"))  # would start the instant the last one ended
        assert waits.delays == [GATHER_DELAY]
        clock.now += 1.5 * GATHER_DELAY  # idle longer than that since
        await store.save_job(_job("c"))
        assert waits.delays == [GATHER_DELAY]
        assert sorted(await store.load_jobs()) == ["a", "b", "c"]


async def test_calls_made_during_the_wait_share_its_transaction(
    opened: Callable[..., AsyncIterator[SqliteStateStore]],
) -> None:
    waits = _Waits(hold=True)
    async for store in opened(clock=_Clock(), sleep=waits):
        statements: list[str] = []
        assert store._conn is not None
        store._conn.set_trace_callback(statements.append)  # called on the store thread
        waits.release.set()
        await store.save_job(_job("a"))
        waits.release.clear()
        first = store.save_job(_job("b"))
        await asyncio.sleep(0)  # posted at the end of this turn; the thread waits before its transaction
        try:
            assert await asyncio.to_thread(waits.entered.wait, 10)
            second = store.save_job(_job("c"))  # a later turn's call, made during the wait
            await asyncio.sleep(0)
            assert store._in_flight == 2
            statements.clear()
        finally:
            waits.release.set()
        await asyncio.gather(first, second)
        assert [s for s in statements if s in ("BEGIN", "COMMIT")] == ["BEGIN", "COMMIT"]
        assert sorted(await store.load_jobs()) == ["a", "b", "c"]


async def test_no_delay_never_waits(opened: Callable[..., AsyncIterator[SqliteStateStore]]) -> None:
    waits = _Waits()
    async for store in opened(clock=_Clock(), sleep=waits, gather_delay=0.0):
        for name in "abc":
            await store.save_job(_job(name))
        assert waits.delays == []
