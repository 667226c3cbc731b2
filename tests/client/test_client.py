"""Tests of xcron.client (sync and asyncio) against the fake JobService of conftest.py."""

from __future__ import annotations

import asyncio
import dataclasses
import pickle
import subprocess
import sys
import textwrap
import uuid
from datetime import UTC, datetime, time, timedelta, timezone
from typing import Any

import grpc
import pytest

import xcron.client
from xcron.client import (
    AbortedError,
    AsyncClient,
    CalendarSpec,
    Client,
    CronSpec,
    DayOfWeek,
    DeadlineExceededError,
    ExecutionState,
    FailedPreconditionError,
    FieldViolation,
    IntervalSpec,
    InvalidArgumentError,
    JobState,
    MisfirePolicy,
    NotFoundError,
    OverlapPolicy,
    Schedule,
    Trigger,
    UnavailableError,
    WatchEvent,
    WatchEventKind,
    XcronError,
)
from xcron.v1 import job_service_pb2 as pb

EXPECTED_PUBLIC_NAMES = {
    "AbortedError",
    "AlreadyExistsError",
    "AsyncClient",
    "CalendarSpec",
    "Caller",
    "CancelledError",
    "Client",
    "CronSpec",
    "DayOfWeek",
    "DeadlineExceededError",
    "Execution",
    "ExecutionState",
    "FailedPreconditionError",
    "FieldViolation",
    "IntervalSpec",
    "InvalidArgumentError",
    "Job",
    "JobState",
    "JobStatus",
    "MisfirePolicy",
    "NotFoundError",
    "OverlapPolicy",
    "Page",
    "ParameterDeclaration",
    "ParameterType",
    "ParameterValue",
    "PermissionDeniedError",
    "ReloadResult",
    "ResourceExhaustedError",
    "Schedule",
    "ScheduleOptions",
    "ScheduleSpec",
    "Trigger",
    "UnauthenticatedError",
    "UnavailableError",
    "WatchEvent",
    "WatchEventKind",
    "XcronError",
}


# --- the package itself ------------------------------------------------------------------------------------


def test_public_surface_does_not_drift() -> None:
    assert set(xcron.client.__all__) == EXPECTED_PUBLIC_NAMES
    public = {name for name in vars(xcron.client) if not name.startswith("_")}
    assert public - set(xcron.client.__all__) == set(), "public names missing from __all__"
    for name in xcron.client.__all__:
        assert getattr(xcron.client, name) is not None


def test_client_imports_without_server_dependencies() -> None:
    script = textwrap.dedent(
        """
        import sys

        BLOCKED = ("croniter", "lxml", "xcron.server")

        class Blocker:
            def find_spec(self, name, path=None, target=None):
                if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                    raise ImportError(f"blocked import of {name}")
                return None

        sys.meta_path.insert(0, Blocker())
        import xcron.client
        from xcron.client import AsyncClient, Client, Schedule

        Client("127.0.0.1:1").close()
        Schedule.every(60)
        loaded = [m for m in sys.modules if any(m == b or m.startswith(b + ".") for b in BLOCKED)]
        assert not loaded, loaded
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_error_hierarchy() -> None:
    assert issubclass(NotFoundError, XcronError) and issubclass(NotFoundError, LookupError)
    assert issubclass(InvalidArgumentError, ValueError)
    assert issubclass(UnavailableError, ConnectionError)
    assert issubclass(DeadlineExceededError, TimeoutError)
    assert issubclass(xcron.client.PermissionDeniedError, PermissionError)
    for name in xcron.client.__all__:
        if name.endswith("Error"):
            assert issubclass(getattr(xcron.client, name), XcronError)
    error = InvalidArgumentError(
        "bad", reason="R", domain="xcron.dev", field_violations=(FieldViolation(field="f", description="d"),)
    )
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), copy.code, copy.reason, copy.field_violations) == (
        InvalidArgumentError,
        error.code,
        "R",
        error.field_violations,
    )
    assert "INVALID_ARGUMENT: bad [R]" in str(error)


def test_schedule_models() -> None:
    assert Schedule.every(90).spec == IntervalSpec(every=timedelta(seconds=90))
    calendar = Schedule.on_days([1, DayOfWeek.FRIDAY], at=time(3, 30), time_zone="Europe/Paris")
    assert calendar.spec == CalendarSpec(days=frozenset({DayOfWeek.MONDAY, DayOfWeek.FRIDAY}), time_of_day=time(3, 30))
    assert Schedule.cron("*/5 * * * *").spec == CronSpec(expression="*/5 * * * *")
    with pytest.raises(ValueError, match="aware"):
        Schedule.every(60, start_time=datetime(2030, 1, 1))
    with pytest.raises(ValueError):
        Schedule.on_days([8], at=time(1))
    with pytest.raises(ValueError, match="whole seconds"):
        CalendarSpec(time_of_day=time(1, 2, 3, 400))
    with pytest.raises(dataclasses.FrozenInstanceError):
        calendar.time_zone = "UTC"  # type: ignore[misc]
    with pytest.raises(TypeError):
        calendar.parameters["x"] = 1  # type: ignore[index]


# --- values ------------------------------------------------------------------------------------------------


async def test_parameters_round_trip(call: Any, fake: Any) -> None:
    plus_two = timezone(timedelta(hours=2))
    parameters = {
        "flag": True,
        "off": False,
        "count": 1,
        "big": 2**63 - 1,
        "ratio": 0.25,
        "name": "caf\u00e9",
        "when": datetime(2030, 5, 6, 7, 8, 9, 123456, tzinfo=plus_two),
        "span": timedelta(days=1, seconds=5, microseconds=7),
        "negative_span": timedelta(seconds=-90),
    }
    execution = await call("run_job", "job-0", parameters)

    sent = fake.run_requests[-1].parameters
    kinds = {name: value.WhichOneof("kind") for name, value in sent.items()}
    assert kinds == {
        "flag": "bool_value",
        "off": "bool_value",
        "count": "int_value",
        "big": "int_value",
        "ratio": "double_value",
        "name": "string_value",
        "when": "timestamp_value",
        "span": "duration_value",
        "negative_span": "duration_value",
    }
    assert dict(execution.parameters) == parameters
    assert type(execution.parameters["flag"]) is bool
    assert type(execution.parameters["count"]) is int
    assert execution.parameters["when"].tzinfo is UTC
    assert execution.parameters["when"] == datetime(2030, 5, 6, 5, 8, 9, 123456, tzinfo=UTC)
    assert execution.state is ExecutionState.RUNNING
    assert execution.trigger is Trigger.MANUAL
    assert execution.start_time is not None and execution.start_time.tzinfo is UTC
    assert execution.finish_time is None


async def test_bad_parameter_values_rejected_before_sending(call: Any, fake: Any) -> None:
    with pytest.raises(ValueError, match="aware"):
        await call("run_job", "job-0", {"when": datetime(2030, 1, 1)})
    with pytest.raises(ValueError, match="64-bit"):
        await call("run_job", "job-0", {"n": 2**63})
    with pytest.raises(TypeError, match="unsupported type"):
        await call("run_job", "job-0", {"n": [1, 2]})
    assert fake.run_requests == []


async def test_run_job_request_id_and_metadata(call: Any, fake: Any) -> None:
    first = await call("run_job", "job-0")
    uuid.UUID(first.request_id)  # generated, a UUID
    second = await call("run_job", "job-1", request_id="my-id")
    assert second.request_id == "my-id"
    assert all(("x-tenant", "acme") in metadata for metadata in fake.invocation_metadata)


async def test_schedules_round_trip(call: Any, fake: Any) -> None:
    start = datetime(2030, 1, 1, 12, tzinfo=timezone(timedelta(hours=-5)))
    schedules = [
        Schedule.every(timedelta(minutes=5), start_time=start, end_time=start + timedelta(days=30)),
        Schedule.on_days(
            [DayOfWeek.MONDAY, DayOfWeek.SUNDAY],
            at=time(2, 30),
            time_zone="America/New_York",
            parameters={"dry_run": True, "limit": 10},
            misfire_policy=MisfirePolicy.RUN_ALL,
            misfire_grace_period=timedelta(hours=1),
            max_catchup_runs=3,
            overlap_policy=OverlapPolicy.BUFFER_ONE,
        ),
        Schedule.cron("0 4 * * *"),
    ]
    job = await call("set_schedule", "job-0", schedules)
    returned = [dataclasses.replace(s, next_fire_times=(), overlap_skipped_count=0) for s in job.schedules]
    assert returned == schedules
    assert job.schedules[0].next_fire_times == (datetime.fromtimestamp(1_900_000_000, UTC),)
    assert job.schedules[0].overlap_skipped_count == 3
    assert list(fake.jobs["job-0"].schedules[1].calendar.days) == [
        pb.DAY_OF_WEEK_MONDAY,
        pb.DAY_OF_WEEK_SUNDAY,
    ]
    with pytest.raises(TypeError):
        await call("set_schedule", "job-0", schedules[0])
    assert (await call("clear_schedule", "job-0")).schedules == ()


async def test_schedule_state_and_reload(call: Any) -> None:
    assert (await call("pause_schedule", "job-1")).schedules_paused is True
    assert (await call("get_job", "job-1")).schedules_paused is True
    assert (await call("resume_schedule", "job-1")).schedules_paused is False
    result = await call("reload_schedules")
    assert (result.scheduled_job_count, result.unknown_entry_count) == (2, 1)


async def test_iter_jobs_follows_pages(call: Any, fake: Any) -> None:
    page = await call("list_jobs", page_size=3)
    assert [j.id for j in page.items] == ["job-0", "job-1", "job-2"]
    assert page.next_page_token == "3"
    fake.page_tokens.clear()

    def collect() -> list[str]:
        return [job.id for job in call.client.iter_jobs()]

    if call.is_async:
        ids = [job.id async for job in call.client.iter_jobs()]
    else:
        ids = await asyncio.to_thread(collect)
    assert ids == ["job-0", "job-1", "job-2", "job-3", "job-4"]
    assert fake.page_tokens == ["", "2", "4"]
    job = await call("get_job", "job-3")
    assert job.state is JobState.UNSPECIFIED and job.name == "Job-3"


async def test_list_and_get_executions(call: Any) -> None:
    for _ in range(3):
        await call("run_job", "job-2")
    page = await call("list_executions", "job-2")
    assert [e.id for e in page.items] == ["exec-3", "exec-2"] and page.next_page_token == "2"
    assert (await call("get_execution", "exec-1")).job_id == "job-2"


# --- errors ------------------------------------------------------------------------------------------------


async def test_invalid_argument_carries_details(call: Any) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        await call("get_job", "invalid id!")
    error = caught.value
    assert isinstance(error, ValueError)
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert error.message == "job_id is malformed"
    assert (error.reason, error.domain, dict(error.metadata)) == (
        "INVALID_JOB_ID",
        "xcron.dev",
        {"where": "fake"},
    )
    assert error.field_violations == (FieldViolation(field="job_id", description="must match [a-z0-9.-]+"),)
    assert isinstance(error.__cause__, grpc.RpcError)


async def test_not_found_is_a_lookup_error(call: Any) -> None:
    with pytest.raises(LookupError) as caught:
        await call("get_job", "nope")
    assert isinstance(caught.value, NotFoundError)
    assert caught.value.reason == "JOB_NOT_FOUND"
    assert caught.value.field_violations == ()


async def test_other_codes(call: Any) -> None:
    with pytest.raises(AbortedError, match="already running"):
        await call("run_job", "job-4")
    with pytest.raises(FailedPreconditionError) as caught:
        await call("cancel_job", "job-0", execution_id="exec-9")
    assert caught.value.reason == "JOB_NOT_RUNNING"
    with pytest.raises(UnavailableError) as unavailable:
        await call("get_job", "unavailable")
    assert isinstance(unavailable.value, ConnectionError)
    assert (unavailable.value.reason, unavailable.value.domain) == (None, None)


async def test_unreachable_server_is_unavailable() -> None:
    with Client("127.0.0.1:1", timeout=5) as client, pytest.raises(UnavailableError):
        await asyncio.to_thread(client.get_job, "job-0")
    async with AsyncClient("127.0.0.1:1", timeout=5) as async_client:
        with pytest.raises(UnavailableError):
            await async_client.get_job("job-0")


# --- channels ----------------------------------------------------------------------------------------------


async def test_channel_passed_in_is_not_closed(fake: Any) -> None:
    channel = grpc.insecure_channel(fake.target)
    try:
        with Client(channel=channel) as client:
            response = await asyncio.to_thread(client.stub.GetJob, pb.GetJobRequest(job_id="job-0"))
            assert response.job.id == "job-0"
        job = await asyncio.to_thread(Client(channel=channel).get_job, "job-1")
        assert job.id == "job-1"
    finally:
        channel.close()

    async with grpc.aio.insecure_channel(fake.target) as aio_channel:
        async with AsyncClient(channel=aio_channel) as async_client:
            assert (await async_client.stub.GetJob(pb.GetJobRequest(job_id="job-0"))).job.id == "job-0"
        assert (await AsyncClient(channel=aio_channel).get_job("job-2")).id == "job-2"


# --- watching ----------------------------------------------------------------------------------------------


async def test_watch_jobs_sync_yields_events_and_close_cancels(fake: Any) -> None:
    def consume(client: Client) -> list[WatchEvent]:
        events = client.watch_jobs(["job-0"])
        received = [next(events), next(events)]
        events.close()
        return received

    with Client(fake.target) as client:
        consumer = asyncio.create_task(asyncio.to_thread(consume, client))
        await fake.watch_subscribed.wait()
        execution = pb.Execution(id="exec-7", job_id="job-0")
        fake.push(fake.status(execution, pb.JOB_STATE_RUNNING))
        snapshot, changes = await consumer
        await asyncio.wait_for(fake.watch_cancelled.wait(), 10)

    assert snapshot.kind is WatchEventKind.SNAPSHOT
    assert [s.job_id for s in snapshot.statuses] == ["job-0"]
    assert changes.kind is WatchEventKind.CHANGES and changes.sequence == 1
    (status,) = changes.statuses
    assert (status.job_id, status.state, status.execution_id, status.sequence) == (
        "job-0",
        JobState.RUNNING,
        "exec-7",
        1,
    )


async def test_watch_jobs_async_yields_events_and_aclose_cancels(fake: Any) -> None:
    async with AsyncClient(fake.target) as client:
        events = client.watch_jobs()
        snapshot = await anext(events)
        assert snapshot.kind is WatchEventKind.SNAPSHOT and len(snapshot.statuses) == 5
        fake.push(fake.status(pb.Execution(id="exec-8", job_id="job-3"), pb.JOB_STATE_COMPLETED))
        changes = await anext(events)
        assert changes.statuses[0].state is JobState.COMPLETED
        assert not fake.watch_cancelled.is_set()
        await events.aclose()
        await asyncio.wait_for(fake.watch_cancelled.wait(), 10)


async def test_watch_jobs_error_mid_stream_is_mapped(call: Any, fake: Any) -> None:
    def consume(client: Client) -> WatchEvent:
        events = client.watch_jobs(["job-0"])
        first = next(events)
        list(events)  # raises when the server fails the stream
        return first

    async def consume_async(client: AsyncClient) -> WatchEvent:
        events = client.watch_jobs(["job-0"])
        first = await anext(events)
        async for _ in events:
            pass
        return first

    consumer = asyncio.create_task(
        consume_async(call.client) if call.is_async else asyncio.to_thread(consume, call.client)
    )
    await fake.watch_subscribed.wait()
    fake.fail_watchers()
    with pytest.raises(NotFoundError) as caught:
        await consumer
    assert caught.value.reason == "JOB_REMOVED"


# --- run_and_wait ------------------------------------------------------------------------------------------


async def test_run_and_wait_returns_the_finished_execution(call: Any, fake: Any) -> None:
    release = asyncio.Event()
    ran = asyncio.Event()

    async def finish_later(execution: pb.Execution) -> None:
        async def later() -> None:
            await release.wait()
            fake.finish(execution.id)
            fake.push(fake.status(execution, pb.JOB_STATE_COMPLETED))

        fake.watchers_at_run = len(fake.watchers)
        fake.push(fake.status(execution, pb.JOB_STATE_RUNNING))
        fake.background = asyncio.create_task(later())
        ran.set()

    fake.on_run = finish_later
    waiter = asyncio.create_task(call("run_and_wait", "job-1", {"n": 1}, timeout=30))
    await ran.wait()
    assert fake.watchers_at_run == 1, "the watch stream must be open before RunJob"
    assert fake.calls[:2] == ["WatchJobs", "RunJob"]
    assert not waiter.done()
    release.set()
    execution = await waiter
    assert execution.id == "exec-1"
    assert execution.state is ExecutionState.COMPLETED
    assert execution.status_text == "full record"
    assert execution.finish_time is not None
    assert execution.parameters == {"n": 1}
    await asyncio.wait_for(fake.watch_ended.wait(), 10)


async def test_run_and_wait_when_the_job_finished_before_run_returned(call: Any, fake: Any) -> None:
    async def finish_at_once(execution: pb.Execution) -> None:
        fake.push(fake.status(execution, pb.JOB_STATE_RUNNING))
        fake.finish(execution.id, pb.EXECUTION_STATE_ABORTED)
        fake.push(fake.status(execution, pb.JOB_STATE_ABORTED))

    fake.on_run = finish_at_once
    execution = await call("run_and_wait", "job-1", timeout=30)
    assert (execution.id, execution.state) == ("exec-1", ExecutionState.ABORTED)
    assert fake.calls.count("GetExecution") == 1


async def test_run_and_wait_when_a_later_run_hides_the_end(call: Any, fake: Any) -> None:
    async def coalesced(execution: pb.Execution) -> None:
        # Our execution ended and a scheduled one started before the reader caught up: only the latter shows.
        fake.finish(execution.id)
        fake.push(fake.status(pb.Execution(id="exec-99", job_id=execution.job_id), pb.JOB_STATE_RUNNING))

    fake.on_run = coalesced
    execution = await call("run_and_wait", "job-2", timeout=30)
    assert (execution.id, execution.state) == ("exec-1", ExecutionState.COMPLETED)


async def test_run_and_wait_keeps_waiting_when_the_check_says_running(call: Any, fake: Any) -> None:
    async def fresh_snapshot(execution: pb.Execution) -> None:
        async def finish_after_the_check() -> None:
            await fake.get_execution_called.wait()
            fake.finish(execution.id, pb.EXECUTION_STATE_CANCELLED)
            fake.push(fake.status(execution, pb.JOB_STATE_CANCELLED))

        fake.push(kind=pb.WATCH_EVENT_KIND_SNAPSHOT)  # a fresh snapshot not showing our job: check it
        fake.background = asyncio.create_task(finish_after_the_check())

    fake.on_run = fresh_snapshot
    execution = await call("run_and_wait", "job-2", timeout=30)
    assert execution.state is ExecutionState.CANCELLED
    assert fake.calls.count("GetExecution") == 2  # the check (still running), then the final record


async def test_run_and_wait_asks_again_when_the_record_lags_the_end_the_stream_showed(call: Any, fake: Any) -> None:
    async def end_shown_before_recorded(execution: pb.Execution) -> None:
        async def record_after_the_first_read() -> None:
            await fake.get_execution_called.wait()
            fake.finish(execution.id)

        fake.push(fake.status(execution, pb.JOB_STATE_COMPLETED))  # the store's record still says RUNNING
        fake.background = asyncio.create_task(record_after_the_first_read())

    fake.on_run = end_shown_before_recorded
    execution = await call("run_and_wait", "job-1", timeout=30)
    assert (execution.id, execution.state) == ("exec-1", ExecutionState.COMPLETED)
    assert execution.status_text == "full record"
    assert fake.calls.count("GetExecution") == 2  # the lagging record, then the ended one


async def test_run_and_wait_gives_up_at_its_deadline_when_the_record_never_ends(call: Any, fake: Any) -> None:
    async def end_never_recorded(execution: pb.Execution) -> None:
        fake.push(fake.status(execution, pb.JOB_STATE_COMPLETED))

    fake.on_run = end_never_recorded
    with pytest.raises(DeadlineExceededError):  # from the last read's own deadline, or the check after it
        await call("run_and_wait", "job-1", timeout=0.5)
    assert fake.calls.count("GetExecution") >= 2  # asked again while time was left


async def test_run_and_wait_retry_with_the_same_request_id(call: Any, fake: Any) -> None:
    async def finish_at_once(execution: pb.Execution) -> None:
        fake.finish(execution.id)
        fake.push(fake.status(execution, pb.JOB_STATE_COMPLETED))

    fake.on_run = finish_at_once
    first = await call("run_and_wait", "job-0", request_id="retry-me", timeout=30)
    fake.on_run = None
    again = await call("run_and_wait", "job-0", request_id="retry-me", timeout=30)
    assert again == first and again.state is ExecutionState.COMPLETED
    assert len(fake.executions) == 1


async def test_run_and_wait_timeout(call: Any, fake: Any) -> None:
    with pytest.raises(DeadlineExceededError) as caught:
        await call("run_and_wait", "job-3", timeout=0.5)
    assert isinstance(caught.value, TimeoutError)
    assert fake.executions["exec-1"].state == pb.EXECUTION_STATE_RUNNING
    await asyncio.wait_for(fake.watch_ended.wait(), 10)


async def test_run_and_wait_run_error_is_raised(call: Any, fake: Any) -> None:
    with pytest.raises(AbortedError):
        await call("run_and_wait", "job-4", timeout=30)
    await asyncio.wait_for(fake.watch_cancelled.wait(), 10)
