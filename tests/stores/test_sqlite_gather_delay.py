"""The SQLite store thread's gather delay (GATHER_DELAY): while calls from several turns of the loop keep coming
(the last transaction merged several turns' calls and ended less than GATHER_DELAY ago), a transaction first
waits, so that the turns meanwhile join it. A lone caller never waits, nor a call to a store idle that long,
nor the transaction after one that reached the merge cap. The store thread's clock and sleep are replaced
(the clock stands still unless a test moves it), so nothing depends on timing."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from store_thread import store_thread_held

from xcron.server.core.model import JobState
from xcron.server.core.ports import JobRecord
from xcron.server.stores import sqlite as sqlite_store
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


async def _merged(store: SqliteStateStore, names: str) -> None:
    """One transaction of several turns' calls: the thread held busy while each name's write is made in a turn of
    its own, then let go."""
    writes = []
    async with store_thread_held(store) as held:
        for name in names:
            writes.append(store.save_job(_job(name)))
            await asyncio.sleep(0)
        assert store._in_flight == 1 + len(names)
    await asyncio.gather(held, *writes)


async def test_a_lone_caller_never_waits(opened: Callable[..., AsyncIterator[SqliteStateStore]]) -> None:
    """One call after another, each awaited: every transaction is back to back with the last, but carries one
    turn's calls, so there is nobody to wait for."""
    waits = _Waits()
    async for store in opened(clock=_Clock(), sleep=waits):
        for name in "abcdef":
            await store.save_job(_job(name))
            await store.get_execution("none")
        assert waits.delays == []
        assert sorted(await store.load_jobs()) == list("abcdef")


async def test_after_several_turns_merged_the_next_transaction_waits_unless_the_store_was_idle(
    opened: Callable[..., AsyncIterator[SqliteStateStore]],
) -> None:
    clock, waits = _Clock(), _Waits()
    async for store in opened(clock=clock, sleep=waits):
        await _merged(store, "ab")
        assert waits.delays == []  # the hold's transaction was alone: no wait before the merged one
        await store.save_job(_job("c"))  # the instant the merged one ended
        assert waits.delays == [GATHER_DELAY]
        await store.save_job(_job("d"))  # after c's transaction, one turn's: no more waiting
        assert waits.delays == [GATHER_DELAY]
        await _merged(store, "ef")
        clock.now += 1.5 * GATHER_DELAY  # idle longer than that since
        await store.save_job(_job("g"))
        assert waits.delays == [GATHER_DELAY]
        assert sorted(await store.load_jobs()) == list("abcdefg")


async def test_calls_made_during_the_wait_share_its_transaction(
    opened: Callable[..., AsyncIterator[SqliteStateStore]],
) -> None:
    waits = _Waits()
    async for store in opened(clock=_Clock(), sleep=waits):
        statements: list[str] = []
        assert store._conn is not None
        store._conn.set_trace_callback(statements.append)  # called on the store thread
        await _merged(store, "ab")
        waits.release.clear()
        first = store.save_job(_job("c"))
        await asyncio.sleep(0)  # posted at the end of this turn; the thread waits before its transaction
        try:
            assert await asyncio.to_thread(waits.entered.wait, 10)
            second = store.save_job(_job("d"))  # a later turn's call, made during the wait
            await asyncio.sleep(0)
            assert store._in_flight == 2
            statements.clear()
        finally:
            waits.release.set()
        await asyncio.gather(first, second)
        assert [s for s in statements if s in ("BEGIN", "COMMIT")] == ["BEGIN", "COMMIT"]
        assert sorted(await store.load_jobs()) == list("abcd")


async def test_after_a_transaction_that_reached_the_merge_cap_the_next_does_not_wait(
    opened: Callable[..., AsyncIterator[SqliteStateStore]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Calls were left waiting: the next transaction has company without a wait."""
    monkeypatch.setattr(sqlite_store, "MAX_MERGED_CALLS", 2)
    waits = _Waits()
    async for store in opened(clock=_Clock(), sleep=waits):
        await _merged(store, "abc")  # a and b reach the cap; c's transaction follows at once
        await store.save_job(_job("d"))
        assert waits.delays == []
        assert sorted(await store.load_jobs()) == list("abcd")


async def test_no_delay_never_waits(opened: Callable[..., AsyncIterator[SqliteStateStore]]) -> None:
    waits = _Waits()
    async for store in opened(clock=_Clock(), sleep=waits, gather_delay=0.0):
        await _merged(store, "ab")
        for name in "cde":
            await store.save_job(_job(name))
        assert waits.delays == []
