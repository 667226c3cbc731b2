"""The real generated client against a real server process: every RPC, end to end."""

from __future__ import annotations

import signal
import uuid
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest

from xcron.client import (
    AbortedError,
    AsyncClient,
    Client,
    DayOfWeek,
    ExecutionState,
    FailedPreconditionError,
    InvalidArgumentError,
    JobState,
    NotFoundError,
    Schedule,
    Trigger,
    WatchEventKind,
)


def wait_finished(client: Client, job_id: str, execution_id: str) -> Any:
    """Follows the watch stream until the execution has ended; returns its record."""
    stream = client.watch_jobs([job_id])
    try:
        for event in stream:
            if any(s.execution_id == execution_id and s.state.finished for s in event.statuses):
                return client.get_execution(execution_id)
    finally:
        stream.close()
    raise AssertionError("stream ended")


@pytest.fixture
def client(server: Any) -> Any:
    with Client(server.target, timeout=20) as c:
        yield c


def test_run_with_parameters_and_wait(client: Client, tmp_path: Path) -> None:
    stamp = datetime(2026, 5, 1, 12, 30, tzinfo=UTC)
    execution = client.run_and_wait(
        "test.types",
        {"s": "hi", "i": 42, "b": True, "d": 2.5, "t": stamp, "u": timedelta(seconds=3)},
        timeout=20,
    )
    assert execution.state is ExecutionState.COMPLETED
    assert execution.trigger is Trigger.MANUAL
    assert execution.parameters == {
        "s": "hi",
        "i": 42,
        "b": True,
        "d": 2.5,
        "t": stamp,
        "u": timedelta(seconds=3),
    }
    assert "i=42" in execution.status_text and execution.progress == 1.0
    job = client.get_job("test.types")
    assert job.state is JobState.COMPLETED and job.execution_id == execution.id
    assert job.last_start_time is not None and job.last_finish_time is not None


def test_watch_shows_progress_then_cancel_ends_cancelled(client: Client) -> None:
    stream = client.watch_jobs(["test.block"])
    first = next(stream)
    assert first.kind is WatchEventKind.SNAPSHOT
    assert [s.job_id for s in first.statuses] == ["test.block"]
    run = client.run_job("test.block")
    seen_running = False
    for event in stream:
        status = event.statuses[-1]
        if status.execution_id == run.id and status.state is JobState.RUNNING and status.status_text == "waiting":
            seen_running = True
            assert status.progress == 0.5
            cancelled = client.cancel_job("test.block")
            assert cancelled.cancel_requested
        if status.execution_id == run.id and status.state is JobState.CANCELLED:
            break
    stream.close()
    assert seen_running
    final = client.get_execution(run.id)
    assert final.state is ExecutionState.CANCELLED and final.finish_time is not None


def test_failing_job_is_aborted_with_its_error(client: Client) -> None:
    execution = client.run_and_wait("test.fail", {"message": "no disk"}, timeout=20)
    assert execution.state is ExecutionState.ABORTED
    assert execution.error == "RuntimeError: no disk"


def test_errors(client: Client) -> None:
    with pytest.raises(NotFoundError, match="no job with id 'nope'"):
        client.run_job("nope")
    with pytest.raises(InvalidArgumentError) as bad:
        client.run_job("test.types", {"s": "x", "i": "not an int"})
    assert [v.field for v in bad.value.field_violations] == ["parameters.i"]
    assert bad.value.reason == "INVALID_ARGUMENT"
    with pytest.raises(FailedPreconditionError, match="is not running"):
        client.cancel_job("test.block")
    with pytest.raises(FailedPreconditionError, match="cannot be cancelled"):
        client.cancel_job("test.stubborn")
    with pytest.raises(NotFoundError):
        client.get_execution(str(uuid.uuid4()))


def test_second_run_while_running_is_aborted_and_request_id_is_idempotent(client: Client, tmp_path: Path) -> None:
    release = tmp_path / "release"
    request_id = str(uuid.uuid4())
    first = client.run_job("test.block", {"release": str(release)}, request_id=request_id)
    again = client.run_job("test.block", {"release": str(release)}, request_id=request_id)
    assert again.id == first.id  # a retry, not a second run
    with pytest.raises(AbortedError, match="already running"):
        client.run_job("test.block", {"release": str(release)})
    release.touch()
    assert wait_finished(client, "test.block", first.id).state is ExecutionState.COMPLETED
    second = client.run_and_wait("test.block", {"release": str(release)}, timeout=20)
    history = client.list_executions("test.block")
    assert [e.id for e in history.items] == [second.id, first.id]  # newest first


def test_list_executions_pages(client: Client) -> None:
    ids = [client.run_and_wait("test.tick", timeout=20).id for _ in range(5)]
    page1 = client.list_executions("test.tick", page_size=2)
    page2 = client.list_executions("test.tick", page_size=2, page_token=page1.next_page_token)
    page3 = client.list_executions("test.tick", page_size=2, page_token=page2.next_page_token)
    assert [e.id for e in page1.items + page2.items + page3.items] == ids[::-1]
    assert page3.next_page_token == ""


def test_set_schedule_is_stored_and_returned(client: Client, server: Any) -> None:
    schedules = [
        Schedule.every(timedelta(minutes=15)),
        Schedule.on_days([DayOfWeek.MONDAY, DayOfWeek.FRIDAY], time(23, 0), time_zone="Europe/Paris"),
        Schedule.cron("0 3 * * *", time_zone="America/New_York", parameters={"label": "nightly"}),
    ]
    job = client.set_schedule("test.tick", schedules)
    assert len(job.schedules) == 3
    assert all(len(s.next_fire_times) == 5 for s in job.schedules)
    text = server.schedule_file.read_text()
    assert 'days="Monday Friday"' in text and 'expression="0 3 * * *"' in text
    assert client.get_job("test.tick").schedules == job.schedules
    with pytest.raises(InvalidArgumentError) as bad:
        client.set_schedule("test.tick", [Schedule.cron("0 3 * * *", time_zone="Mars/Olympus")])
    assert bad.value.field_violations[0].field == "schedules[0].time_zone"
    assert client.get_job("test.tick").schedules == job.schedules  # unchanged by the refused call
    with pytest.raises(InvalidArgumentError) as quartz:  # pasted from Quartz: seconds first, '?'
        client.set_schedule("test.tick", [Schedule.every(timedelta(hours=1)), Schedule.cron("0 0 12 ? * MON-FRI")])
    assert [v.field for v in quartz.value.field_violations] == ["schedules[1].cron.expression"]
    assert "write '0 12 * * MON-FRI 0'" in quartz.value.message and quartz.value.code.name == "INVALID_ARGUMENT"
    assert client.get_job("test.tick").schedules == job.schedules
    assert client.clear_schedule("test.tick").schedules == ()


async def test_async_client_runs_and_watches(server: Any) -> None:
    async with AsyncClient(server.target, timeout=20) as client:
        jobs = [job.id async for job in client.iter_jobs()]
        assert "test.tick" in jobs
        execution = await client.run_and_wait("test.tick", timeout=20)
        assert execution.state is ExecutionState.COMPLETED


def test_scheduled_run_survives_restart_and_fires_once(server_factory: Any) -> None:
    server = server_factory().start()
    with Client(server.target, timeout=20) as client:
        job = client.set_schedule("test.tick", [Schedule.every(timedelta(seconds=2))])
        first_due = job.schedules[0].next_fire_times[0]
        anchor = job.schedules[0].start_time
        assert anchor is not None
    assert server.stop() == 0
    server = server_factory().start()
    with Client(server.target, timeout=20) as client:
        stream = client.watch_jobs(["test.tick"])
        for event in stream:
            if any(s.state is JobState.COMPLETED for s in event.statuses):
                break
        stream.close()
        runs = client.list_executions("test.tick").items
    assert len(runs) >= 1
    scheduled = [r.scheduled_time for r in runs]
    assert all(r.trigger is Trigger.SCHEDULE for r in runs)
    assert len(set(scheduled)) == len(scheduled)  # each occurrence once
    assert all(t is not None and t >= first_due for t in scheduled)
    for run in runs:
        assert run.scheduled_time is not None and run.start_time is not None
        assert (run.scheduled_time - anchor) % timedelta(seconds=2) == timedelta(0)  # on the interval's grid
        assert run.start_time >= run.scheduled_time


def test_kill_9_mid_run_leaves_the_run_aborted_after_restart(server_factory: Any, tmp_path: Path) -> None:
    server = server_factory().start()
    with Client(server.target, timeout=20) as client:
        stream = client.watch_jobs(["test.block"])
        next(stream)
        run = client.run_job("test.block")
        for event in stream:
            if any(s.status_text == "waiting" for s in event.statuses):
                break
        stream.close()
    server.stop(signal.SIGKILL)
    server = server_factory().start()
    with Client(server.target, timeout=20) as client:
        execution = client.get_execution(run.id)
        assert execution.state is ExecutionState.ABORTED
        assert execution.error == "interrupted: server stopped"
        assert client.get_job("test.block").state is JobState.ABORTED


def test_sigterm_stops_gracefully_and_records_the_run(server_factory: Any) -> None:
    server = server_factory(extra_args=["--shutdown-grace", "0.5"]).start()
    with Client(server.target, timeout=20) as client:
        run = client.run_job("test.stubborn")  # ignores cancel requests
    assert server.stop(signal.SIGTERM) == 0
    server = server_factory().start()
    with Client(server.target, timeout=20) as client:
        execution = client.get_execution(run.id)
    assert execution.state is ExecutionState.ABORTED and execution.error == "interrupted: server stopped"


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_the_server_works_on_either_event_loop(server_factory: Any, loop: str) -> None:
    """uvloop is the default; asyncio's own loop must keep working (--event-loop asyncio)."""
    server = server_factory(extra_args=["--event-loop", loop]).start()
    with Client(server.target, timeout=20) as c:
        execution = c.run_and_wait("test.tick", {"label": loop}, timeout=20)
        assert execution.state is ExecutionState.COMPLETED
        assert c.get_job("test.tick").state is JobState.COMPLETED
    assert server.stop(signal.SIGTERM) == 0
