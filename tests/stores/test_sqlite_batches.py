"""The SQLite store's group commit: the calls of one loop turn share a transaction (with those of the turns waiting
for the store thread), run without savepoints while they all succeed; one failing call still fails alone and
the others' writes stand."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from records import running_record
from store_thread import store_thread_held

from xcron.server.core.errors import StoreUnavailable
from xcron.server.core.model import ExecutionState, JobState, Trigger
from xcron.server.core.ports import ExecutionRecord, JobRecord
from xcron.server.stores import sqlite as sqlite_store
from xcron.server.stores.sqlite import SqliteStateStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStateStore]:
    opened = SqliteStateStore(tmp_path / "state.sqlite3")
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


def _record(execution_id: str) -> ExecutionRecord:
    return ExecutionRecord(
        id=execution_id,
        job_id="j",
        parameters={},
        trigger=Trigger.SCHEDULE,
        state=ExecutionState.COMPLETED,
        start_time=datetime(2026, 1, 1, tzinfo=UTC),
    )


async def test_a_failing_call_fails_alone_and_the_batch_around_it_is_written(store: SqliteStateStore) -> None:

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO no_such_table VALUES (1)")

    # Made in one turn of the loop: one batch.
    before = store.save_execution(_record("a"))
    failing = store._write(broken)
    after = store.save_job(JobRecord(job_id="j", state=JobState.COMPLETED, execution_id="a"))
    outcomes = await asyncio.gather(before, failing, after, return_exceptions=True)
    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], StoreUnavailable)
    stored = await store.get_execution("a")
    assert stored is not None and stored.parameters == {}
    assert (await store.load_jobs())["j"].execution_id == "a"

    def python_error(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT OR REPLACE INTO jobs VALUES ('k','completed',1,'',NULL,NULL,'b')")
        raise ValueError("not the store's fault")

    with pytest.raises(ValueError, match="not the store's fault"):
        await asyncio.gather(store.save_execution(_record("b")), store._write(python_error))
    assert await store.get_execution("b") is not None
    assert "k" not in await store.load_jobs()  # the failing call's own write was undone


def _job(state: JobState, execution_id: str) -> JobRecord:
    return JobRecord(job_id="j", state=state, execution_id=execution_id)


async def test_row_writes_of_one_batch_are_merged_in_call_order_around_other_calls(store: SqliteStateStore) -> None:
    """Rows of consecutive writes go in a few statements per table: the last write of a key wins, a call
    between them sees the rows written before it (and not those after), and more rows than one statement
    carries are all written."""
    running = _record("r")
    writes = [
        store.save_job(_job(JobState.RUNNING, "r")),
        store.save_execution(ExecutionRecord(**{**running.__dict__, "state": ExecutionState.RUNNING})),
        store.save_execution(running),  # the same key again: this one wins
        store.save_job(_job(JobState.COMPLETED, "r")),
    ]
    seen = store._enqueue(lambda c: [tuple(r) for r in c.execute("SELECT id, state FROM executions ORDER BY id")])
    many = [store.save_execution(_record(f"m{i:03d}")) for i in range(150)]  # 64 + 64 + 16 + 4 + 2
    last = store.save_job(_job(JobState.ABORTED, "m149"))
    await asyncio.gather(*writes, *many, last)
    assert await seen == [("r", "completed")]
    assert store._queue == [] and not store._in_flight
    stored = await store.list_executions("j", limit=1000)
    assert sorted(r.id for r in stored) == sorted(["r", *(f"m{i:03d}" for i in range(150))])
    assert {r.state for r in stored} == {ExecutionState.COMPLETED}
    assert (await store.load_jobs())["j"] == _job(JobState.ABORTED, "m149")


async def test_a_row_the_database_refuses_fails_alone_among_merged_rows(store: SqliteStateStore) -> None:
    refused = ExecutionRecord(**{**_record("bad").__dict__, "status_text": None})  # NOT NULL
    outcomes = await asyncio.gather(
        store.save_execution(_record("a")),
        store.save_execution(refused),
        store.save_job(_job(JobState.COMPLETED, "a")),
        store.save_execution(_record("b")),
        return_exceptions=True,
    )
    assert outcomes[0] is None and outcomes[2] is None and outcomes[3] is None
    assert isinstance(outcomes[1], StoreUnavailable) and "NOT NULL" in str(outcomes[1])
    assert await store.get_execution("bad") is None
    assert await store.get_execution("a") is not None and await store.get_execution("b") is not None
    assert (await store.load_jobs())["j"].execution_id == "a"

    # Refused, then replaced in the same batch: the refused write still fails, as it would row by row.
    replaced = ExecutionRecord(**{**_record("c").__dict__, "status_text": None})
    first, second = await asyncio.gather(
        store.save_execution(replaced), store.save_execution(_record("c")), return_exceptions=True
    )
    assert isinstance(first, StoreUnavailable) and second is None
    assert await store.get_execution("c") == _record("c")


def _at(second: int) -> datetime:
    return datetime(2026, 1, 1, 0, 0, second, tzinfo=UTC)


def _run(execution_id: str, *, job_id: str = "j", start: int = 0, request_id: str = "") -> ExecutionRecord:
    return running_record(execution_id, job_id, _at(start), request_id=request_id)


def _ended(record: ExecutionRecord) -> ExecutionRecord:
    return replace(
        record,
        state=ExecutionState.CANCELLED,
        finish_time=_at(59),
        error="cancelled on request",
        progress=0.5,
        status_text="cancelled",
        cancel_requested=True,
    )


async def _rowid(store: SqliteStateStore, execution_id: str) -> int:
    def q(c: sqlite3.Connection) -> int:
        return int(c.execute("SELECT rowid FROM executions WHERE id = ?", (execution_id,)).fetchone()[0])

    return await store._call(q)


async def _by_job_index(store: SqliteStateStore, job_id: str) -> list[tuple[str, str]]:
    """What executions_by_job holds for the job (the index itself, not the table)."""
    return await store._call(
        lambda c: [
            tuple(r)
            for r in c.execute(
                "SELECT id, start_time FROM executions INDEXED BY executions_by_job WHERE job_id = ?", (job_id,)
            )
        ]
    )


async def test_a_runs_end_is_written_in_place_and_reads_back_as_the_whole_row(store: SqliteStateStore) -> None:
    """The end of a run whose start this store wrote changes no indexed column: the row is updated where it
    is (its rowid stays; its index entries are not rewritten), and every column reads back as written."""
    start = _run("x", request_id="req-1")
    await store.save_execution(start)
    rowid = await _rowid(store, "x")
    await store.save_execution(_ended(start))
    assert await _rowid(store, "x") == rowid
    assert await store.get_execution("x") == _ended(start)
    assert await store.find_by_request_id("j", "req-1") == _ended(start)
    assert await store.list_executions("j", limit=10) == [_ended(start)]


async def test_a_row_whose_indexed_columns_change_is_replaced_whole(store: SqliteStateStore) -> None:
    await store.save_execution(_run("x", job_id="a", start=1, request_id="r1"))
    moved = _ended(_run("x", job_id="b", start=2, request_id="r2"))
    await store.save_execution(moved)
    assert await store.get_execution("x") == moved
    assert await store.list_executions("a", limit=10) == [] and await store.find_by_request_id("a", "r1") is None
    assert await store.list_executions("b", limit=10) == [moved]
    assert await store.find_by_request_id("b", "r2") == moved
    assert await _by_job_index(store, "b") == [("x", "2026-01-01T00:00:02.000000Z")]


async def test_a_row_written_twice_in_one_batch_ends_as_the_later_write(store: SqliteStateStore) -> None:
    """A key written more than once in a batch is replaced row by row, in call order, even when its stored
    row's indexed columns are known: here the first write moves the row and the second moves it back."""
    start = _run("x", start=1)
    await store.save_execution(start)
    await asyncio.gather(store.save_execution(_run("x", start=2)), store.save_execution(_ended(start)))
    assert await store.get_execution("x") == _ended(start)
    assert await _by_job_index(store, "j") == [("x", "2026-01-01T00:00:01.000000Z")]
    # The other way round: a write that could go in place, then one that moves the row.
    moved = _run("x", start=3)
    await asyncio.gather(store.save_execution(_ended(start)), store.save_execution(moved))
    assert await store.get_execution("x") == moved
    assert await _by_job_index(store, "j") == [("x", "2026-01-01T00:00:03.000000Z")]


async def test_a_row_purged_before_its_end_is_written_whole(store: SqliteStateStore) -> None:
    start = _run("x")
    await store.save_execution(start)
    await store._write(lambda c: c.execute("DELETE FROM executions WHERE id = 'x'"))
    await store.save_execution(_ended(start))
    assert await store.get_execution("x") == _ended(start)
    assert await store.list_executions("j", limit=10) == [_ended(start)]


async def test_after_a_batch_written_call_by_call_rows_are_replaced_whole(store: SqliteStateStore) -> None:
    """A refused row sends its batch down the call-by-call path, whose writes are not tracked: the store
    forgets what it knew, so a later write does not take a row it changed there for the one it knew."""
    start = _run("x", start=1)
    await store.save_execution(start)  # known: started at 1
    refused = ExecutionRecord(**{**_run("bad").__dict__, "status_text": None})  # NOT NULL
    outcomes = await asyncio.gather(
        store.save_execution(_run("x", start=2)), store.save_execution(refused), return_exceptions=True
    )
    assert outcomes[0] is None and isinstance(outcomes[1], StoreUnavailable)
    await store.save_execution(_ended(start))  # started at 1 again: the stored row says 2
    assert await store.get_execution("x") == _ended(start)
    assert await _by_job_index(store, "j") == [("x", "2026-01-01T00:00:01.000000Z")]


async def test_a_call_that_changes_rows_itself_makes_the_store_forget_what_it_knew(store: SqliteStateStore) -> None:
    """Another write (purging, aborting interrupted runs, or anything later) may change an indexed column:
    after it, a row is replaced whole again."""
    start = _run("x", start=1)
    await store.save_execution(start)
    await store._write(lambda c: c.execute("UPDATE executions SET start_time = '2026-01-01T00:00:09.000000Z'"))
    await store.save_execution(_ended(start))
    assert await store.get_execution("x") == _ended(start)
    assert await _by_job_index(store, "j") == [("x", "2026-01-01T00:00:01.000000Z")]


class _FailingCommit:
    """The store's connection, whose next COMMIT fails (a disk I/O error) while `fail` is set."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.fail = False

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql == "COMMIT" and self.fail:
            self.fail = False
            raise sqlite3.OperationalError("disk I/O error")
        return self.conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


async def test_rows_of_a_failed_commit_are_not_taken_as_written(store: SqliteStateStore) -> None:
    start = _run("x", start=1)
    await store.save_execution(start)
    assert store._conn is not None
    failing = _FailingCommit(store._conn)
    store._conn = failing  # type: ignore[assignment]
    failing.fail = True
    moved = _run("x", start=2)
    with pytest.raises(StoreUnavailable, match="disk I/O error"):
        await store.save_execution(moved)
    await store.save_execution(moved)  # the retry: the stored row still starts at 1
    assert await store.get_execution("x") == moved
    assert await _by_job_index(store, "j") == [("x", "2026-01-01T00:00:02.000000Z")]


async def test_batches_posted_while_the_thread_is_busy_share_one_transaction_in_order(
    store: SqliteStateStore,
) -> None:
    """A turn's batch goes to the store thread without waiting for the batches before it to settle; the
    thread takes every batch waiting when it is free in one transaction, in the order they were made, and a
    failing call among them still fails alone."""
    statements: list[str] = []
    assert store._conn is not None
    store._conn.set_trace_callback(statements.append)  # called on the store thread
    async with store_thread_held(store) as held:
        first = store.save_job(JobRecord(job_id="a", state=JobState.RUNNING, execution_id="x"))
        await asyncio.sleep(0)  # posted while the thread is busy: a second batch
        assert store._in_flight == 2
        failing = store._write(lambda conn: conn.execute("INSERT INTO no_such_table VALUES (1)"))
        second = store.save_job(JobRecord(job_id="a", state=JobState.COMPLETED, execution_id="x"))
        await asyncio.sleep(0)  # a third
        assert store._in_flight == 3
        statements.clear()
    outcomes = await asyncio.gather(held, first, failing, second, return_exceptions=True)
    assert outcomes[0] is None and outcomes[1] is None and outcomes[3] is None
    assert isinstance(outcomes[2], StoreUnavailable)
    assert (await store.load_jobs())["a"].state is JobState.COMPLETED  # the later write won
    assert store._in_flight == 0
    # The hold's transaction ends; the two batches that waited run as one (rolled back at the failing call,
    # then run call by call in savepoints); then the read's own.
    transactions = [s for s in statements if s in ("BEGIN", "COMMIT", "ROLLBACK")]
    assert transactions == ["COMMIT", "BEGIN", "ROLLBACK", "BEGIN", "COMMIT", "BEGIN", "COMMIT"]


async def test_the_store_thread_merges_at_most_so_many_calls_into_one_transaction(
    store: SqliteStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thread that fell behind does not make one huge transaction of everything waiting (one failing call
    would send all of it through savepoints, and every read would wait for the whole commit)."""
    monkeypatch.setattr(sqlite_store, "MAX_MERGED_CALLS", 2)
    statements: list[str] = []
    assert store._conn is not None
    store._conn.set_trace_callback(statements.append)
    writes = []
    async with store_thread_held(store) as held:
        for name in "abc":  # three batches of one call, one turn each
            writes.append(store.save_job(JobRecord(job_id=name)))
            await asyncio.sleep(0)
        assert store._in_flight == 4
        statements.clear()
    await asyncio.gather(held, *writes)
    assert [s for s in statements if s in ("BEGIN", "COMMIT")] == ["COMMIT", "BEGIN", "COMMIT", "BEGIN", "COMMIT"]
    assert sorted(await store.load_jobs()) == ["a", "b", "c"]
