"""Scheduled runs with the SQLite store holding their bookkeeping for a commit window (an hour here, so that
nothing below completes because the window ended): nothing that answers anyone or starts a run waits for
it, reads see it, shutdown commits it, and a refusal still makes it an unrecorded outcome, retried."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable
from datetime import timedelta

from core_harness import START, Gate, Harness

from xcron.server.core.model import ExecutionState, IntervalSpec, OverlapPolicy, Schedule
from xcron.server.core.ports import ExecutionRecord

MIN = timedelta(minutes=1)
HOUR = 3600.0


def every(minutes: float, **kw: object) -> Schedule:
    return Schedule(spec=IntervalSpec(every=timedelta(minutes=minutes)), start=START, **kw)  # type: ignore[arg-type]


async def test_held_run_rows_are_read_back_and_survive_a_stop(harness: Harness) -> None:
    manager = await harness.start()
    assert harness.store is not None
    harness.store.commit_window = HOUR
    await manager.set_schedules("t.tick", [every(10)])
    await harness.advance_to(START + 10 * MIN)  # the scheduler does not wait for its fire times' commit
    (run,) = await harness.recorder.wait_for(1)  # nor does the run's end
    stored = await harness.store.get_execution(run.id)  # a read commits what is held first
    assert stored is not None and stored.state is ExecutionState.COMPLETED
    await harness.advance_to(START + 20 * MIN)
    await harness.recorder.wait_for(2)
    manager = await harness.restart()  # the stop commits the second run's rows and fire time
    runs = await manager.list_executions("t.tick", limit=10, before=None)
    assert [(r.scheduled_time, r.state) for r in runs] == [
        (START + 20 * MIN, ExecutionState.COMPLETED),
        (START + 10 * MIN, ExecutionState.COMPLETED),
    ]
    ((_, record, _),) = manager.view("t.tick").schedules
    assert record.last_run == START + 20 * MIN


async def test_a_buffered_occurrence_starts_when_the_run_ends_not_when_its_rows_are_committed(
    harness: Harness,
) -> None:
    manager = await harness.start()
    assert harness.store is not None and Gate.gate is not None and Gate.started is not None
    harness.store.commit_window = HOUR
    await manager.set_schedules("t.gate", [every(10, overlap_policy=OverlapPolicy.BUFFER_ONE)])
    await harness.advance_to(START + 10 * MIN)
    await Gate.started.wait()
    await harness.advance_to(START + 20 * MIN)  # buffered behind the run still going
    Gate.gate.set()  # both end at once: the second starts as soon as the first has ended
    finished = await harness.recorder.wait_for(2)
    assert [r.scheduled_time for r in finished] == [START + 10 * MIN, START + 20 * MIN]


async def test_a_held_end_the_store_refuses_is_kept_and_retried(harness: Harness) -> None:
    manager = await harness.start()
    store = harness.store
    assert store is not None
    store.commit_window = HOUR
    health: list[bool] = []
    manager.executor.add_health_listener(health.append)
    real = store.save_execution

    def refuse_once(record: ExecutionRecord) -> Awaitable[None]:
        store.save_execution = real  # type: ignore[method-assign]

        def full(conn: sqlite3.Connection) -> None:
            raise sqlite3.OperationalError("database or disk is full")

        return store._write(full)  # held like the real write: it fails when the window's batch runs

    store.save_execution = refuse_once  # type: ignore[method-assign]
    await manager.set_schedules("t.tick", [every(10)])
    await harness.advance_to(START + 10 * MIN)
    (run,) = await harness.recorder.wait_for(1)
    await manager.executor.outcomes.settled()  # commits what is held: refused, kept, then written
    assert health == [False, True]
    stored = await store.get_execution(run.id)
    assert stored is not None and stored.state is ExecutionState.COMPLETED
