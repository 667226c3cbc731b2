"""The transport-neutral JobService handlers, in-process on the core harness (no socket, no grpc): what every
transport (gRPC today, HTTP/Connect next) inherits. Errors are xcron's core errors, before any status mapping."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from core_harness import START, Gate, Harness
from google.protobuf import duration_pb2

from xcron.server.api.handlers import CallContext, JobHandlers
from xcron.server.core.errors import InvalidArgument, LimitExceeded, NotFound
from xcron.v1 import job_service_pb2 as pb

CALL = CallContext(principal="alice", peer="ipv4:127.0.0.1:1", deadline=5.0)


async def handlers(harness: Harness) -> JobHandlers:
    return JobHandlers(await harness.start())


async def test_list_jobs_pages_with_an_opaque_token(harness: Harness) -> None:
    h = await handlers(harness)
    first = await h.list_jobs(pb.ListJobsRequest(page_size=2), CALL)
    assert [j.id for j in first.jobs] == ["t.gate", "t.stuck"] and first.next_page_token
    second = await h.list_jobs(pb.ListJobsRequest(page_size=2, page_token=first.next_page_token), CALL)
    assert [j.id for j in second.jobs] == ["t.tick"] and second.next_page_token == ""


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.ListJobsRequest(page_size=-1), "page_size"),
        (pb.ListJobsRequest(page_token="not-a-token"), "page_token"),
    ],
)
async def test_list_jobs_refuses_bad_paging(harness: Harness, request_: pb.ListJobsRequest, field: str) -> None:
    h = await handlers(harness)
    with pytest.raises(InvalidArgument) as caught:
        await h.list_jobs(request_, CALL)
    assert caught.value.field == field


async def test_a_token_of_another_method_is_refused(harness: Harness) -> None:
    h = await handlers(harness)
    await h.run_job(pb.RunJobRequest(job_id="t.tick"), CALL)
    await harness.recorder.wait_for(1)
    await h.run_job(pb.RunJobRequest(job_id="t.tick"), CALL)
    await harness.recorder.wait_for(2)
    page = await h.list_executions(pb.ListExecutionsRequest(job_id="t.tick", page_size=1), CALL)
    assert len(page.executions) == 1 and page.next_page_token
    with pytest.raises(InvalidArgument, match="another job"):
        await h.list_executions(pb.ListExecutionsRequest(job_id="t.gate", page_token=page.next_page_token), CALL)
    with pytest.raises(InvalidArgument) as caught:
        await h.list_jobs(pb.ListJobsRequest(page_token=page.next_page_token), CALL)
    assert caught.value.field == "page_token"
    rest = await h.list_executions(pb.ListExecutionsRequest(job_id="t.tick", page_token=page.next_page_token), CALL)
    assert len(rest.executions) == 1 and rest.executions[0].id != page.executions[0].id


async def test_get_job_checks_its_fields_and_knows_the_jobs(harness: Harness) -> None:
    h = await handlers(harness)
    with pytest.raises(InvalidArgument) as caught:
        await h.get_job(pb.GetJobRequest(job_id=""), CALL)
    assert caught.value.field == "job_id"
    with pytest.raises(InvalidArgument) as caught:
        await h.get_job(pb.GetJobRequest(job_id="t.tick", next_fire_time_count=101), CALL)
    assert caught.value.field == "next_fire_time_count"
    with pytest.raises(InvalidArgument) as caught:
        await h.get_execution(pb.GetExecutionRequest(execution_id="x" * 129), CALL)
    assert caught.value.field == "execution_id"
    with pytest.raises(NotFound):
        await h.get_job(pb.GetJobRequest(job_id="no.such.job"), CALL)
    job = (await h.get_job(pb.GetJobRequest(job_id="t.tick"), CALL)).job
    assert job.id == "t.tick" and job.name == "Tick"


async def test_run_job_converts_parameters_and_the_execution(harness: Harness) -> None:
    h = await handlers(harness)
    request = pb.RunJobRequest(job_id="t.tick", request_id="r-1")
    request.parameters["label"].string_value = "hello"
    execution = (await h.run_job(request, CALL)).execution
    assert execution.job_id == "t.tick" and execution.request_id == "r-1"
    assert execution.parameters["label"].string_value == "hello"
    (finished,) = await harness.recorder.wait_for(1)
    again = (await h.run_job(request, CALL)).execution
    assert again.id == finished.id, "the same request id names the same run"
    with pytest.raises(InvalidArgument) as caught:
        await h.run_job(pb.RunJobRequest(job_id="t.tick", request_id="r" * 129), CALL)
    assert caught.value.field == "request_id"


async def test_set_schedule_then_pause_and_resume(harness: Harness) -> None:
    h = await handlers(harness)
    schedule = pb.Schedule(interval=pb.IntervalSpec(interval=duration_pb2.Duration(seconds=600)))
    schedule.start_time.FromDatetime(START)
    job = (await h.set_schedule(pb.SetScheduleRequest(job_id="t.tick", schedules=[schedule]), CALL)).job
    assert len(job.schedules) == 1 and not job.schedules_paused
    assert (await h.pause_schedule(pb.PauseScheduleRequest(job_id="t.tick"), CALL)).job.schedules_paused
    assert not (await h.resume_schedule(pb.ResumeScheduleRequest(job_id="t.tick"), CALL)).job.schedules_paused
    with pytest.raises(NotFound):
        await h.set_schedule(pb.SetScheduleRequest(job_id="no.such.job", schedules=[schedule]), CALL)
    reloaded = await h.reload_schedules(pb.ReloadSchedulesRequest(), CALL)
    assert reloaded.scheduled_job_count == 1 and reloaded.unknown_entry_count == 0


async def test_watch_refuses_before_its_first_message_then_streams(harness: Harness) -> None:
    h = await handlers(harness)
    with pytest.raises(NotFound):
        await h.watch_jobs(pb.WatchJobsRequest(job_ids=["no.such.job"]), CALL)
    with pytest.raises(InvalidArgument) as caught:
        await h.watch_jobs(pb.WatchJobsRequest(job_ids=["t.gate", ""]), CALL)
    assert caught.value.field == "job_ids[1]"
    with pytest.raises(InvalidArgument) as caught:
        await h.watch_jobs(pb.WatchJobsRequest(after_sequence=-1), CALL)
    assert caught.value.field == "after_sequence"
    stream = await h.watch_jobs(pb.WatchJobsRequest(job_ids=["t.gate"]), CALL)
    try:
        snapshot = await asyncio.wait_for(anext(stream), 10)
        assert [s.job_id for s in snapshot.statuses] == ["t.gate"]
        await h.run_job(pb.RunJobRequest(job_id="t.gate"), CALL)
        change = await asyncio.wait_for(anext(stream), 10)
        assert change.statuses[0].state == pb.JOB_STATE_RUNNING
    finally:
        assert Gate.gate is not None
        Gate.gate.set()
        await stream.aclose()
    assert harness.manager is not None and harness.manager.bus.watcher_count == 0, "closing the stream unsubscribes"


async def test_watchers_are_limited(harness: Harness) -> None:
    manager = await harness.start()
    manager.bus.max_watchers = 1
    h = JobHandlers(manager)
    first = await h.watch_jobs(pb.WatchJobsRequest(), CALL)
    try:
        with pytest.raises(LimitExceeded):
            await h.watch_jobs(pb.WatchJobsRequest(), CALL)
    finally:
        await first.aclose()


async def test_set_schedule_validate_only_computes_without_saving(harness: Harness) -> None:
    """AIP-163: the same checks as a real call, the schedules with their next fire times, nothing saved."""
    h = await handlers(harness)
    schedule = pb.Schedule(interval=pb.IntervalSpec(interval=duration_pb2.Duration(seconds=600)))
    schedule.start_time.FromDatetime(START)
    preview = await h.set_schedule(
        pb.SetScheduleRequest(job_id="t.tick", schedules=[schedule], validate_only=True), CALL
    )
    assert preview.validated_only
    (computed,) = preview.job.schedules
    times = [t.ToDatetime(tzinfo=START.tzinfo) for t in computed.next_fire_times]
    assert times == [START + timedelta(minutes=10 * k) for k in range(1, 6)]  # from the fake clock's now
    stored = await h.get_job(pb.GetJobRequest(job_id="t.tick"), CALL)
    assert list(stored.job.schedules) == []
    bad = pb.Schedule(cron=pb.CronSpec(expression="0 0 1 * * *"))
    with pytest.raises(InvalidArgument) as caught:
        await h.set_schedule(pb.SetScheduleRequest(job_id="t.tick", schedules=[bad], validate_only=True), CALL)
    assert caught.value.field == "schedules[0].cron.expression"


async def test_get_caller_tells_the_roles(harness: Harness) -> None:
    h = await handlers(harness)
    anyone = await h.get_caller(pb.GetCallerRequest(), CallContext())
    assert (anyone.authentication_required, list(anyone.roles)) == (False, ["admin"])
    reader = await h.get_caller(pb.GetCallerRequest(), CallContext(principal="ci", roles=frozenset({"read", "run"})))
    assert (reader.authentication_required, reader.name, list(reader.roles)) == (True, "ci", ["read", "run"])
