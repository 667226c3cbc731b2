"""Reliability regressions (issue 12): outcomes the store refuses are never lost, refused or cancelled
starts leave no RUNNING rows, nothing touches the store once it is closed, and progress storms are
coalesced at the source. Each failed before its fix."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from core_harness import Gate, Harness, Stuck, Tick, in_process_config

from xcron.server.core.errors import FailedPrecondition, StoreUnavailable
from xcron.server.core.events import JobStatus
from xcron.server.core.jobs import Job, JobContext, Parameter, ParameterType
from xcron.server.core.model import ExecutionState, JobState
from xcron.server.core.ports import JobRecord
from xcron.server.stores.sqlite import SqliteStateStore

WRITES = ("save_execution", "save_job", "save_schedule_records", "delete_schedule_records")


class Refusing:
    """Makes the harness's store refuse writes (as a full disk does) while `on`, and records every call
    made after `close()` began."""

    def __init__(self, store: SqliteStateStore) -> None:
        self.on = False
        self.closed = False
        self.after_close: list[str] = []
        for name in WRITES:
            setattr(store, name, self._wrap(name, getattr(store, name)))
        close = store.close

        async def closing() -> None:
            self.closed = True
            await close()

        store.close = closing  # type: ignore[method-assign]

    def _wrap(self, name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.closed:
                self.after_close.append(name)
            if self.on and name in ("save_execution", "save_job"):
                raise StoreUnavailable("state store: database or disk is full")
            return await real(*args, **kwargs)

        return call


class HealthLog:
    def __init__(self) -> None:
        self.values: list[bool] = []
        self.healthy_again = asyncio.Event()
        self.unhealthy = asyncio.Event()

    def __call__(self, healthy: bool) -> None:
        self.values.append(healthy)
        (self.healthy_again if healthy else self.unhealthy).set()


async def test_an_outcome_the_store_refuses_stays_the_truth_and_is_written_once_it_can_be(
    harness: Harness,
) -> None:
    manager = await harness.start()
    assert harness.store is not None and Gate.gate is not None and Gate.started is not None
    refusing = Refusing(harness.store)
    health = HealthLog()
    manager.executor.add_health_listener(health)
    run = await manager.run("t.gate", {})
    await Gate.started.wait()
    refusing.on = True  # the disk fills up while the job runs
    Gate.gate.set()
    await harness.recorder.wait_for(1)
    # Memory is the truth, and every read agrees with it.
    assert manager.view("t.gate").record.state is JobState.COMPLETED
    assert (await manager.get_execution(run.id)).state is ExecutionState.COMPLETED
    listed = await manager.list_executions("t.gate", limit=10, before=None)
    assert [(r.id, r.state) for r in listed] == [(run.id, ExecutionState.COMPLETED)]
    assert health.values == [False] and not manager.executor.healthy
    stored = await harness.store.get_execution(run.id)
    assert stored is not None and stored.state is ExecutionState.RUNNING  # not written yet
    refusing.on = False  # room again
    await asyncio.wait_for(health.healthy_again.wait(), 30)
    assert health.values == [False, True] and manager.executor.healthy
    stored = await harness.store.get_execution(run.id)
    assert stored is not None and stored.state is ExecutionState.COMPLETED
    assert (await harness.store.load_jobs())["t.gate"].state is JobState.COMPLETED


async def _completed_tick(harness: Harness) -> str:
    assert harness.manager is not None
    first = await harness.manager.run("t.tick", {})
    await harness.recorder.wait_for(1)
    return first.id


async def test_a_start_refused_by_shutdown_leaves_the_previous_state_in_memory_and_store(harness: Harness) -> None:
    manager = await harness.start()
    assert harness.store is not None
    first = await _completed_tick(harness)
    run = asyncio.create_task(manager.run("t.tick", {}))
    await asyncio.sleep(0)  # registered, saving its RUNNING rows
    await manager.executor.shutdown(0.01)
    with pytest.raises(FailedPrecondition, match="shutting down"):
        await run
    record = manager.view("t.tick").record
    assert (record.state, record.execution_id) == (JobState.COMPLETED, first)
    stored = (await harness.store.load_jobs())["t.tick"]
    assert (stored.state, stored.execution_id) == (JobState.COMPLETED, first)
    history = await harness.store.list_executions("t.tick", limit=10)
    assert ExecutionState.RUNNING not in {r.state for r in history}


async def test_a_start_cancelled_while_saving_leaves_no_running_row(harness: Harness) -> None:
    manager = await harness.start()
    assert harness.store is not None
    first = await _completed_tick(harness)
    health = HealthLog()
    manager.executor.add_health_listener(health)
    run = asyncio.create_task(manager.run("t.tick", {}))
    for _ in range(2):  # the run is registered, then its RUNNING rows are handed to the store thread
        await asyncio.sleep(0)
    run.cancel()  # e.g. the scheduler stopping, or the RPC's caller going away
    with pytest.raises(asyncio.CancelledError):
        await run
    await manager.executor.shutdown(1.0)  # waits for the undo to be written
    stored = (await harness.store.load_jobs())["t.tick"]
    assert (stored.state, stored.execution_id) == (JobState.COMPLETED, first)
    history = await harness.store.list_executions("t.tick", limit=10)
    assert ExecutionState.RUNNING not in {r.state for r in history}
    assert manager.view("t.tick").record.execution_id == first
    assert health.values == []  # undoing a start is no store failure: health never flickered


async def test_nothing_touches_the_store_after_it_is_closed(harness: Harness) -> None:
    manager = await harness.start()
    assert harness.store is not None and Stuck.release is not None
    refusing = Refusing(harness.store)
    await manager.run("t.stuck", {})
    refusing.on = True  # the end of the run cannot be recorded: retries are pending at shutdown
    await harness.stop(grace=0.05)
    assert refusing.after_close == []
    # Retries live in persist tasks; none is left to fire later (so no sleep is needed to see one fire).
    left = [t.get_name() for t in asyncio.all_tasks() if not t.done() and t.get_name().startswith("xcron-persist-")]
    assert left == []
    Stuck.release.set()


class Storm(Job):
    """Reports progress COUNT times in a tight loop: from a thread, or on the loop without yielding."""

    id = "t.storm"
    name = "Storm"
    parameters = (Parameter("count", ParameterType.INT, default=20_000),)

    def run(self, ctx: JobContext) -> None:
        count = ctx.get_int("count")
        for i in range(count):
            ctx.report_progress((i + 1) / count, f"step {i + 1}")


class AsyncStorm(Storm):
    id = "t.async-storm"

    async def run(self, ctx: JobContext) -> None:  # type: ignore[override]
        count = ctx.get_int("count")
        ctx.report_progress(0.0, "first")
        for i in range(count):
            ctx.report_progress((i + 1) / count, None if i % 2 else f"step {i + 1}")
            if i % 1000 == 0:
                await asyncio.sleep(0)


@pytest.fixture
async def storm_harness(tmp_path: Path) -> AsyncIterator[Harness]:
    h = Harness(tmp=tmp_path, jobs=(Tick, Gate, Stuck, Storm, AsyncStorm))
    yield h
    if h.manager is not None:
        await h.stop()


@pytest.mark.parametrize("job_id", ["t.storm", "t.async-storm"])
async def test_a_progress_storm_is_coalesced_at_the_source(storm_harness: Harness, job_id: str) -> None:
    manager = await storm_harness.start()
    published: list[JobStatus] = []
    manager.bus.add_listener(lambda status: published.append(status) if status.job_id == job_id else None)
    watchers = [manager.bus.subscribe([job_id]) for _ in range(50)]
    run = await manager.run(job_id, {"count": 20_000})
    [finished] = await storm_harness.recorder.wait_for(1)
    assert finished.id == run.id and finished.state is ExecutionState.COMPLETED
    # The last report wins, in the record and in what is published; the text of a report without one
    # is the latest text given.
    assert (finished.progress, finished.status_text) == (
        1.0,
        "step 19999" if job_id == "t.async-storm" else "step 20000",
    )
    assert published[-1].record.state is JobState.COMPLETED and published[-1].record.status_text == finished.status_text
    # 20,000 reports, a bounded number of changes published (each one a message to every watcher).
    assert len(published) < 200, len(published)
    for watcher in watchers:
        watcher.close()


async def test_health_is_not_serving_while_an_outcome_waits_for_the_store(tmp_path: Path) -> None:
    """The whole server in-process (real gRPC on loopback), with a store that refuses writes for a while."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from xcron.server.app import XcronServer

    server = XcronServer(in_process_config(tmp_path))
    server.registry.register(Gate)
    Gate.gate, Gate.started = asyncio.Event(), asyncio.Event()
    port = await server.start()
    assert server.manager is not None and isinstance(server.store, SqliteStateStore)
    refusing = Refusing(server.store)
    health = HealthLog()
    server.manager.executor.add_health_listener(health)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            # Health's Watch streams every change of the service's status: awaited, not polled.
            changes = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service="xcron.v1.JobService")
            )
            seen = aiter(changes)

            async def next_status() -> int:
                return int((await asyncio.wait_for(anext(seen), 30)).status)

            assert await next_status() == health_pb2.HealthCheckResponse.SERVING
            await server.manager.run("t.gate", {})
            await Gate.started.wait()
            refusing.on = True
            Gate.gate.set()
            assert await next_status() == health_pb2.HealthCheckResponse.NOT_SERVING
            refusing.on = False
            assert await next_status() == health_pb2.HealthCheckResponse.SERVING
            assert health.values == [False, True]
            changes.cancel()
    finally:
        await server.stop()


async def test_no_cursor_leaves_the_store_thread(tmp_path: Path) -> None:
    """A cursor handed to the event loop is finalised there, racing the store thread's use of the same
    cached statement: SQLite's "bad parameter or other API misuse" when saving fire times under load."""
    store = SqliteStateStore(tmp_path / "state.sqlite3")
    await store.open()
    try:
        seen: list[object] = []
        real = store._run_batch

        def spy(fns: list[Callable[[Any], Any]]) -> Any:
            outcomes = real(fns)
            seen.extend(value for _, value in outcomes)
            return outcomes

        store._run_batch = spy  # type: ignore[method-assign]
        from xcron.server.core.ports import ScheduleRecord

        await store.save_schedule_records([ScheduleRecord(job_id="j", schedule_key="k")])
        await store.delete_schedule_records("j", ["k"])
        await store.save_job(JobRecord(job_id="j"))
        assert seen and not any(type(value).__name__ == "Cursor" for value in seen), seen
    finally:
        await store.close()


def _drop_triggers(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path, timeout=10, isolation_level=None)) as db:
        db.execute("DROP TRIGGER refuse_end_INSERT")
        db.execute("DROP TRIGGER refuse_end_UPDATE")


async def _sql(store: SqliteStateStore, statement: str) -> None:
    def run(conn: sqlite3.Connection) -> None:
        conn.execute(statement).close()

    await store._call(run)


@pytest.mark.parametrize("trigger", ["RunJob", "schedule"])
@pytest.mark.parametrize("refusal", ["FAIL", "ROLLBACK"])
async def test_a_read_made_while_an_outcome_is_being_refused_gets_the_outcome_not_the_stale_row(
    harness: Harness, refusal: str, trigger: str
) -> None:
    """GetExecution made just after a run ends, while the store refuses its end row (disk full): the read is
    queued behind the refused write, so the store would answer with the start's RUNNING row (FAIL: the row
    alone fails), or fail with it (ROLLBACK: the whole transaction is lost). Memory holds the outcome from
    the moment its rows are queued, and answers, as it does for every later read."""
    manager = await harness.start()
    assert harness.store is not None
    # The end's row is refused by the database itself, in the store's own batch (as a full disk refuses it).
    for event in ("INSERT", "UPDATE"):
        await _sql(
            harness.store,
            f"CREATE TRIGGER refuse_end_{event} BEFORE {event} ON executions WHEN NEW.state != 'running' "
            f"BEGIN SELECT RAISE({refusal}, 'database or disk is full'); END",
        )
    reads: list[asyncio.Task[Any]] = []

    def read_at_end(status: JobStatus) -> None:
        if status.record.state is JobState.COMPLETED:  # published before the end's rows are queued
            reads.append(asyncio.ensure_future(manager.get_execution(status.record.execution_id)))

    manager.bus.add_listener(read_at_end)
    health = HealthLog()
    manager.executor.add_health_listener(health)
    if trigger == "RunJob":
        await manager.run("t.tick", {})
    else:
        manager.executor.start_scheduled("t.tick", {"label": "none"}, datetime.now(UTC))
    await harness.recorder.wait_for(1)
    assert len(reads) == 1
    assert (await reads[0]).state is ExecutionState.COMPLETED
    harness.store.flush()  # a scheduled run's end may still be held for the commit window: it goes now
    await asyncio.wait_for(health.unhealthy.wait(), 30)  # refused: the outcome waits in memory for the store
    # Room again: the outcome is written. From a connection of its own, as the store's may be in a transaction
    # with the outcome's retry that ROLLBACK undoes whole.
    await asyncio.to_thread(_drop_triggers, harness.store.path)
    await asyncio.wait_for(health.healthy_again.wait(), 30)
    stored = await harness.store.get_execution(reads[0].result().id)
    assert stored is not None and stored.state is ExecutionState.COMPLETED
