"""JobService over gRPC: a thin adapter over the transport-neutral handlers (handlers.py). Each RPC builds
a CallContext from the grpc context, calls its handler, and maps xcron's errors to a gRPC status here."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias, TypeVar

import grpc

from xcron.server.api.auth import CURRENT_PRINCIPAL
from xcron.server.api.handlers import CallContext, JobHandlers
from xcron.server.api.status import to_status
from xcron.server.api.wrapping import HandlerRegistry, WrappingRegistrar, sending_encoded
from xcron.server.core.errors import XcronServerError
from xcron.server.core.manager import JobManager
from xcron.v1 import job_service_pb2 as pb
from xcron.v1 import job_service_pb2_grpc as pb_grpc

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
Q = TypeVar("Q")
R = TypeVar("R")


def call_context(context: Context) -> CallContext:
    principal = CURRENT_PRINCIPAL.get()
    return CallContext(
        principal=principal.name if principal is not None else "",
        peer=context.peer(),
        deadline=context.time_remaining(),
        roles=frozenset(r.value for r in principal.roles) if principal is not None else None,
    )


async def _unary(handler: Callable[[Q, CallContext], Awaitable[R]], request: Q, context: Context) -> R:
    """Calls a handler; xcron's errors become the call's gRPC status (status.to_status)."""
    try:
        return await handler(request, call_context(context))
    except XcronServerError as exc:
        await context.abort_with_status(to_status(exc))
        raise  # unreachable: abort_with_status raises


class Servicer(pb_grpc.JobServiceServicer):
    """Register it with add_to_server, not the generated add_JobServiceServicer_to_server: its WatchJobs yields
    encoded bytes, which the generated serializer would refuse."""

    def __init__(self, manager: JobManager) -> None:
        self.handlers = JobHandlers(manager)

    async def ListJobs(self, request: pb.ListJobsRequest, context: Context) -> pb.ListJobsResponse:
        return await _unary(self.handlers.list_jobs, request, context)

    async def GetJob(self, request: pb.GetJobRequest, context: Context) -> pb.GetJobResponse:
        return await _unary(self.handlers.get_job, request, context)

    async def RunJob(self, request: pb.RunJobRequest, context: Context) -> pb.RunJobResponse:
        return await _unary(self.handlers.run_job, request, context)

    async def CancelJob(self, request: pb.CancelJobRequest, context: Context) -> pb.CancelJobResponse:
        return await _unary(self.handlers.cancel_job, request, context)

    async def SetSchedule(self, request: pb.SetScheduleRequest, context: Context) -> pb.SetScheduleResponse:
        return await _unary(self.handlers.set_schedule, request, context)

    async def PauseSchedule(self, request: pb.PauseScheduleRequest, context: Context) -> pb.PauseScheduleResponse:
        return await _unary(self.handlers.pause_schedule, request, context)

    async def ResumeSchedule(self, request: pb.ResumeScheduleRequest, context: Context) -> pb.ResumeScheduleResponse:
        return await _unary(self.handlers.resume_schedule, request, context)

    async def ReloadSchedules(self, request: pb.ReloadSchedulesRequest, context: Context) -> pb.ReloadSchedulesResponse:
        return await _unary(self.handlers.reload_schedules, request, context)

    async def ListExecutions(self, request: pb.ListExecutionsRequest, context: Context) -> pb.ListExecutionsResponse:
        return await _unary(self.handlers.list_executions, request, context)

    async def GetExecution(self, request: pb.GetExecutionRequest, context: Context) -> pb.GetExecutionResponse:
        return await _unary(self.handlers.get_execution, request, context)

    async def GetCaller(self, request: pb.GetCallerRequest, context: Context) -> pb.GetCallerResponse:
        return await _unary(self.handlers.get_caller, request, context)

    async def WatchJobs(  # type: ignore[override]  # yields WatchJobsResponse's bytes (see add_to_server)
        self, request: pb.WatchJobsRequest, context: Context
    ) -> AsyncIterator[bytes]:
        try:
            stream = await self.handlers.watch_jobs_encoded(request, call_context(context))
        except XcronServerError as exc:
            await context.abort_with_status(to_status(exc))
            return
        try:
            async for response in stream:
                yield response
        finally:
            await stream.aclose()  # closes the watcher now, not when the generator is collected


WATCH_JOBS = "/xcron.v1.JobService/WatchJobs"


def add_to_server(servicer: Servicer, registrar: HandlerRegistry) -> None:
    """Registers JobService with `registrar` (a grpc.aio server, or a registrar in front of one). WatchJobs
    yields its messages already encoded (a batch that many watchers share is encoded once, not once per
    stream), so its handler sends bytes as they are."""
    pb_grpc.add_JobServiceServicer_to_server(servicer, WrappingRegistrar(registrar, _sending_encoded_watch))


def _sending_encoded_watch(method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    return sending_encoded(handler) if method == WATCH_JOBS else handler
