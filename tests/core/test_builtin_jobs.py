"""The built-in maintenance jobs, run through the real executor on real files."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
from core_harness import Harness, Tick

from xcron.server.core.jobs import JobCancelled, JobContext
from xcron.server.core.model import ExecutionState, IntervalSpec, Schedule, Trigger
from xcron.server.jobs import BackupJob, PurgeHistoryJob


@pytest.fixture
def builtin_harness(tmp_path: Path) -> Harness:
    return Harness(tmp=tmp_path, jobs=(Tick, PurgeHistoryJob, BackupJob))


async def run_to_end(h: Harness, job_id: str, params: dict[str, object], count: int) -> ExecutionState:
    assert h.manager is not None
    await h.manager.run(job_id, params)  # type: ignore[arg-type]
    runs = await h.recorder.wait_for(count)
    return runs[-1].state


async def test_purge_keeps_the_newest_runs_per_job(builtin_harness: Harness) -> None:
    h = builtin_harness
    manager = await h.start()
    for i in range(5):
        h.clock.advance(timedelta(minutes=1))
        assert await run_to_end(h, "t.tick", {}, i + 1) is ExecutionState.COMPLETED
    newest = [r.id for r in await manager.list_executions("t.tick", limit=10, before=None)]
    assert await run_to_end(h, "xcron.purge-history", {"keep_last": 2}, 6) is ExecutionState.COMPLETED
    kept = [r.id for r in await manager.list_executions("t.tick", limit=10, before=None)]
    assert kept == newest[:2]
    purge = h.recorder.finished[-1]
    assert "purged 3 executions" in purge.status_text


async def test_purge_by_age(builtin_harness: Harness) -> None:
    h = builtin_harness
    manager = await h.start()
    assert await run_to_end(h, "t.tick", {}, 1) is ExecutionState.COMPLETED
    h.clock.advance(timedelta(days=2))
    assert await run_to_end(h, "xcron.purge-history", {"older_than_days": 3, "keep_last": 100}, 2) is (
        ExecutionState.COMPLETED
    )
    assert len(await manager.list_executions("t.tick", limit=10, before=None)) == 1  # 2 days old: kept
    assert await run_to_end(h, "xcron.purge-history", {"older_than_days": 1, "keep_last": 100}, 3) is (
        ExecutionState.COMPLETED
    )
    remaining = await manager.list_executions("t.tick", limit=10, before=None)
    assert remaining == []


async def test_backup_copies_schedules_and_a_consistent_database(builtin_harness: Harness, tmp_path: Path) -> None:
    h = builtin_harness
    manager = await h.start()
    await manager.set_schedules(
        "t.tick", [Schedule(spec=IntervalSpec(every=timedelta(hours=1)), start=h.clock.now())]
    )  # so that there is an xcron.xml to back up
    folder = tmp_path / "backups"
    manager.executor.services.update(data_dir=tmp_path / "data", schedule_file=h.schedule_file)
    for i in range(3):
        h.clock.advance(timedelta(minutes=1))
        state = await run_to_end(h, "xcron.backup", {"folder": str(folder), "keep": 2}, i + 1)
        assert state is ExecutionState.COMPLETED, h.recorder.finished[-1].error
    backups = sorted(folder.iterdir())
    assert len(backups) == 2  # the oldest one was removed
    latest = backups[-1]
    assert (latest / "xcron.xml").read_bytes() == h.schedule_file.read_bytes()
    with sqlite3.connect(latest / "state.sqlite3") as db:
        (count,) = db.execute("SELECT count(*) FROM executions WHERE job_id = 'xcron.backup'").fetchone()
    assert count >= 1


def test_backup_cancelled_leaves_no_partial_folder(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with sqlite3.connect(data / "state.sqlite3") as db:
        db.execute("CREATE TABLE t (x)")
        db.executemany("INSERT INTO t VALUES (?)", [(b"x" * 4000,) for _ in range(500)])
    progress: list[float] = []
    ctx = JobContext(
        job_id="xcron.backup",
        execution_id="e",
        parameters={"folder": str(tmp_path / "b"), "keep": 3},
        trigger=Trigger.MANUAL,
        scheduled_time=None,
        on_progress=lambda p, s: progress.append(p),
        services={"data_dir": data, "schedule_file": tmp_path / "missing.xml"},
    )
    ctx.request_cancel()
    with pytest.raises(JobCancelled):
        BackupJob().run(ctx)
    assert list((tmp_path / "b").iterdir()) == []
    assert progress and progress[-1] < 1.0
