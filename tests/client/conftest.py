"""A small fake xcron server for the client tests: a real ``grpc.aio`` server on 127.0.0.1, port 0.

The fake keeps a few jobs and executions in memory, records what the clients sent, and lets a test push watch
events and observe the watch streams (subscribed, cancelled) through asyncio events instead of sleeps.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from xcron.client import AsyncClient, Client
from xcron.v1 import job_service_pb2 as pb
from xcron.v1 import job_service_pb2_grpc as pb_grpc

DEFAULT_PAGE_SIZE = 2
JOB_IDS = [f"job-{i}" for i in range(5)]


async def abort_rich(
    context: grpc.aio.ServicerContext,
    code: int,
    message: str,
    reason: str,
    violations: Iterable[tuple[str, str]] = (),
) -> None:
    """Abort the call with a google.rpc.Status carrying ErrorInfo, and BadRequest if there are violations."""
    status = status_pb2.Status(code=code, message=message)
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=reason, domain="xcron.dev", metadata={"where": "fake"}))
    status.details.append(info)
    violations = list(violations)
    if violations:
        bad = any_pb2.Any()
        bad.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in violations
                ]
            )
        )
        status.details.append(bad)
    await context.abort_with_status(rpc_status.to_status(status))


class FakeJobService(pb_grpc.JobServiceServicer):
    """Just enough of JobService to exercise the clients."""

    def __init__(self) -> None:
        self.target = ""
        self.jobs = {job_id: pb.Job(id=job_id, name=job_id.title()) for job_id in JOB_IDS}
        self.executions: dict[str, pb.Execution] = {}
        self.run_requests: list[pb.RunJobRequest] = []
        self.page_tokens: list[str] = []
        self.invocation_metadata: list[tuple[tuple[str, str], ...]] = []
        self.calls: list[str] = []
        self.watchers: list[asyncio.Queue[pb.WatchJobsResponse | None]] = []
        self.watch_subscribed = asyncio.Event()
        self.watch_cancelled = asyncio.Event()
        self.watch_ended = asyncio.Event()
        self.get_execution_called = asyncio.Event()
        self.sequence = 0
        self.on_run: Callable[[pb.Execution], Awaitable[None]] | None = None
        """A hook run inside RunJob, after the execution is stored and before the response is sent."""
        self._ids = itertools.count(1)

    # --- helpers for tests ---

    def status(self, execution: pb.Execution, state: pb.JobState.ValueType) -> pb.JobStatus:
        self.sequence += 1
        return pb.JobStatus(job_id=execution.job_id, state=state, execution_id=execution.id, sequence=self.sequence)

    def push(self, *statuses: pb.JobStatus, kind: pb.WatchEventKind.ValueType = pb.WATCH_EVENT_KIND_CHANGES) -> None:
        message = pb.WatchJobsResponse(kind=kind, statuses=statuses, sequence=self.sequence)
        for queue in self.watchers:
            queue.put_nowait(message)

    def fail_watchers(self) -> None:
        for queue in self.watchers:
            queue.put_nowait(None)

    def finish(
        self, execution_id: str, state: pb.ExecutionState.ValueType = pb.EXECUTION_STATE_COMPLETED
    ) -> pb.Execution:
        """Mark an execution finished in the store (the full record), without pushing anything."""
        execution = self.executions[execution_id]
        execution.state = state
        execution.finish_time.GetCurrentTime()
        execution.status_text = "full record"
        return execution

    def _record(self, name: str, context: grpc.aio.ServicerContext) -> None:
        self.calls.append(name)
        self.invocation_metadata.append(tuple((m.key, m.value) for m in context.invocation_metadata()))

    async def _job(self, job_id: str, context: grpc.aio.ServicerContext) -> pb.Job:
        if job_id == "invalid id!":
            await abort_rich(
                context,
                code_pb2.INVALID_ARGUMENT,
                "job_id is malformed",
                "INVALID_JOB_ID",
                [("job_id", "must match [a-z0-9.-]+")],
            )
        if job_id == "unavailable":
            await context.abort(grpc.StatusCode.UNAVAILABLE, "store down")
        if job_id not in self.jobs:
            await abort_rich(context, code_pb2.NOT_FOUND, f"no job {job_id!r}", "JOB_NOT_FOUND")
        return self.jobs[job_id]

    # --- JobService ---

    async def ListJobs(self, request: pb.ListJobsRequest, context: Any) -> pb.ListJobsResponse:
        self._record("ListJobs", context)
        self.page_tokens.append(request.page_token)
        start = int(request.page_token or 0)
        end = start + (request.page_size or DEFAULT_PAGE_SIZE)
        ids = sorted(self.jobs)
        return pb.ListJobsResponse(
            jobs=[self.jobs[i] for i in ids[start:end]], next_page_token=str(end) if end < len(ids) else ""
        )

    async def GetJob(self, request: pb.GetJobRequest, context: Any) -> pb.GetJobResponse:
        self._record("GetJob", context)
        return pb.GetJobResponse(job=await self._job(request.job_id, context))

    async def RunJob(self, request: pb.RunJobRequest, context: Any) -> pb.RunJobResponse:
        self._record("RunJob", context)
        self.run_requests.append(request)
        await self._job(request.job_id, context)
        if request.job_id == "job-4":
            await abort_rich(context, code_pb2.ABORTED, "job-4 is already running", "JOB_ALREADY_RUNNING")
        for earlier in self.executions.values():
            if request.request_id and earlier.request_id == request.request_id:
                return pb.RunJobResponse(execution=earlier)  # a retry: the first execution, as it is now
        execution = pb.Execution(
            id=f"exec-{next(self._ids)}",
            job_id=request.job_id,
            parameters=request.parameters,
            trigger=pb.TRIGGER_MANUAL,
            state=pb.EXECUTION_STATE_RUNNING,
            request_id=request.request_id,
        )
        execution.start_time.GetCurrentTime()
        self.executions[execution.id] = execution
        response = pb.RunJobResponse(execution=execution)  # a copy: the state as it was when it started
        if self.on_run is not None:
            await self.on_run(execution)
        return response

    async def CancelJob(self, request: pb.CancelJobRequest, context: Any) -> pb.CancelJobResponse:
        self._record("CancelJob", context)
        await self._job(request.job_id, context)
        await abort_rich(context, code_pb2.FAILED_PRECONDITION, "not running", "JOB_NOT_RUNNING")
        raise AssertionError("unreachable")

    async def SetSchedule(self, request: pb.SetScheduleRequest, context: Any) -> pb.SetScheduleResponse:
        self._record("SetSchedule", context)
        job = await self._job(request.job_id, context)
        del job.schedules[:]
        for schedule in request.schedules:
            stored = job.schedules.add()
            stored.CopyFrom(schedule)
            stored.next_fire_times.add(seconds=1_900_000_000)
            stored.overlap_skipped_count = 3
        return pb.SetScheduleResponse(job=job)

    async def PauseSchedule(self, request: pb.PauseScheduleRequest, context: Any) -> pb.PauseScheduleResponse:
        self._record("PauseSchedule", context)
        job = await self._job(request.job_id, context)
        job.schedules_paused = True
        return pb.PauseScheduleResponse(job=job)

    async def ResumeSchedule(self, request: pb.ResumeScheduleRequest, context: Any) -> pb.ResumeScheduleResponse:
        self._record("ResumeSchedule", context)
        job = await self._job(request.job_id, context)
        job.schedules_paused = False
        return pb.ResumeScheduleResponse(job=job)

    async def ReloadSchedules(self, request: pb.ReloadSchedulesRequest, context: Any) -> pb.ReloadSchedulesResponse:
        self._record("ReloadSchedules", context)
        return pb.ReloadSchedulesResponse(scheduled_job_count=2, unknown_entry_count=1)

    async def WatchJobs(self, request: pb.WatchJobsRequest, context: Any) -> AsyncIterator[pb.WatchJobsResponse]:
        self._record("WatchJobs", context)
        context.add_done_callback(self._on_watch_done)
        queue: asyncio.Queue[pb.WatchJobsResponse | None] = asyncio.Queue()
        self.watchers.append(queue)
        try:
            ids = list(request.job_ids) or sorted(self.jobs)
            snapshot = [
                pb.JobStatus(
                    job_id=i,
                    state=self.jobs[i].state,
                    execution_id=self.jobs[i].execution_id,
                    sequence=self.sequence,
                )
                for i in ids
                if i in self.jobs
            ]
            yield pb.WatchJobsResponse(kind=pb.WATCH_EVENT_KIND_SNAPSHOT, statuses=snapshot, sequence=self.sequence)
            self.watch_subscribed.set()
            while (message := await queue.get()) is not None:
                yield message
            await abort_rich(context, code_pb2.NOT_FOUND, "the watched job was removed", "JOB_REMOVED")
        except asyncio.CancelledError:  # the client went away (cancelled the call, or its deadline passed)
            self.watch_cancelled.set()
            raise
        finally:
            self.watchers.remove(queue)

    def _on_watch_done(self, context: Any) -> None:
        self.watch_ended.set()

    async def ListExecutions(self, request: pb.ListExecutionsRequest, context: Any) -> pb.ListExecutionsResponse:
        self._record("ListExecutions", context)
        await self._job(request.job_id, context)
        found = [e for e in self.executions.values() if e.job_id == request.job_id]
        start = int(request.page_token or 0)
        end = start + (request.page_size or DEFAULT_PAGE_SIZE)
        return pb.ListExecutionsResponse(
            executions=found[::-1][start:end], next_page_token=str(end) if end < len(found) else ""
        )

    async def GetExecution(self, request: pb.GetExecutionRequest, context: Any) -> pb.GetExecutionResponse:
        self._record("GetExecution", context)
        self.get_execution_called.set()
        if request.execution_id not in self.executions:
            await abort_rich(context, code_pb2.NOT_FOUND, "no such execution", "EXECUTION_NOT_FOUND")
        return pb.GetExecutionResponse(execution=self.executions[request.execution_id])

    async def GetCaller(self, request: pb.GetCallerRequest, context: Any) -> pb.GetCallerResponse:
        self._record("GetCaller", context)
        return pb.GetCallerResponse(roles=["admin"])


@pytest.fixture
async def fake() -> AsyncIterator[FakeJobService]:
    service = FakeJobService()
    server = grpc.aio.server()
    pb_grpc.add_JobServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    service.target = f"127.0.0.1:{port}"
    try:
        yield service
    finally:
        await server.stop(None)


class Caller:
    """Calls a client method the same way for both clients: awaited (asyncio) or in a thread (sync).

    The fake server runs on the test's event loop, so the blocking client must not block that loop.
    """

    def __init__(self, client: Client | AsyncClient) -> None:
        self.client = client
        self.is_async = isinstance(client, AsyncClient)

    async def __call__(self, method: str, *args: Any, **kwargs: Any) -> Any:
        function = getattr(self.client, method)
        if self.is_async:
            return await function(*args, **kwargs)
        return await asyncio.to_thread(function, *args, **kwargs)


@pytest.fixture(params=["sync", "async"])
async def call(request: pytest.FixtureRequest, fake: FakeJobService) -> AsyncIterator[Caller]:
    """A Caller on a Client or an AsyncClient connected to the fake (the test runs once with each)."""
    metadata = [("x-tenant", "acme")]
    if request.param == "sync":
        with Client(fake.target, metadata=metadata, timeout=10) as client:
            yield Caller(client)
    else:
        async with AsyncClient(fake.target, metadata=metadata, timeout=10) as async_client:
            yield Caller(async_client)
