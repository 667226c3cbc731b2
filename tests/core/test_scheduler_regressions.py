"""Regression tests for defects a review found in the scheduler, executor and job manager.

Each one failed before its fix. They run on the fake clock; "nothing ran" is read from the state
store after `settled()` (every run the scheduler starts is saved before it returns)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from core_harness import START, Gate, Harness, Stuck, Tick

from xcron.server.core.clock import FakeClock
from xcron.server.core.errors import FailedPrecondition, InvalidArgument, LimitExceeded, StoreUnavailable
from xcron.server.core.limits import Limits
from xcron.server.core.model import (
    ExecutionState,
    IntervalSpec,
    JobSchedules,
    JobState,
    MisfirePolicy,
    OverlapPolicy,
    Schedule,
)
from xcron.server.core.observe import NullObserver
from xcron.server.core.ports import ExecutionRecord, ScheduleRecord, ScheduleWriteError
from xcron.server.core.registry import JobRegistry
from xcron.server.core.scheduler import Scheduler
from xcron.server.stores.schedules import FileScheduleSource
from xcron.server.stores.sqlite import SqliteStateStore

MIN = timedelta(minutes=1)


def every(minutes: float, **kw: object) -> Schedule:
    return Schedule(spec=IntervalSpec(every=timedelta(minutes=minutes)), start=START, **kw)  # type: ignore[arg-type]


async def scheduled_runs(harness: Harness, job_id: str = "t.tick") -> list[timedelta]:
    """Offsets from START of the scheduled runs the store holds, oldest first."""
    assert harness.manager is not None
    records = await harness.manager.list_executions(job_id, limit=100, before=None)
    return sorted(r.scheduled_time - START for r in records if r.scheduled_time is not None)


async def test_unpause_by_reload_does_not_run_what_was_missed_while_paused(harness: Harness) -> None:
    manager = await harness.start()
    await manager.set_schedules("t.tick", [every(10)])
    await manager.set_paused("t.tick", True)
    await harness.advance_to(START + 35 * MIN)
    text = harness.schedule_file.read_text()
    assert 'xc:paused="true"' in text
    harness.schedule_file.write_text(text.replace(' xc:paused="true"', ""))  # un-paused by hand
    await manager.reload()
    await manager.scheduler.settled()
    assert await scheduled_runs(harness) == []
    await harness.advance_to(START + 40 * MIN)
    assert await scheduled_runs(harness) == [40 * MIN]


async def test_concurrent_set_schedule_and_pause_both_take_effect(harness: Harness) -> None:
    manager = await harness.start()
    await manager.set_schedules("t.tick", [every(10)])
    await asyncio.gather(manager.set_schedules("t.tick", [every(5)]), manager.set_paused("t.tick", True))
    view = manager.view("t.tick")
    assert [s.spec for s, _, _ in view.schedules] == [IntervalSpec(every=5 * MIN)] and view.paused
    assert 'interval="300"' in harness.schedule_file.read_text()
    manager = await harness.restart()
    view = manager.view("t.tick")
    assert [s.spec for s, _, _ in view.schedules] == [IntervalSpec(every=5 * MIN)] and view.paused


def fail_first(monkeypatch: pytest.MonkeyPatch, target: object, name: str) -> None:
    """The first call of target.name raises StoreUnavailable, later ones go through."""
    real = getattr(target, name)
    calls = {"n": 0}

    async def flaky(*args: object) -> object:
        calls["n"] += 1
        if calls["n"] == 1:
            raise StoreUnavailable("database is locked")
        return await real(*args)

    monkeypatch.setattr(target, name, flaky)


async def test_catch_up_goes_on_in_order_after_a_failed_start(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = await harness.start()
    await manager.set_schedules("t.tick", [every(10, misfire_policy=MisfirePolicy.RUN_ALL)])
    # A scheduled start no longer waits on the store (see the next test); what still refuses one is
    # the executor (shutdown, the --max-running limit).
    real = manager.executor.start_scheduled
    calls = {"n": 0}

    def refuse_first(*args: Any) -> ExecutionRecord:
        calls["n"] += 1
        if calls["n"] == 1:
            raise LimitExceeded("1000 runs in progress, the limit is 1000")
        return real(*args)

    monkeypatch.setattr(manager.executor, "start_scheduled", refuse_first)
    await harness.advance_to(START + 35 * MIN)  # 10, 20 and 30 are due at once; 10 fails to start
    await harness.recorder.wait_for(2)
    await harness.advance_to(START + 40 * MIN)
    await harness.recorder.wait_for(3)
    got = [r.scheduled_time for r in harness.recorder.finished]
    assert got == [START + m * MIN for m in (20, 30, 40)]


async def test_a_scheduled_run_starts_even_if_the_store_refuses_its_start_and_its_end_records_it(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = await harness.start()
    await manager.set_schedules("t.tick", [every(10)])
    assert harness.store is not None
    fail_first(monkeypatch, harness.store, "save_execution")
    await harness.advance_to(START + 10 * MIN)
    (run,) = await harness.recorder.wait_for(1)
    assert run.scheduled_time == START + 10 * MIN
    await manager.executor.outcomes.settled()
    (stored,) = await manager.list_executions("t.tick", limit=10, before=None)
    assert stored.id == run.id and stored.state is ExecutionState.COMPLETED


async def test_a_failed_start_leaves_no_running_job_behind(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    manager = await harness.start()
    assert harness.store is not None
    fail_first(monkeypatch, harness.store, "save_job")
    with pytest.raises(StoreUnavailable):
        await manager.run("t.tick", {})
    assert manager.executor.running("t.tick") is None
    record = manager.view("t.tick").record
    assert record.state is JobState.NOT_YET_RUN and record.execution_id == ""
    await manager.executor.outcomes.settled()
    (stored,) = await manager.list_executions("t.tick", limit=10, before=None)
    assert stored.state is ExecutionState.ABORTED and stored.error == "the run could not start"
    assert (await manager.run("t.tick", {})).state is ExecutionState.RUNNING  # and the job can run again


@pytest.mark.parametrize("operation", ["resume", "set"])
async def test_a_state_store_failure_after_the_file_was_saved_leaves_everything_consistent(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, operation: str
) -> None:
    manager = await harness.start()
    await manager.set_schedules("t.tick", [every(10)])
    await manager.set_paused("t.tick", True)
    assert harness.store is not None

    async def broken(*args: object) -> None:
        raise StoreUnavailable("database is locked")

    monkeypatch.setattr(harness.store, "save_schedule_records", broken)
    if operation == "resume":
        await manager.set_paused("t.tick", False)  # saved in xcron.xml: reported done, and done
        assert 'xc:paused="true"' not in harness.schedule_file.read_text()
        assert not manager.view("t.tick").paused and "t.tick" not in manager.scheduler._paused
    else:
        await manager.set_schedules("t.tick", [every(5)])
        assert 'interval="300"' in harness.schedule_file.read_text()
        assert [s.spec for s, _, _ in manager.view("t.tick").schedules] == [IntervalSpec(every=5 * MIN)]


async def test_cancel_other_is_refused_for_a_job_that_cannot_be_cancelled(harness: Harness) -> None:
    manager = await harness.start()
    with pytest.raises(InvalidArgument) as refused:
        await manager.set_schedules("t.tick", [every(10), every(5, overlap_policy=OverlapPolicy.CANCEL_OTHER)])
    assert refused.value.field == "schedules[1].overlap_policy"


async def test_replacing_schedules_while_an_occurrence_is_handled_runs_it_once(harness: Harness) -> None:
    manager = await harness.start()
    a = every(10)
    await manager.set_schedules("t.tick", [a])
    await manager.scheduler.settled()
    assert harness.store is not None
    real = harness.store.save_schedule_records
    disk = asyncio.Event()  # a slow disk: saves wait until the test lets them through

    async def slow(records: object) -> None:
        await disk.wait()
        await real(records)  # type: ignore[arg-type]

    harness.store.save_schedule_records = slow  # type: ignore[method-assign]
    b = Schedule(spec=IntervalSpec(every=60 * MIN), start=START + timedelta(days=1))
    replacing = asyncio.create_task(manager.scheduler.set_job_schedules("t.tick", JobSchedules(schedules=(a, b))))
    await asyncio.sleep(0)  # it has read the records and waits for the disk
    harness.clock.set(START + 10 * MIN)  # meanwhile 08:10 comes due and is handled (its save waits too)
    for _ in range(5):
        await asyncio.sleep(0)
    disk.set()
    await replacing
    await manager.scheduler.settled()
    assert await scheduled_runs(harness) == [10 * MIN]


async def test_concurrent_run_job_calls_with_one_request_id_start_one_run(harness: Harness) -> None:
    manager = await harness.start()
    first, second = await asyncio.gather(
        manager.run("t.gate", {}, request_id="r-1"), manager.run("t.gate", {}, request_id="r-1")
    )
    assert first.id == second.id
    assert Gate.gate is not None
    Gate.gate.set()


async def test_a_run_racing_shutdown_never_starts(harness: Harness) -> None:
    manager = await harness.start()
    assert Gate.started is not None
    run = asyncio.create_task(manager.run("t.gate", {}))
    await asyncio.sleep(0)  # registered, saving its execution
    await manager.executor.shutdown(0.01)
    with pytest.raises(FailedPrecondition, match="shutting down"):
        await run
    assert not Gate.started.is_set()
    assert manager.view("t.gate").record.state is not JobState.RUNNING


async def test_a_schedule_put_back_later_starts_afresh(harness: Harness) -> None:
    manager = await harness.start()
    await manager.set_schedules("t.tick", [every(10, misfire_policy=MisfirePolicy.RUN_ALL)])
    await manager.set_schedules("t.tick", [])
    await harness.advance_to(START + 35 * MIN)
    await manager.set_schedules("t.tick", [every(10, misfire_policy=MisfirePolicy.RUN_ALL)])
    await manager.scheduler.settled()
    assert await scheduled_runs(harness) == []  # no back-fill of 10, 20, 30
    await harness.advance_to(START + 40 * MIN)
    assert await scheduled_runs(harness) == [40 * MIN]


async def test_a_buffered_occurrence_does_not_run_once_paused(harness: Harness) -> None:
    manager = await harness.start()
    await manager.set_schedules("t.gate", [every(10, overlap_policy=OverlapPolicy.BUFFER_ONE)])
    await harness.advance_to(START + 10 * MIN)
    await harness.advance_to(START + 20 * MIN)  # buffered behind the running one
    await manager.set_paused("t.gate", True)
    assert Gate.gate is not None
    Gate.gate.set()
    await harness.recorder.wait_for(1)
    await manager.scheduler.settled()
    assert await scheduled_runs(harness, "t.gate") == [10 * MIN]
    assert manager.view("t.gate").schedules[0][1].overlap_skipped == 1


async def test_cancel_other_still_works_for_a_job_that_ignores_the_request(harness: Harness) -> None:
    manager = await harness.start()
    await manager.set_schedules("t.stuck", [every(10, overlap_policy=OverlapPolicy.CANCEL_OTHER)])
    await harness.advance_to(START + 10 * MIN)
    await harness.advance_to(START + 20 * MIN)
    assert Stuck.release is not None
    Stuck.release.set()  # it finishes its work: CANCELLED, since it declares it can be cancelled
    (first,) = await harness.recorder.wait_for(1)
    assert first.state is ExecutionState.CANCELLED
    Stuck.release.set()


class NotStarted(NullObserver):
    def __init__(self) -> None:
        self.reasons: list[tuple[str, str]] = []

    def not_started(self, job_id: str, reason: str) -> None:
        self.reasons.append((job_id, reason))


async def test_an_occurrence_the_max_running_limit_refuses_is_counted_not_dropped_silently(harness: Harness) -> None:
    observer = NotStarted()
    manager = await harness.start(limits=Limits(max_running=1), observer=observer)
    await manager.run("t.gate", {})  # the one run the limit allows
    assert Gate.started is not None and Gate.gate is not None
    await Gate.started.wait()
    await manager.set_schedules("t.tick", [every(10)])
    await harness.advance_to(START + 10 * MIN)
    await harness.advance_to(START + 20 * MIN)
    ((_, record, _),) = manager.view("t.tick").schedules
    assert record.not_started == 2 and record.overlap_skipped == 0 and record.misfire_skipped == 0
    assert observer.reasons == [("t.tick", "max_running")] * 2
    assert await manager.list_executions("t.tick", limit=10, before=None) == []
    Gate.gate.set()  # once there is room, the schedule runs again
    await harness.recorder.wait_for(1)
    await harness.advance_to(START + 30 * MIN)
    runs = await harness.recorder.wait_for(2)
    assert runs[-1].job_id == "t.tick" and runs[-1].scheduled_time == START + 30 * MIN


class _ClaimsAll:
    """A cluster in which this replica wins every claim."""

    async def claim(self, job_id: str, schedule_key: str, due: object, *, run: bool = True) -> bool:
        return True


class _FirstStartFails:
    """An executor whose first start fails (bad parameters) and whose later starts stay in progress (a claim,
    a store write) until `release`; `most` is the largest number of starts in progress at once."""

    def __init__(self) -> None:
        self.observer = NullObserver()
        self.calls = 0
        self.active = 0
        self.most = 0
        self.second = asyncio.Event()
        self.release = asyncio.Event()

    def add_finish_listener(self, listener: object) -> None:
        pass

    def running(self, job_id: str) -> None:
        return None

    async def run(self, job_id: str, parameters: object, **kwargs: object) -> None:
        self.calls += 1
        if self.calls == 1:
            raise InvalidArgument("parameters", "bad")
        self.active += 1
        self.most = max(self.most, self.active)
        self.second.set()
        try:
            await self.release.wait()
        finally:
            self.active -= 1


async def test_in_a_cluster_a_failed_start_lets_one_buffered_occurrence_start_not_two(tmp_path: Path) -> None:
    """Three missed occurrences caught up (RUN_ALL) run one after another. When the first fails to start, the
    next one starts, alone: `_not_started` drained, then the `finally` of the failed start took the starting
    mark of that next one away and drained again, so a third started alongside it."""
    store = SqliteStateStore(tmp_path / "state.sqlite3")
    await store.open()
    schedule = every(10, misfire_policy=MisfirePolicy.RUN_ALL, max_catchup_runs=3)
    await store.save_schedule_records([ScheduleRecord(job_id="t.tick", schedule_key=schedule.key, last_fire=START)])
    executor = _FirstStartFails()
    scheduler = Scheduler(
        registry=JobRegistry((Tick,)),
        executor=cast(Any, executor),
        store=store,
        clock=FakeClock(START + 35 * MIN),
        default_zone="UTC",
        cluster=cast(Any, _ClaimsAll()),
    )
    try:
        await scheduler.start({"t.tick": JobSchedules(schedules=(schedule,))})
        await asyncio.wait_for(executor.second.wait(), 10)
        # The start tasks the failed one spawned have all taken their first step by now (FIFO ready queue).
        assert executor.most == 1
    finally:
        executor.release.set()
        await scheduler.stop()
        await store.close()


async def test_pause_checks_the_schedules_it_writes_again(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """A save checks only its output's structure, so the schedules PauseSchedule writes again (read from the
    file, never checked by a SetSchedule) pass check_writable first; one that fails it writes nothing."""
    manager = await harness.start()
    await manager.set_schedules("t.tick", [every(10)])
    checked: list[Schedule] = []

    def check(self: FileScheduleSource, schedule: Schedule, *, default_zone: str) -> None:
        checked.append(schedule)
        if len(checked) > 1:
            raise ScheduleWriteError("start_time", "does not read back from xcron.xml as given")

    monkeypatch.setattr(FileScheduleSource, "check_writable", check)
    await manager.set_paused("t.tick", True)
    assert checked == [every(10)]
    before = harness.schedule_file.read_bytes()
    with pytest.raises(InvalidArgument, match=r"cannot be written to xcron\.xml: does not read back"):
        await manager.set_paused("t.tick", False)
    assert harness.schedule_file.read_bytes() == before
    assert manager.view("t.tick").paused
