"""The scheduler on a fake clock, against a real SQLite store and xcron.xml on disk.

Includes one regression test per SanteDB scheduler defect (shared/santedb/FORMAT.md)."""

from __future__ import annotations

import asyncio
import errno
import os
from datetime import UTC, datetime, time, timedelta

import pytest
from core_harness import START, Gate, Harness, Stuck

from xcron.server.core.errors import Conflict, StoreUnavailable
from xcron.server.core.model import (
    CalendarSpec,
    CronSpec,
    ExecutionState,
    IntervalSpec,
    JobState,
    MisfirePolicy,
    OverlapPolicy,
    Schedule,
    Trigger,
)

MIN = timedelta(minutes=1)


def every(minutes: float, **kw: object) -> Schedule:
    return Schedule(spec=IntervalSpec(every=timedelta(minutes=minutes)), start=START, **kw)  # type: ignore[arg-type]


async def test_defect1_interval_fires_exactly_on_time_not_on_a_polling_tick(harness: Harness) -> None:
    manager = await harness.start()
    await manager.set_schedules("t.tick", [every(15)])
    for k in (1, 2, 3):
        await harness.advance_to(START + k * 15 * MIN)
    runs = await harness.recorder.wait_for(3)
    assert [r.scheduled_time for r in runs] == [START + k * 15 * MIN for k in (1, 2, 3)]
    assert [r.start_time for r in runs] == [r.scheduled_time for r in runs]  # no lateness at all
    assert all(r.trigger is Trigger.SCHEDULE for r in runs)


async def test_scheduler_sleeps_until_the_next_due_time_without_polling(harness: Harness) -> None:
    manager = await harness.start()
    await manager.set_schedules("t.tick", [every(60)])
    await manager.scheduler.settled()
    # One sleeper, set for the due time itself: nothing wakes up in between to poll.
    assert harness.clock.sleeper_count == 1
    assert harness.clock._sleepers[0][0] == START + 60 * MIN
    await harness.advance_to(START + 59 * MIN)
    assert harness.recorder.finished == []


async def test_defect2_restart_does_not_refire_interval_jobs(harness: Harness) -> None:
    manager = await harness.start()
    await manager.set_schedules("t.tick", [every(60)])
    await harness.advance_to(START + 60 * MIN)
    await harness.recorder.wait_for(1)
    harness.clock.set(START + 90 * MIN)
    manager = await harness.restart()
    await manager.scheduler.settled()
    history = await manager.list_executions("t.tick", limit=10, before=None)
    assert len(history) == 1  # nothing fired because of the restart
    await harness.advance_to(START + 120 * MIN)
    runs = await harness.recorder.wait_for(1)
    assert runs[0].scheduled_time == START + 120 * MIN


def paris_monday_0930(policy: MisfirePolicy = MisfirePolicy.RUN_ONCE, **kw: object) -> Schedule:
    return Schedule(
        spec=CalendarSpec(days=frozenset({1}), time_of_day=time(9, 30)),
        start=START,
        time_zone="Europe/Paris",
        misfire_policy=policy,
        **kw,  # type: ignore[arg-type]
    )


async def test_defect3_missed_calendar_time_runs_once_after_restart_in_its_zone(harness: Harness) -> None:
    manager = await harness.start()
    await manager.set_schedules("t.tick", [paris_monday_0930()])
    await harness.stop()
    harness.clock.set(datetime(2026, 3, 2, 9, 5, tzinfo=UTC))  # 10:05 in Paris; 09:30 (08:30Z) was missed
    manager = await harness.start()
    runs = await harness.recorder.wait_for(1)
    assert runs[0].scheduled_time == datetime(2026, 3, 2, 8, 30, tzinfo=UTC)
    assert runs[0].start_time == datetime(2026, 3, 2, 9, 5, tzinfo=UTC)
    view = manager.view("t.tick")
    (_, _, next_times) = view.schedules[0]
    assert next_times[0] == datetime(2026, 3, 9, 8, 30, tzinfo=UTC)


async def test_misfire_skip_counts_and_does_not_run(harness: Harness) -> None:
    manager = await harness.start()
    await manager.set_schedules("t.tick", [paris_monday_0930(MisfirePolicy.SKIP)])
    await harness.stop()
    harness.clock.set(datetime(2026, 3, 2, 9, 5, tzinfo=UTC))
    manager = await harness.start()
    await manager.scheduler.settled()
    assert await manager.list_executions("t.tick", limit=10, before=None) == []
    (_, record, _) = manager.view("t.tick").schedules[0]
    assert record.misfire_skipped == 1


async def test_misfire_run_all_is_bounded_and_runs_in_order(harness: Harness) -> None:
    manager = await harness.start()
    await manager.set_schedules("t.tick", [every(10, misfire_policy=MisfirePolicy.RUN_ALL, max_catchup_runs=3)])
    await harness.stop()
    harness.clock.set(START + 65 * MIN)  # six occurrences missed (10..60)
    manager = await harness.start()
    runs = await harness.recorder.wait_for(3)
    assert [r.scheduled_time for r in runs] == [START + m * MIN for m in (40, 50, 60)]
    (_, record, _) = manager.view("t.tick").schedules[0]
    assert record.misfire_skipped == 3


async def test_misfire_grace_drops_old_occurrences(harness: Harness) -> None:
    manager = await harness.start()
    await manager.set_schedules("t.tick", [every(60, misfire_grace=timedelta(minutes=30))])
    await harness.stop()
    harness.clock.set(START + 100 * MIN)  # the 60-minute occurrence is 40 minutes late: beyond grace
    manager = await harness.start()
    await manager.scheduler.settled()
    assert await manager.list_executions("t.tick", limit=10, before=None) == []
    harness.clock.set(START + 150 * MIN)
    manager = await harness.restart()
    runs = await harness.recorder.wait_for(1)  # 120 is 30 minutes late: within grace
    assert runs[0].scheduled_time == START + 120 * MIN


async def test_defect4_failed_save_changes_nothing(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    manager = await harness.start()
    await manager.set_schedules("t.tick", [every(60)])
    before = harness.schedule_file.read_bytes()

    def disk_full(*args: object, **kw: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(StoreUnavailable, match="No space left on device"):
        await manager.set_schedules("t.tick", [every(5)])
    assert harness.schedule_file.read_bytes() == before
    (schedule, _, next_times) = manager.view("t.tick").schedules[0]
    assert schedule.spec == IntervalSpec(every=timedelta(minutes=60))
    assert next_times[0] == START + 60 * MIN
    assert [p.name for p in harness.tmp.iterdir() if p.name.startswith(".xcron")] == []


async def test_defect5_run_interrupted_by_a_crash_is_aborted_not_reset(harness: Harness) -> None:
    manager = await harness.start()
    record = await manager.run("t.gate", {})
    assert Gate.started is not None
    await Gate.started.wait()
    # A crash: the process is gone without recording the end of the run.
    assert harness.store is not None
    await manager.scheduler.stop()
    await harness.store.close()
    harness.manager = None
    manager = await harness.start()
    execution = await manager.get_execution(record.id)
    assert execution.state is ExecutionState.ABORTED
    assert execution.error == "interrupted: server stopped"
    assert manager.view("t.gate").record.state is JobState.ABORTED


async def test_defect6_manual_start_of_a_running_job_is_refused(harness: Harness) -> None:
    manager = await harness.start()
    first = await manager.run("t.gate", {})
    with pytest.raises(Conflict, match="already running"):
        await manager.run("t.gate", {})
    assert Gate.gate is not None
    Gate.gate.set()
    (done,) = await harness.recorder.wait_for(1)
    assert done.id == first.id and done.state is ExecutionState.COMPLETED


@pytest.mark.parametrize(("policy", "skipped"), [(OverlapPolicy.SKIP, 2), (OverlapPolicy.BUFFER_ONE, 1)])
async def test_overlap_skip_and_buffer_one(harness: Harness, policy: OverlapPolicy, skipped: int) -> None:
    manager = await harness.start()
    await manager.set_schedules("t.gate", [every(10, overlap_policy=policy)])
    await harness.advance_to(START + 10 * MIN)
    assert manager.executor.running("t.gate") is not None
    await harness.advance_to(START + 20 * MIN)  # still running: the policy decides
    await harness.advance_to(START + 30 * MIN)
    assert Gate.gate is not None
    Gate.gate.set()
    expected = [START + 10 * MIN] if policy is OverlapPolicy.SKIP else [START + 10 * MIN, START + 20 * MIN]
    runs = await harness.recorder.wait_for(len(expected))
    await manager.scheduler.settled()
    assert [r.scheduled_time for r in runs] == expected
    assert manager.view("t.gate").schedules[0][1].overlap_skipped == skipped


async def test_overlap_cancel_other_cancels_the_running_one_and_starts(harness: Harness) -> None:
    manager = await harness.start()
    await manager.set_schedules("t.gate", [every(10, overlap_policy=OverlapPolicy.CANCEL_OTHER)])
    await harness.advance_to(START + 10 * MIN)
    await harness.advance_to(START + 20 * MIN)
    (first,) = await harness.recorder.wait_for(1)
    assert first.state is ExecutionState.CANCELLED and first.scheduled_time == START + 10 * MIN
    await manager.scheduler.settled()
    running = manager.executor.running("t.gate")
    assert running is not None and running.scheduled_time == START + 20 * MIN
    assert manager.view("t.gate").schedules[0][1].overlap_skipped == 0


async def test_overlap_cancel_other_newest_occurrence_supersedes_a_waiting_one(harness: Harness) -> None:
    manager = await harness.start()
    await manager.set_schedules("t.stuck", [every(10, overlap_policy=OverlapPolicy.CANCEL_OTHER)])
    await harness.advance_to(START + 10 * MIN)
    await harness.advance_to(START + 20 * MIN)  # asks the run to cancel; it ignores that
    await harness.advance_to(START + 30 * MIN)  # 30 replaces 20 in the queue
    assert Stuck.release is not None
    Stuck.release.set()
    await harness.recorder.wait_for(1)
    await manager.scheduler.settled()
    running = manager.executor.running("t.stuck")
    assert running is not None and running.scheduled_time == START + 30 * MIN
    assert manager.view("t.stuck").schedules[0][1].overlap_skipped == 1
    Stuck.release.set()


async def test_pause_stops_firing_and_resume_skips_the_paused_time(harness: Harness) -> None:
    manager = await harness.start()
    await manager.set_schedules("t.tick", [every(10)])
    await manager.set_paused("t.tick", True)
    assert manager.view("t.tick").paused
    assert manager.view("t.tick").schedules[0][2] == []  # no next fire times while paused
    await harness.advance_to(START + 35 * MIN)
    assert harness.recorder.finished == []
    await manager.set_paused("t.tick", False)
    await manager.scheduler.settled()
    assert harness.recorder.finished == []
    await harness.advance_to(START + 40 * MIN)
    runs = await harness.recorder.wait_for(1)
    assert runs[0].scheduled_time == START + 40 * MIN
    # Paused state lives in xcron.xml, so it survives a restart.
    await manager.set_paused("t.tick", True)
    manager = await harness.restart()
    assert manager.view("t.tick").paused


async def test_cron_and_parameters_of_a_schedule(harness: Harness) -> None:
    manager = await harness.start()
    await manager.set_schedules(
        "t.tick",
        [Schedule(spec=CronSpec(expression="*/20 * * * *"), start=START, parameters={"label": "cron"})],
    )
    await harness.advance_to(START + 20 * MIN)
    (run,) = await harness.recorder.wait_for(1)
    assert run.parameters == {"label": "cron"}
    assert run.status_text == "label=cron"


async def test_schedules_survive_restart_through_xcron_xml(harness: Harness) -> None:
    manager = await harness.start()
    schedules = [every(15), paris_monday_0930(), Schedule(spec=CronSpec(expression="0 3 * * *"), start=START)]
    await manager.set_schedules("t.tick", schedules)
    manager = await harness.restart()
    assert [s.spec for s, _, _ in manager.view("t.tick").schedules] == [s.spec for s in schedules]
    await asyncio.sleep(0)


async def test_last_fire_time_is_shown_only_once_it_fired(harness: Harness) -> None:
    manager = await harness.start()
    await manager.set_schedules("t.tick", [every(10)])
    assert manager.view("t.tick").schedules[0][1].last_run is None
    await harness.advance_to(START + 10 * MIN)
    assert manager.view("t.tick").schedules[0][1].last_run == START + 10 * MIN


async def test_limits_on_parameters_and_schedules(harness: Harness) -> None:
    from xcron.server.core.errors import InvalidArgument
    from xcron.server.core.limits import Limits

    manager = await harness.start()
    manager.limits = Limits(max_parameters=1, max_parameter_bytes=8, max_schedules_per_job=2)
    with pytest.raises(InvalidArgument, match="at most 1 are accepted"):
        await manager.run("t.tick", {"label": "a", "other": "b"})
    with pytest.raises(InvalidArgument) as too_long:
        await manager.run("t.tick", {"label": "ünïcödé!"})  # 8 characters, 12 bytes
    assert too_long.value.field == "parameters.label"
    with pytest.raises(InvalidArgument, match="at most 2 per job"):
        await manager.set_schedules("t.tick", [every(1), every(2), every(3)])
    with pytest.raises(InvalidArgument) as schedule_param:
        await manager.set_schedules("t.tick", [every(1, parameters={"label": "x" * 9})])
    assert schedule_param.value.field == "schedules[0].parameters.label"
