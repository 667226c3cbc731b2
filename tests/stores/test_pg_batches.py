"""The PostgreSQL store writes the claims, starts and ends made in one loop turn in one transaction each
(stores/postgres/batch.py): each caller still gets its own answer, exactly as from a call of its own.

Needs PostgreSQL as tests/stores/test_state_contract.py does (skipped, saying why, without one)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from postgres_db import MakeStore, run_sql
from records import running_record

from xcron.server.core.errors import StoreUnavailable
from xcron.server.core.model import ExecutionState, JobState, Trigger
from xcron.server.core.ports import ExecutionRecord, JobRecord, RunFenced, ScheduleRecord

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def running(id: str, job_id: str, *, start: datetime = T0) -> ExecutionRecord:
    return running_record(id, job_id, start, trigger=Trigger.SCHEDULE)


async def test_pg_claims_of_one_turn_each_go_to_one_replica_and_record_the_newest_fire_time(
    make_pg: MakeStore,
) -> None:
    a = await make_pg("a")
    b = await make_pg("b")
    keys = [("job.a", "k"), ("job.b", "k"), ("job.c", "k")]
    await a.save_schedule_records([ScheduleRecord(job_id=j, schedule_key=k, last_fire=T0) for j, k in keys])
    base = datetime.now(UTC).replace(microsecond=0)
    dues = [base + timedelta(seconds=i) for i in range(4)]
    # Both replicas claim every occurrence of every schedule in one turn each, some twice over; job.c's
    # occurrences are claimed only to be counted (run=False), so its last run stays as it was.
    calls = [(r, j, k, due) for due in dues for j, k in keys for r in (a, b, a)]
    won = await asyncio.gather(*(r.claim_occurrence(j, k, due, run=j != "job.c") for r, j, k, due in calls))
    winners: dict[tuple[str, datetime], int] = {}
    for (_, j, _, due), ok in zip(calls, won, strict=True):
        winners[(j, due)] = winners.get((j, due), 0) + int(ok)
    assert set(winners.values()) == {1}
    records = await a.load_schedule_records()
    assert [(records[key].last_fire, records[key].last_run) for key in keys] == [
        (dues[-1], dues[-1]),
        (dues[-1], dues[-1]),
        (dues[-1], None),
    ]
    assert not await b.claim_occurrence("job.a", "k", dues[0])  # claimed for good


async def test_pg_starts_of_one_turn_each_get_their_answer(make_pg: MakeStore, pg_schema: str) -> None:
    a = await make_pg("a")
    b = await make_pg("b")
    assert await b.try_start_run(running("e-busy", "job.busy")) is not None
    started = await asyncio.gather(
        a.try_start_run(running("e-x", "job.x")),
        a.try_start_run(running("e-again", "job.busy")),  # runs on b: refused, the others go on
        a.try_start_run(running("e-y", "job.y")),
    )
    assert [r.id if r is not None else None for r in started] == ["e-x", None, "e-y"]
    assert started[0] == await b.get_execution("e-x")
    jobs = await b.load_jobs()
    assert [(jobs[j].execution_id, jobs[j].state) for j in ("job.x", "job.y", "job.busy")] == [
        ("e-x", JobState.RUNNING),
        ("e-y", JobState.RUNNING),
        ("e-busy", JobState.RUNNING),
    ]
    # Without a valid lease none starts, and every caller is told why.
    await run_sql("UPDATE {s}.replicas SET last_seen = now() - interval '1 hour' WHERE replica_id = 'a'", pg_schema)
    refused = await asyncio.gather(
        a.try_start_run(running("e-z1", "job.z1")), a.try_start_run(running("e-z2", "job.z2")), return_exceptions=True
    )
    assert all(isinstance(r, StoreUnavailable) and r.reason == "LEASE_LOST" for r in refused), refused
    assert await b.get_execution("e-z1") is None


async def test_pg_ends_of_one_turn_are_fenced_one_by_one(make_pg: MakeStore, pg_schema: str) -> None:
    a = await make_pg("a")
    b = await make_pg("b")
    runs = [running(f"e-{j}", f"job.{j}") for j in "pqr"]
    assert all(await asyncio.gather(*(b.try_start_run(r) for r in runs)))
    # b's run of job.q is recorded ABORTED by a (b looked dead for a moment); b then renews its lease.
    await run_sql("UPDATE {s}.replicas SET last_seen = now() - interval '1 hour' WHERE replica_id = 'b'", pg_schema)
    assert [r.id for r in await a.expire_dead_replicas(timedelta(seconds=30))] == ["e-p", "e-q", "e-r"]
    await b.heartbeat()
    fresh = [running(f"e2-{j}", f"job.{j}", start=T0 + timedelta(minutes=1)) for j in "pr"]
    assert all(await asyncio.gather(*(b.try_start_run(r) for r in fresh)))
    ends = [replace(r, state=ExecutionState.COMPLETED, finish_time=r.start_time + timedelta(seconds=1)) for r in fresh]
    stale = replace(runs[1], state=ExecutionState.COMPLETED, finish_time=T0 + timedelta(seconds=1))

    def job(record: ExecutionRecord) -> JobRecord:
        return JobRecord(
            job_id=record.job_id,
            state=JobState.COMPLETED,
            progress=1.0,
            status_text="completed",
            last_start=record.start_time,
            last_finish=record.finish_time,
            execution_id=record.id,
        )

    outcomes = await asyncio.gather(
        b.settle_run(ends[0], job(ends[0])),
        b.settle_run(stale, job(stale)),  # ABORTED by a: stays so, and only this caller hears it
        b.settle_run(ends[1], job(ends[1])),
        return_exceptions=True,
    )
    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], RunFenced) and outcomes[1].stored.state is ExecutionState.ABORTED
    assert [await a.get_execution(r.id) for r in ends] == ends
    jobs = await a.load_jobs()
    assert [(jobs[j].execution_id, jobs[j].state) for j in ("job.p", "job.q", "job.r")] == [
        ("e2-p", JobState.COMPLETED),
        ("e-q", JobState.ABORTED),
        ("e2-r", JobState.COMPLETED),
    ]
    await asyncio.gather(*(b.settle_run(r, job(r)) for r in ends))  # a retry of what is written: no error
