"""One contract for the StateStore protocol, run against SQLite and PostgreSQL; then the PostgreSQL cluster
primitives (occurrence claims, cluster-wide single run, leases, cross-replica events and cancels).

PostgreSQL tests use `XCRON_TEST_PG_DSN` (default: trust auth on 127.0.0.1:5432, database `test`) and are
skipped, saying why, when it cannot be reached. Each test gets its own schema, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest
from postgres_db import PG_DSN, MakeStore, run_sql
from tcp_proxy import TcpProxy

from xcron.server.core.errors import Conflict, StoreUnavailable
from xcron.server.core.model import ExecutionState, IntervalSpec, JobState, ParameterValue, Schedule, Trigger
from xcron.server.core.ports import (
    INTERRUPTED,
    ExecutionCursor,
    ExecutionRecord,
    JobRecord,
    RunFenced,
    ScheduleRecord,
    StateStore,
)
from xcron.server.stores.postgres import MIGRATIONS, PostgresStateStore, lease_lost, replica_stopped
from xcron.server.stores.schedules import PostgresScheduleSource
from xcron.server.stores.sqlite import SqliteStateStore
from xcron.server.stores.xcron_xml import ScheduleDocument, ScheduleEntry

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
WAIT = 10.0  # seconds: an upper bound for anything awaited, never a synchronisation delay


@pytest.fixture(params=["sqlite", "postgresql"])
def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], StateStore]:
    """Makes unopened stores on the same backing data (so a test can close and reopen)."""
    if request.param == "sqlite":
        return lambda: SqliteStateStore(tmp_path / "state.sqlite3")
    schema: str = request.getfixturevalue("pg_schema")
    return lambda: PostgresStateStore(PG_DSN, schema=schema, replica_id="replica-a")


@pytest.fixture
async def store(new_store: Callable[[], StateStore]) -> AsyncIterator[StateStore]:
    opened = new_store()
    await opened.open()
    yield opened
    await opened.close()


def execution(
    id: str,
    job_id: str = "job.a",
    *,
    start: datetime = T0,
    state: ExecutionState = ExecutionState.COMPLETED,
    request_id: str = "",
    **changes: Any,
) -> ExecutionRecord:
    finish = None if state is ExecutionState.RUNNING else start + timedelta(seconds=1)
    fields: dict[str, Any] = {
        "id": id,
        "job_id": job_id,
        "parameters": {},
        "trigger": Trigger.MANUAL,
        "state": state,
        "start_time": start,
        "finish_time": finish,
        "request_id": request_id,
        **changes,
    }
    return ExecutionRecord(**fields)


# -- the contract, for every backend -------------------------------------------------------------


async def test_jobs_round_trip_and_replace(store: StateStore) -> None:
    assert await store.load_jobs() == {}
    a = JobRecord(job_id="job.a")
    b = JobRecord(
        job_id="job.b",
        state=JobState.COMPLETED,
        progress=1.0,
        status_text="done",
        last_start=T0,
        last_finish=T0 + timedelta(seconds=3),
        execution_id="e1",
    )
    await store.save_job(a)
    await store.save_job(b)
    assert await store.load_jobs() == {"job.a": a, "job.b": b}
    a2 = JobRecord(job_id="job.a", state=JobState.RUNNING, progress=0.25, status_text="working", last_start=T0)
    await store.save_job(a2)
    assert await store.load_jobs() == {"job.a": a2, "job.b": b}


async def test_execution_insert_replace_and_get(store: StateStore) -> None:
    parameters: dict[str, ParameterValue] = {
        "name": "Ada ✓",
        "times": 5,
        "dry_run": True,
        "ratio": 0.125,
        "at": datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=timezone(timedelta(hours=2))),
        "every": timedelta(minutes=90, microseconds=5),
    }
    paris_start = datetime(2025, 3, 1, 13, 0, 0, 654321, tzinfo=timezone(timedelta(hours=1)))
    running = execution(
        "e1",
        state=ExecutionState.RUNNING,
        parameters=parameters,
        trigger=Trigger.SCHEDULE,
        start=paris_start,
        scheduled_time=paris_start - timedelta(seconds=2),
        request_id="r1",
        progress=0.5,
        status_text="halfway",
    )
    await store.save_execution(running)
    got = await store.get_execution("e1")
    assert got == running
    assert got is not None and got.start_time.utcoffset() == timedelta(0)  # stored and returned in UTC
    assert got.parameters == parameters

    finished = execution(
        "e1",
        state=ExecutionState.CANCELLED,
        parameters=parameters,
        trigger=Trigger.SCHEDULE,
        start=paris_start,
        scheduled_time=paris_start - timedelta(seconds=2),
        request_id="r1",
        progress=0.5,
        status_text="cancelled",
        error="cancelled on request",
        cancel_requested=True,
    )
    await store.save_execution(finished)
    assert await store.get_execution("e1") == finished
    assert await store.get_execution("nope") is None
    assert [r.id for r in await store.list_executions("job.a", limit=10)] == ["e1"]  # replaced, not added


async def test_find_by_request_id(store: StateStore) -> None:
    await store.save_execution(execution("e1", request_id="r1"))
    await store.save_execution(execution("e2", request_id="r2", start=T0 + timedelta(seconds=5)))
    await store.save_execution(execution("e3", job_id="job.b", request_id="r1"))
    await store.save_execution(execution("e4"))
    found = await store.find_by_request_id("job.a", "r1")
    assert found is not None and found.id == "e1"
    found = await store.find_by_request_id("job.b", "r1")
    assert found is not None and found.id == "e3"
    assert await store.find_by_request_id("job.a", "r3") is None
    assert await store.find_by_request_id("job.c", "r1") is None
    assert await store.find_by_request_id("job.a", "") is None  # no request id is not a key


async def test_list_executions_newest_first_with_cursor(store: StateStore) -> None:
    # Two pairs share a start time: the id breaks the tie, and no page boundary loses or repeats one.
    starts = {
        "e1": T0,
        "e2": T0 + timedelta(seconds=1),
        "e3": T0 + timedelta(seconds=1),
        "e4": T0 + timedelta(seconds=2, microseconds=1),
        "e5": T0 + timedelta(seconds=3),
        "e6": T0 + timedelta(seconds=3),
        "e7": T0 + timedelta(seconds=4),
    }
    for execution_id in ("e4", "e1", "e7", "e3", "e6", "e2", "e5"):
        await store.save_execution(execution(execution_id, start=starts[execution_id]))
    await store.save_execution(execution("x1", job_id="job.b", start=T0 + timedelta(seconds=2)))
    await store.save_execution(execution("e8", state=ExecutionState.RUNNING, start=T0 + timedelta(seconds=9)))

    expected = ["e8", "e7", "e6", "e5", "e4", "e3", "e2", "e1"]
    assert [r.id for r in await store.list_executions("job.a", limit=100)] == expected

    pages: list[list[str]] = []
    cursor: ExecutionCursor | None = None
    while True:
        page = await store.list_executions("job.a", limit=3, before=cursor)
        if not page:
            break
        pages.append([r.id for r in page])
        cursor = ExecutionCursor(start_time=page[-1].start_time, execution_id=page[-1].id)
    assert pages == [["e8", "e7", "e6"], ["e5", "e4", "e3"], ["e2", "e1"]]

    assert await store.list_executions("job.a", limit=0) == []
    assert [r.id for r in await store.list_executions("job.b", limit=10)] == ["x1"]
    assert await store.list_executions("job.none", limit=10) == []


async def test_abort_interrupted_marks_running_runs_and_jobs(store: StateStore) -> None:
    await store.save_execution(execution("e1", state=ExecutionState.RUNNING, progress=0.3, status_text="busy"))
    await store.save_job(
        JobRecord(job_id="job.a", state=JobState.RUNNING, progress=0.3, last_start=T0, execution_id="e1")
    )
    done = execution("e2", job_id="job.b", status_text="completed", progress=1.0)
    await store.save_execution(done)
    job_b = JobRecord(job_id="job.b", state=JobState.COMPLETED, last_finish=T0, execution_id="e2")
    await store.save_job(job_b)
    now = T0 + timedelta(minutes=5, microseconds=7)

    aborted = await store.abort_interrupted(now)

    expected = execution(
        "e1",
        state=ExecutionState.ABORTED,
        progress=0.3,
        finish_time=now,
        error=INTERRUPTED,
        status_text=INTERRUPTED,
    )
    assert aborted == [expected]
    assert await store.get_execution("e1") == expected
    assert await store.get_execution("e2") == done
    jobs = await store.load_jobs()
    assert jobs["job.a"] == JobRecord(
        job_id="job.a",
        state=JobState.ABORTED,
        progress=0.3,
        status_text=INTERRUPTED,
        last_start=T0,
        last_finish=now,
        execution_id="e1",
    )
    assert jobs["job.b"] == job_b
    assert await store.abort_interrupted(now) == []


async def test_purge_by_age_deletes_only_finished(store: StateStore) -> None:
    await store.save_execution(execution("old1", start=T0 - timedelta(days=100)))
    await store.save_execution(execution("old2", job_id="job.b", start=T0 - timedelta(days=91)))
    await store.save_execution(
        execution("old-running", job_id="job.c", start=T0 - timedelta(days=95), state=ExecutionState.RUNNING)
    )
    await store.save_execution(execution("new", start=T0 - timedelta(days=1)))
    cutoff = T0 - timedelta(days=90)
    await store.save_execution(execution("at-cutoff", job_id="job.d", start=cutoff))

    assert await store.purge_executions(older_than=cutoff, keep_last=None) == 2
    assert await store.get_execution("old1") is None
    assert await store.get_execution("old2") is None
    for kept in ("old-running", "new", "at-cutoff"):
        assert await store.get_execution(kept) is not None
    assert await store.purge_executions(older_than=cutoff, keep_last=None) == 0


async def test_purge_keep_last_per_job(store: StateStore) -> None:
    for i in range(5):
        await store.save_execution(execution(f"a{i}", start=T0 + timedelta(seconds=i)))
    await store.save_execution(execution("a-running", start=T0 + timedelta(seconds=10), state=ExecutionState.RUNNING))
    await store.save_execution(execution("b0", job_id="job.b", start=T0 + timedelta(seconds=20)))

    # The running run counts towards the newest N but is never deleted.
    assert await store.purge_executions(older_than=None, keep_last=3) == 3
    assert [r.id for r in await store.list_executions("job.a", limit=10)] == ["a-running", "a4", "a3"]
    assert [r.id for r in await store.list_executions("job.b", limit=10)] == ["b0"]

    assert await store.purge_executions(older_than=T0 + timedelta(seconds=4), keep_last=1) == 2  # a3 by age, a4
    assert [r.id for r in await store.list_executions("job.a", limit=10)] == ["a-running"]

    assert await store.purge_executions(older_than=None, keep_last=0) == 1  # b0; a-running stays
    assert [r.id for r in await store.list_executions("job.a", limit=10)] == ["a-running"]


async def test_deferred_writes_are_committed_by_flush(new_store: Callable[[], StateStore]) -> None:
    """What a store may hold for a commit window (scheduled runs' bookkeeping, made as the executor makes
    it: queued, awaited by nobody) goes once flush() is called."""
    store = new_store()
    if hasattr(store, "commit_window"):  # a window longer than the wait below: only flush() can commit them
        store.commit_window = 3600
    await store.open()
    try:
        with store.deferred_writes():
            writes = [
                asyncio.ensure_future(store.save_execution(execution("e1"))),
                asyncio.ensure_future(
                    store.save_job(JobRecord(job_id="job.a", state=JobState.COMPLETED, execution_id="e1"))
                ),
                asyncio.ensure_future(store.save_schedule_records([ScheduleRecord(job_id="job.a", schedule_key="k")])),
            ]
        store.flush()
        await asyncio.wait_for(asyncio.gather(*writes), WAIT)
    finally:
        await store.close()
    reopened = new_store()
    await reopened.open()
    try:
        stored = await reopened.get_execution("e1")
        assert stored is not None and stored.state is ExecutionState.COMPLETED
        assert (await reopened.load_jobs())["job.a"].execution_id == "e1"
        assert list(await reopened.load_schedule_records()) == [("job.a", "k")]
    finally:
        await reopened.close()


async def test_schedule_records_save_and_load(store: StateStore) -> None:
    assert await store.load_schedule_records() == {}
    first = ScheduleRecord(job_id="job.a", schedule_key="k1", last_fire=T0)
    second = ScheduleRecord(
        job_id="job.a",
        schedule_key="k2",
        last_fire=T0 + timedelta(hours=1),
        last_run=T0,
        overlap_skipped=3,
        misfire_skipped=4,
    )
    other = ScheduleRecord(job_id="job.b", schedule_key="k1")
    await store.save_schedule_records([first, second, other])
    await store.save_schedule_records([])
    assert await store.load_schedule_records() == {
        ("job.a", "k1"): first,
        ("job.a", "k2"): second,
        ("job.b", "k1"): other,
    }
    updated = ScheduleRecord(
        job_id="job.a", schedule_key="k1", last_fire=T0 + timedelta(days=1), last_run=T0 + timedelta(days=1)
    )
    await store.save_schedule_records([updated])
    records = await store.load_schedule_records()
    assert records[("job.a", "k1")] == updated
    assert len(records) == 3


async def test_state_survives_close_and_reopen(new_store: Callable[[], StateStore]) -> None:
    first = new_store()
    await first.open()
    await first.save_job(JobRecord(job_id="job.a", state=JobState.COMPLETED, execution_id="e1"))
    await first.save_execution(execution("e1", request_id="r1"))
    await first.save_schedule_records([ScheduleRecord(job_id="job.a", schedule_key="k", last_fire=T0)])
    await first.close()

    second = new_store()
    await second.open()
    try:
        assert (await second.load_jobs())["job.a"].execution_id == "e1"
        assert await second.get_execution("e1") == execution("e1", request_id="r1")
        assert (await second.load_schedule_records())[("job.a", "k")].last_fire == T0
    finally:
        await second.close()


async def test_closed_store_is_unavailable(new_store: Callable[[], StateStore]) -> None:
    closed = new_store()
    await closed.open()
    await closed.close()
    with pytest.raises(StoreUnavailable):
        await closed.load_jobs()


# -- PostgreSQL: the cluster ----------------------------------------------------------------------


async def test_pg_claim_occurrence_exactly_once_across_replicas(make_pg: MakeStore) -> None:
    a = await make_pg("a")
    b = await make_pg("b")
    base = datetime.now(UTC).replace(microsecond=123456)  # recent: older claims are pruned
    dues = [base + timedelta(minutes=i) for i in range(50)]
    # Every due time raced by three callers on each replica, all at once.
    calls = [(due, replica) for due in dues for replica in (a, b, a, b, a, b)]
    results = await asyncio.gather(*(r.claim_occurrence("job.a", "k1", due) for due, r in calls))
    wins: dict[datetime, int] = {}
    for (due, _), won in zip(calls, results, strict=True):
        wins[due] = wins.get(due, 0) + int(won)
    assert wins == dict.fromkeys(dues, 1)
    # Another schedule or job is another occurrence; the same one again is never re-claimed.
    assert await a.claim_occurrence("job.a", "k2", dues[0])
    assert await b.claim_occurrence("job.b", "k1", dues[0])
    assert not await b.claim_occurrence("job.a", "k1", dues[0])
    # The same instant in another zone is the same occurrence.
    assert not await a.claim_occurrence("job.a", "k1", dues[1].astimezone(timezone(timedelta(hours=-5))))


async def test_pg_claims_pruned_after_retention(make_pg: MakeStore, pg_schema: str) -> None:
    a = await make_pg("a", claim_retention=timedelta(days=1))
    old = datetime.now(UTC) - timedelta(days=2)
    assert await a.claim_occurrence("job.a", "k", old)  # the first call of a replica prunes
    b = await make_pg("b", claim_retention=timedelta(days=1))
    assert await b.claim_occurrence("job.a", "k", T0 + timedelta(days=3650))  # prunes `old`
    assert [row[0] for row in await run_sql("SELECT due FROM {s}.occurrence_claims", pg_schema)] == [
        T0 + timedelta(days=3650)
    ]


async def test_pg_try_start_run_one_winner_and_request_idempotency(make_pg: MakeStore) -> None:
    a = await make_pg("a")
    b = await make_pg("b")
    mine = execution("e-a", state=ExecutionState.RUNNING, request_id="r-a")
    theirs = execution("e-b", state=ExecutionState.RUNNING, request_id="r-b")
    won_a, won_b = await asyncio.gather(a.try_start_run(mine), b.try_start_run(theirs))
    assert (won_a is None) != (won_b is None)
    winner, first = (a, won_a) if won_a is not None else (b, won_b)
    loser = b if winner is a else a
    assert first is not None and first.state is ExecutionState.RUNNING
    assert [r.id for r in await a.list_executions("job.a", limit=10)] == [first.id]

    # The same request id from any replica returns the first execution, even under a new execution id.
    again = await loser.try_start_run(execution("e-retry", state=ExecutionState.RUNNING, request_id=first.request_id))
    assert again == first
    # A plain save of a second RUNNING run is refused too.
    with pytest.raises(Conflict) as refused:
        await loser.save_execution(execution("e-c", state=ExecutionState.RUNNING))
    assert refused.value.reason == "JOB_ALREADY_RUNNING"

    # Once the run ends, the job can start anywhere; a finished request id still answers with its run.
    completed = replace(first, state=ExecutionState.COMPLETED, finish_time=first.start_time + timedelta(seconds=1))
    await winner.save_execution(completed)
    later = await loser.try_start_run(execution("e-later", state=ExecutionState.RUNNING, start=T0 + timedelta(1)))
    assert later is not None and later.id == "e-later"
    assert await winner.try_start_run(execution("e-x", request_id=first.request_id)) == completed
    assert await a.try_start_run(execution("e-other-job", job_id="job.b", state=ExecutionState.RUNNING)) is not None


async def test_pg_try_start_run_same_request_racing(make_pg: MakeStore) -> None:
    a = await make_pg("a")
    b = await make_pg("b")
    for i in range(20):
        job_id = f"job.{i}"
        results = await asyncio.gather(
            a.try_start_run(execution(f"{i}-a", job_id=job_id, state=ExecutionState.RUNNING, request_id="r")),
            b.try_start_run(execution(f"{i}-b", job_id=job_id, state=ExecutionState.RUNNING, request_id="r")),
        )
        assert results[0] is not None and results[0] == results[1]  # both callers see the one run


async def test_pg_expire_dead_replicas_uses_the_lease(make_pg: MakeStore, pg_schema: str) -> None:
    a = await make_pg("a")
    b = await make_pg("b")
    run = await b.try_start_run(execution("e-b", state=ExecutionState.RUNNING, status_text="starting"))
    assert run is not None
    await b.save_job(JobRecord(job_id="job.a", state=JobState.RUNNING, last_start=T0, execution_id="e-b"))
    own = await a.try_start_run(execution("e-a", job_id="job.own", state=ExecutionState.RUNNING))
    assert own is not None

    await b.heartbeat()
    assert await a.expire_dead_replicas(timedelta(seconds=30)) == []

    # b stops heartbeating: age its lease in the database instead of sleeping.
    await run_sql("UPDATE {s}.replicas SET last_seen = now() - interval '1 hour' WHERE replica_id = 'b'", pg_schema)
    aborted = await a.expire_dead_replicas(timedelta(seconds=30))
    assert [r.id for r in aborted] == ["e-b"]
    assert aborted[0].state is ExecutionState.ABORTED
    assert aborted[0].error == replica_stopped("b") == "interrupted: replica b stopped"
    assert aborted[0].finish_time is not None
    assert await a.get_execution("e-b") == aborted[0]
    job = (await a.load_jobs())["job.a"]
    assert job.state is JobState.ABORTED and job.status_text == "interrupted: replica b stopped"
    assert (await a.get_execution("e-a")) == own  # a's own run is not a's to expire
    assert await a.expire_dead_replicas(timedelta(seconds=30)) == []
    # The job is free again, cluster-wide.
    assert await a.try_start_run(execution("e-a2", state=ExecutionState.RUNNING)) is not None


async def test_pg_abort_interrupted_leaves_live_replicas_runs(make_pg: MakeStore, pg_schema: str) -> None:
    a = await make_pg("a")
    b = await make_pg("b")
    d = await make_pg("d")
    assert await a.try_start_run(execution("e-a", job_id="job.a", state=ExecutionState.RUNNING)) is not None
    assert await b.try_start_run(execution("e-b", job_id="job.b", state=ExecutionState.RUNNING)) is not None
    assert await d.try_start_run(execution("e-d", job_id="job.d", state=ExecutionState.RUNNING)) is not None
    await b.save_job(JobRecord(job_id="job.b", state=JobState.RUNNING, execution_id="e-b"))
    await run_sql("UPDATE {s}.replicas SET last_seen = now() - interval '1 hour' WHERE replica_id = 'd'", pg_schema)

    # "a" restarts with the same (stable) replica id: its own run and the dead d's go; live b's stays.
    await a.close()
    restarted = await make_pg("a")
    aborted = {r.id: r.error for r in await restarted.abort_interrupted(T0)}
    assert aborted == {"e-a": INTERRUPTED, "e-d": "interrupted: replica d stopped"}
    running = await restarted.get_execution("e-b")
    assert running is not None and running.state is ExecutionState.RUNNING
    assert (await restarted.load_jobs())["job.b"].state is JobState.RUNNING


async def test_pg_publish_listen_round_trip(make_pg: MakeStore) -> None:
    a = await make_pg("a")
    b = await make_pg("b")
    listening = asyncio.Event()
    async with contextlib.aclosing(b.listen_events(on_listen=listening.set)) as events:
        first = asyncio.ensure_future(anext(events))
        await asyncio.wait_for(listening.wait(), WAIT)
        await a.publish_event('{"job_id": "job.a", "state": "running"}')
        assert await asyncio.wait_for(first, WAIT) == '{"job_id": "job.a", "state": "running"}'
        big = "x" * 7000
        await b.publish_event(big)  # a replica hears its own events too
        assert await asyncio.wait_for(anext(events), WAIT) == big
    with pytest.raises(ValueError, match="8000"):
        await a.publish_event("é" * 4000)


async def test_pg_listener_reconnects_after_losing_its_connection(make_pg: MakeStore, pg_schema: str) -> None:
    a = await make_pg("a")
    listens: asyncio.Queue[None] = asyncio.Queue()
    async with contextlib.aclosing(a.listen_events(on_listen=lambda: listens.put_nowait(None))) as events:
        first = asyncio.ensure_future(anext(events))
        await asyncio.wait_for(listens.get(), WAIT)
        killed = await run_sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = %s",
            pg_schema,
            f'LISTEN "{pg_schema}.events"',
        )
        assert killed == [(True,)]
        await asyncio.wait_for(listens.get(), WAIT)  # listening again on a new connection
        await a.publish_event("after the reconnect")
        assert await asyncio.wait_for(first, WAIT) == "after the reconnect"


async def test_pg_listener_ends_when_the_store_closes(make_pg: MakeStore) -> None:
    a = await make_pg("a")
    listening = asyncio.Event()
    events = a.listen_events(on_listen=listening.set)
    nothing = asyncio.ensure_future(anext(events))
    await asyncio.wait_for(listening.wait(), WAIT)
    await a.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(nothing, WAIT)


async def test_pg_request_cancel_reaches_the_owning_replica(make_pg: MakeStore) -> None:
    a = await make_pg("a")
    b = await make_pg("b")
    assert await a.try_start_run(execution("early", job_id="job.early", state=ExecutionState.RUNNING)) is not None
    assert await a.try_start_run(execution("late", job_id="job.late", state=ExecutionState.RUNNING)) is not None
    assert await b.try_start_run(execution("bs", job_id="job.b", state=ExecutionState.RUNNING)) is not None
    flagged = await b.request_cancel("early")  # before a listens: a catches up on (re)connect
    assert flagged is not None and flagged.cancel_requested
    assert await a.pending_cancels() == ["early"]

    listening = asyncio.Event()
    async with contextlib.aclosing(a.listen_cancels(on_listen=listening.set)) as cancels:
        assert await asyncio.wait_for(anext(cancels), WAIT) == "early"
        await asyncio.wait_for(listening.wait(), WAIT)
        assert await b.request_cancel("bs") is not None  # b's own run: not for a's listener
        assert await b.request_cancel("late") is not None
        assert await asyncio.wait_for(anext(cancels), WAIT) == "late"

    # The flag is sticky: the owner's stale copy does not clear it; a finished run cannot be cancelled.
    await a.save_execution(execution("late", job_id="job.late", state=ExecutionState.CANCELLED))
    late = await a.get_execution("late")
    assert late is not None and late.cancel_requested
    assert await b.request_cancel("late") is None
    assert await b.request_cancel("unknown") is None


async def test_pg_migrations_idempotent_under_concurrent_open(pg_schema: str) -> None:
    replicas = [PostgresStateStore(PG_DSN, schema=pg_schema, replica_id=f"r{i}") for i in range(6)]
    try:
        await asyncio.gather(*(r.open() for r in replicas))
        versions = [row[0] for row in await run_sql("SELECT version FROM {s}.schema_version ORDER BY 1", pg_schema)]
        assert versions == list(range(1, len(MIGRATIONS) + 1))
        await replicas[0].close()
        await replicas[0].open()  # again, on an up-to-date schema: nothing to do
        assert len(await run_sql("SELECT version FROM {s}.schema_version", pg_schema)) == len(MIGRATIONS)
        seen = await run_sql("SELECT replica_id FROM {s}.replicas ORDER BY 1", pg_schema)
        assert [row[0] for row in seen] == [f"r{i}" for i in range(6)]
    finally:
        for r in replicas:
            await r.close()


async def test_pg_refuses_a_schema_from_a_newer_xcron(make_pg: MakeStore, pg_schema: str) -> None:
    await make_pg("a")
    await run_sql("INSERT INTO {s}.schema_version (version) VALUES (%s)", pg_schema, len(MIGRATIONS) + 1)
    with pytest.raises(StoreUnavailable, match="newer xcron"):
        await make_pg("b")


async def test_pg_pool_replaces_connections_the_server_ended(make_pg: MakeStore, pg_schema: str) -> None:
    a = await make_pg("a", pool_size=2)
    await asyncio.gather(*(a.save_job(JobRecord(job_id=f"job.{i}")) for i in range(4)))  # opens both
    killed = await run_sql(
        """SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity
           WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE %s""",
        pg_schema,
        f'%"{pg_schema}".jobs%',
    )
    assert killed == [(True,), (True,)]  # returns once each backend is gone
    assert len(await a.load_jobs()) == 4
    assert len(await asyncio.gather(*(a.load_jobs() for _ in range(4)))) == 4


async def test_pg_cancelled_callers_do_not_poison_the_pool(make_pg: MakeStore) -> None:
    a = await make_pg("a", pool_size=2)
    calls = [asyncio.ensure_future(a.claim_occurrence("job.a", "k", T0 + timedelta(seconds=i))) for i in range(20)]
    await asyncio.sleep(0)
    for call in calls[::2]:
        call.cancel()
    await asyncio.gather(*calls, return_exceptions=True)
    assert await a.claim_occurrence("job.a", "k", T0 + timedelta(days=1))
    assert len(await asyncio.gather(*(a.load_jobs() for _ in range(4)))) == 4


async def test_pg_unreachable_database_is_unavailable() -> None:
    unreachable = PostgresStateStore("host=127.0.0.1 port=1 connect_timeout=2", schema="xcron")
    with pytest.raises(StoreUnavailable):
        await unreachable.open()


def test_pg_rejects_unsafe_schema_names() -> None:
    for bad in ("", "Xcron", "x; DROP TABLE jobs", "1abc", "a" * 57):
        with pytest.raises(ValueError):
            PostgresStateStore(PG_DSN, schema=bad)


# -- PostgreSQL: fencing, deadlines, compare-and-swap --------------------------------------------


async def _age_lease(schema: str, replica_id: str) -> None:
    await run_sql(
        "UPDATE {s}.replicas SET last_seen = now() - interval '1 hour' WHERE replica_id = %s", schema, replica_id
    )


async def test_pg_an_aborted_run_stays_aborted_and_the_job_row_follows_the_newest_run(
    make_pg: MakeStore, pg_schema: str
) -> None:
    a = await make_pg("a")
    b = await make_pg("b")
    started = await b.try_start_run(execution("e-b", state=ExecutionState.RUNNING, status_text="starting"))
    assert started is not None
    assert (await a.load_jobs())["job.a"].execution_id == "e-b"  # the start points the job row at the run
    await _age_lease(pg_schema, "b")
    assert [r.id for r in await a.expire_dead_replicas(timedelta(seconds=30))] == ["e-b"]
    newer = await a.try_start_run(execution("e-a", state=ExecutionState.RUNNING, start=T0 + timedelta(minutes=1)))
    assert newer is not None

    # b comes back and reports its run COMPLETED: fenced. What the database holds is returned, and stands.
    completed = replace(started, state=ExecutionState.COMPLETED, finish_time=T0 + timedelta(minutes=2))
    with pytest.raises(RunFenced) as fenced:
        await b.save_execution(completed)
    assert fenced.value.stored.state is ExecutionState.ABORTED
    assert fenced.value.stored.error == "interrupted: replica b stopped"
    stored = await a.get_execution("e-b")
    assert stored is not None and stored.state is ExecutionState.ABORTED
    # Nor can b's stale view move the job row back to its older run.
    await b.save_job(
        JobRecord(job_id="job.a", state=JobState.COMPLETED, last_start=T0, last_finish=T0, execution_id="e-b")
    )
    job = (await a.load_jobs())["job.a"]
    assert (job.execution_id, job.state) == ("e-a", JobState.RUNNING)
    # The same record saved twice (a retry after an unknown outcome) is not a conflict.
    done = replace(newer, state=ExecutionState.COMPLETED, finish_time=T0 + timedelta(minutes=3))
    await a.save_execution(done)
    await a.save_execution(done)
    # A job row never contradicts its run's outcome.
    await a.save_job(JobRecord(job_id="job.a", state=JobState.RUNNING, execution_id="e-a"))
    assert (await a.load_jobs())["job.a"].state is JobState.RUNNING  # (the row followed the run: unchanged)


async def test_pg_a_lapsed_lease_takes_a_new_epoch_and_aborts_its_runs(make_pg: MakeStore, pg_schema: str) -> None:
    b = await make_pg("b")
    first_epoch = b.epoch
    assert first_epoch > 0
    assert await b.try_start_run(execution("e-b", state=ExecutionState.RUNNING)) is not None
    assert await b.heartbeat() == []  # a renewal within the lease changes nothing
    assert b.epoch == first_epoch

    await _age_lease(pg_schema, "b")  # b was cut off for an hour; nobody noticed
    assert not await b.claim_occurrence("job.a", "k", T0)  # no claims on a lapsed lease
    with pytest.raises(StoreUnavailable, match="valid lease"):
        await b.try_start_run(execution("e-other", job_id="job.other", state=ExecutionState.RUNNING))
    # Its own late write finds the lease lapsed: renewing records the run ABORTED, and that stands.
    with pytest.raises(RunFenced) as fenced:
        await b.save_execution(execution("e-b", state=ExecutionState.COMPLETED))
    assert fenced.value.stored.state is ExecutionState.ABORTED
    assert fenced.value.stored.error == lease_lost("b")
    assert b.epoch > first_epoch
    assert await b.claim_occurrence("job.a", "k", T0)  # renewed: b works again
    assert (await b.load_jobs())["job.a"].state is JobState.ABORTED


async def test_pg_an_expired_replica_learns_it_on_its_next_heartbeat(make_pg: MakeStore, pg_schema: str) -> None:
    a = await make_pg("a")
    b = await make_pg("b")
    assert await b.try_start_run(execution("e-b", state=ExecutionState.RUNNING)) is not None
    await _age_lease(pg_schema, "b")
    await a.expire_dead_replicas(timedelta(seconds=30))
    epoch = b.epoch
    assert await b.heartbeat() == []  # already aborted by a: nothing left to abort, but a new epoch
    assert b.epoch > epoch
    assert (await b.get_execution("e-b")).state is ExecutionState.ABORTED  # type: ignore[union-attr]


async def test_pg_claim_records_the_fire_time_once(make_pg: MakeStore, pg_schema: str) -> None:
    a = await make_pg("a")
    b = await make_pg("b")
    await a.save_schedule_records([ScheduleRecord(job_id="job.a", schedule_key="k", last_fire=T0)])
    due = datetime.now(UTC).replace(microsecond=0)
    won = await asyncio.gather(a.claim_occurrence("job.a", "k", due), b.claim_occurrence("job.a", "k", due))
    assert sorted(won) == [False, True]
    record = (await a.load_schedule_records())[("job.a", "k")]
    assert (record.last_fire, record.last_run) == (due, due)
    # An older view saved later never moves the fire time back.
    await b.save_schedule_records([ScheduleRecord(job_id="job.a", schedule_key="k", last_fire=T0)])
    assert (await a.load_schedule_records())[("job.a", "k")].last_fire == due


async def test_pg_skip_counters_add_up_across_replicas(make_pg: MakeStore) -> None:
    a = await make_pg("a")
    b = await make_pg("b")
    base = ScheduleRecord(job_id="job.a", schedule_key="k", last_fire=T0)
    await a.save_schedule_records([base])
    assert await b.load_schedule_records() == {("job.a", "k"): base}
    await a.save_schedule_records([replace(base, overlap_skipped=2)])
    await b.save_schedule_records([replace(base, overlap_skipped=1, misfire_skipped=4)])
    await a.save_schedule_records([replace(base, overlap_skipped=3)])
    record = (await a.load_schedule_records())[("job.a", "k")]
    assert (record.overlap_skipped, record.misfire_skipped) == (4, 4)
    # b learns what the others counted since it looked (so its GetJob shows the totals too), once.
    assert await b.refresh_counters() == {("job.a", "k"): (3, 0)}
    assert await b.refresh_counters() == {}
    await b.delete_schedule_records("job.a", ["k"])  # a removed schedule forgets its counters too
    assert await a.load_schedule_records() == {}


async def test_pg_schedule_document_compare_and_swap(make_pg: MakeStore) -> None:
    a = await make_pg("a")
    assert await a.load_schedule_version() == (None, 0)
    assert await a.save_schedule_xml(b"<one/>", expected_version=0) == 1
    assert await a.save_schedule_xml(b"<lost/>", expected_version=0) is None
    assert await a.save_schedule_xml(b"<two/>", expected_version=1) == 2
    assert await a.save_schedule_xml(b"<stale/>", expected_version=1) is None
    assert await a.load_schedule_version() == (b"<two/>", 2)
    assert await a.save_schedule_xml(b"<forced/>") == 3  # no expectation: an import replaces


async def test_pg_calls_to_a_silent_database_end_at_their_deadline(pg_schema: str) -> None:
    host, port = _pg_address()
    with TcpProxy(host, port) as proxy:
        store = PostgresStateStore(
            psycopg.conninfo.make_conninfo(PG_DSN, host="127.0.0.1", port=proxy.port),
            schema=pg_schema,
            call_timeout=1.0,
        )
        await store.open()
        try:
            proxy.blackhole()
            # Keepalives cannot see this (the proxy's kernel answers them); only the deadline can.
            with pytest.raises(StoreUnavailable, match=r"no answer within 1\.0 s"):
                await asyncio.wait_for(store.load_jobs(), WAIT)
            proxy.forward()
            assert await store.load_jobs() == {}  # the cut connection was discarded, a new one works
        finally:
            proxy.forward()
            await store.close()


async def test_pg_listener_notices_a_silent_connection_and_listens_again(pg_schema: str) -> None:
    host, port = _pg_address()
    with TcpProxy(host, port) as proxy:
        store = PostgresStateStore(
            psycopg.conninfo.make_conninfo(PG_DSN, host="127.0.0.1", port=proxy.port),
            schema=pg_schema,
            lease=timedelta(seconds=3),
            call_timeout=1.0,
        )
        await store.open()
        listens: asyncio.Queue[None] = asyncio.Queue()
        try:
            async with contextlib.aclosing(store.listen_events(on_listen=lambda: listens.put_nowait(None))) as events:
                first = asyncio.ensure_future(anext(events))
                await asyncio.wait_for(listens.get(), WAIT)
                connections = proxy.connections
                proxy.blackhole()
                await asyncio.to_thread(proxy.wait_for_connections, connections + 1, WAIT)  # gave up, redials
                proxy.forward()
                await asyncio.wait_for(listens.get(), WAIT)  # listening again
                await store.publish_event("after the silence")
                assert await asyncio.wait_for(first, WAIT) == "after the silence"
        finally:
            proxy.forward()
            await store.close()


def _pg_address() -> tuple[str, int]:
    info = psycopg.conninfo.conninfo_to_dict(PG_DSN)
    return str(info.get("host", "127.0.0.1")), int(str(info.get("port", 5432)))


def _entry(type_name: str, seconds: int) -> ScheduleEntry:
    schedule = Schedule(spec=IntervalSpec(every=timedelta(seconds=seconds)), start=T0)
    return ScheduleEntry(type_name=type_name, start_type="schedule", schedules=(schedule,))


async def test_pg_schedule_sources_on_two_replicas_never_lose_each_others_edits(make_pg: MakeStore) -> None:
    a = PostgresScheduleSource(await make_pg("a"))
    b = PostgresScheduleSource(await make_pg("b"))
    known: Callable[[str], bool] = lambda _: True  # noqa: E731
    await a.save(ScheduleDocument((_entry("J.One, j", 60), _entry("J.Gone, j", 5))), default_zone="UTC", known=known)
    base_a = await a.load(default_zone="UTC")
    base_b = await b.load(default_zone="UTC")
    # Both edit the same version at once: a changes One and removes Gone, b adds Two.
    edit_a = ScheduleDocument((_entry("J.One, j", 61),))
    edit_b = base_b.replace(_entry("J.Two, j", 120))
    assert base_a == base_b
    await asyncio.gather(
        a.save(edit_a, default_zone="UTC", known=known), b.save(edit_b, default_zone="UTC", known=known)
    )
    merged = await a.load(default_zone="UTC")
    assert {e.type_name: e.schedules[0].spec for e in merged.entries} == {
        "J.One, j": IntervalSpec(every=timedelta(seconds=61)),
        "J.Two, j": IntervalSpec(every=timedelta(seconds=120)),
    }
    # The same job from both at once: the later swap wins, and the document says which.
    await asyncio.gather(
        a.save(merged.replace(_entry("J.One, j", 1)), default_zone="UTC", known=known),
        b.save(merged.replace(_entry("J.One, j", 2)), default_zone="UTC", known=known),
    )
    final = await b.load(default_zone="UTC")
    assert final.find("J.One") in (_entry("J.One, j", 1), _entry("J.One, j", 2))
    assert final.find("J.Two") == _entry("J.Two, j", 120)
