"""The SQLite store's commit window: writes nobody awaits (made inside `deferred_writes()`) may be held so that
several share a commit, but never at the expense of a call someone waits for. The window here is an hour:
whatever completes did so because something committed it, not because the window ended."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from xcron.server.core.errors import StoreUnavailable
from xcron.server.core.model import ExecutionState, JobState, Trigger
from xcron.server.core.ports import ExecutionRecord, JobRecord, ScheduleRecord, queued
from xcron.server.stores.sqlite import SqliteStateStore

HOUR = 3600.0


def _record(execution_id: str, state: ExecutionState = ExecutionState.COMPLETED) -> ExecutionRecord:
    return ExecutionRecord(
        id=execution_id,
        job_id="j",
        parameters={},
        trigger=Trigger.SCHEDULE,
        state=state,
        start_time=datetime(2026, 1, 1, tzinfo=UTC),
    )


def _on_disk(path: Path, sql: str) -> list[tuple[object, ...]]:
    """What another connection sees: committed rows only."""
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()


async def _turns(count: int = 5) -> None:
    """A few turns of the loop: enough for a batch that was due to be committed."""
    for _ in range(count):
        await asyncio.sleep(0)


@pytest.fixture
async def store(tmp_path: Path) -> SqliteStateStore:
    opened = SqliteStateStore(tmp_path / "state.sqlite3", commit_window=HOUR)
    await opened.open()
    return opened


async def test_held_writes_wait_and_a_later_read_sees_them(store: SqliteStateStore) -> None:
    try:
        with store.deferred_writes():
            start = queued(store.save_execution(_record("a", ExecutionState.RUNNING)))
            held = queued(store.save_execution(_record("a")))
            row = queued(store.save_job(JobRecord(job_id="j", state=JobState.COMPLETED, execution_id="a")))
        await _turns()
        assert not held.done() and not row.done()  # held for the window: nothing asked for them yet
        assert _on_disk(store.path, "SELECT id FROM executions") == []
        stored = await store.get_execution("a")  # the read goes at once, and takes them along first
        assert stored is not None and stored.state is ExecutionState.COMPLETED  # in order: the end won
        assert start.done() and held.done() and row.done()
        assert (await store.load_jobs())["j"].execution_id == "a"
        assert _on_disk(store.path, "SELECT id FROM executions") == [("a",)]
    finally:
        await store.close()


async def test_an_awaited_write_does_not_wait_for_the_window_and_commits_the_held_ones(
    store: SqliteStateStore,
) -> None:
    try:
        with store.deferred_writes():
            held = queued(store.save_schedule_records([ScheduleRecord(job_id="j", schedule_key="k")]))
        # RunJob's start: awaited before it answers. It completes now, in the same commit as the held write.
        await asyncio.wait_for(store.save_execution(_record("run", ExecutionState.RUNNING)), 10)
        assert held.done() and held.exception() is None
        assert _on_disk(store.path, "SELECT schedule_key FROM schedules") == [("k",)]
        assert _on_disk(store.path, "SELECT id, state FROM executions") == [("run", "running")]
    finally:
        await store.close()


async def test_a_write_made_while_a_batch_is_in_flight_is_held_unless_it_is_awaited(
    store: SqliteStateStore,
) -> None:
    try:
        first = queued(store.save_job(JobRecord(job_id="a")))
        await asyncio.sleep(0)  # its batch went to the store thread at the end of the turn it was made in
        with store.deferred_writes():
            held = queued(store.save_job(JobRecord(job_id="b")))
        await first
        await _turns()
        assert not held.done()  # the batch that settled did not send it: it waits for company
        await asyncio.wait_for(store.save_job(JobRecord(job_id="c")), 10)
        assert held.done()
        assert sorted(await store.load_jobs()) == ["a", "b", "c"]
    finally:
        await store.close()


async def test_close_commits_what_is_held(store: SqliteStateStore, tmp_path: Path) -> None:
    with store.deferred_writes():
        held = [queued(store.save_execution(_record(f"e{i}"))) for i in range(3)]
        held.append(queued(store.save_job(JobRecord(job_id="j", state=JobState.COMPLETED, execution_id="e2"))))
    await asyncio.wait_for(store.close(), 10)
    assert all(f.done() and f.exception() is None for f in held)
    assert _on_disk(tmp_path / "state.sqlite3", "SELECT id FROM executions ORDER BY id") == [
        ("e0",),
        ("e1",),
        ("e2",),
    ]
    reopened = SqliteStateStore(tmp_path / "state.sqlite3")
    await reopened.open()
    try:
        assert (await reopened.load_jobs())["j"].execution_id == "e2"
    finally:
        await reopened.close()


async def test_flush_commits_what_is_held_without_another_call(store: SqliteStateStore) -> None:
    try:
        with store.deferred_writes():
            held = queued(store.save_job(JobRecord(job_id="j")))
        store.flush()
        await asyncio.wait_for(held, 10)
        assert _on_disk(store.path, "SELECT job_id FROM jobs") == [("j",)]
    finally:
        await store.close()


async def test_the_window_ends_on_its_own(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path / "state.sqlite3", commit_window=0.001)
    await store.open()
    try:
        with store.deferred_writes():
            held = queued(store.save_job(JobRecord(job_id="j")))
        await asyncio.wait_for(held, 10)  # nothing else is called: the window's timer sends it
        assert _on_disk(store.path, "SELECT job_id FROM jobs") == [("j",)]
    finally:
        await store.close()


async def test_a_failing_held_write_fails_alone(store: SqliteStateStore) -> None:
    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO no_such_table VALUES (1)")

    try:
        with store.deferred_writes():
            before = queued(store.save_execution(_record("a")))
            failing = store._write(broken)
            after = queued(store.save_job(JobRecord(job_id="j", state=JobState.COMPLETED, execution_id="a")))
        assert await store.get_execution("a") is not None  # the read commits the batch, held ones first
        outcomes = await asyncio.gather(before, failing, after, return_exceptions=True)
        assert outcomes[0] is None and outcomes[2] is None
        assert isinstance(outcomes[1], StoreUnavailable)
        assert (await store.load_jobs())["j"].execution_id == "a"
    finally:
        await store.close()


async def test_only_writes_made_inside_deferred_writes_are_held(store: SqliteStateStore) -> None:
    try:
        with store.deferred_writes():
            with store.deferred_writes():
                pass
            held = queued(store.save_job(JobRecord(job_id="k")))  # still inside the outer one
        await _turns()
        assert not held.done()
        await asyncio.wait_for(store.save_job(JobRecord(job_id="l")), 10)  # outside: goes at once
        assert held.done()
        assert sorted(await store.load_jobs()) == ["k", "l"]
    finally:
        await store.close()
