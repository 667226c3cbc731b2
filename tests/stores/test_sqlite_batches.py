"""The SQLite store's group commit: the calls of one loop turn share a transaction, run without savepoints
while they all succeed; one failing call still fails alone and the others' writes stand."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from xcron.server.core.errors import StoreUnavailable
from xcron.server.core.model import ExecutionState, JobState, Trigger
from xcron.server.core.ports import ExecutionRecord, JobRecord
from xcron.server.stores.sqlite import SqliteStateStore


def _record(execution_id: str) -> ExecutionRecord:
    return ExecutionRecord(
        id=execution_id,
        job_id="j",
        parameters={},
        trigger=Trigger.SCHEDULE,
        state=ExecutionState.COMPLETED,
        start_time=datetime(2026, 1, 1, tzinfo=UTC),
    )


async def test_a_failing_call_fails_alone_and_the_batch_around_it_is_written(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path / "state.sqlite3")
    await store.open()
    try:

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
    finally:
        await store.close()
