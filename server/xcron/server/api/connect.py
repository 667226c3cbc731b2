"""JobService over Connect (JSON and binary over HTTP/1.1 and HTTP/2) and gRPC-Web, from connectrpc.

A transport adapter, not a second API, like the gRPC servicer (servicer.py): each method asks the
transport-neutral Authorizer (auth.py) with the call's headers and the method's /xcron.v1.JobService/Name
path, builds a CallContext, and calls the same JobHandlers method the gRPC servicer calls (one instance,
shared). xcron's errors become a ConnectError here, in one place, from the one status builder
(status.to_rpc_status): the same code, message and google.rpc details (ErrorInfo, BadRequest) as over
gRPC. Limits are the same too: the handlers and core enforce them, and the request size limit is
`read_max_bytes`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc
from connectrpc.code import Code
from connectrpc.compat import google_protobuf_codecs
from connectrpc.errors import ConnectError
from connectrpc.method import IdempotencyLevel, MethodInfo, StreamType
from connectrpc.request import RequestContext
from connectrpc.server import ConnectASGIApplication, Endpoint
from google.rpc import status_pb2
from grpc_health.v1 import health_pb2
from protobuf.wkt import Any as ConnectAny

from xcron.server.api.auth import AuthFailures, Authorizer, AuthRefused, Principal
from xcron.server.api.connect_gen.job_service_connect import JobServiceASGIApplication
from xcron.server.api.handlers import CallContext, JobHandlers
from xcron.server.api.status import to_rpc_status
from xcron.server.core.errors import XcronServerError
from xcron.v1 import job_service_pb2 as pb

log = logging.getLogger(__name__)
Q = TypeVar("Q")
R = TypeVar("R")

_CODES: dict[int, Code] = {
    c.value[0]: Code[c.name.replace("CANCELLED", "CANCELED")] for c in grpc.StatusCode if c is not grpc.StatusCode.OK
}
_SERVICE = pb.DESCRIPTOR.services_by_name["JobService"].full_name


def rich_connect_error(status: status_pb2.Status) -> ConnectError:
    """The ConnectError for a google.rpc.Status: same code, message and details (as Any)."""
    details = [ConnectAny(type_url=d.type_url, value=d.value) for d in status.details]
    return ConnectError(_CODES.get(status.code, Code.UNKNOWN), status.message, details)


def connect_error(error: XcronServerError) -> ConnectError:
    """xcron's error as the Connect transport sends it (the gRPC servicer sends status.to_status(error))."""
    return rich_connect_error(to_rpc_status(error))


def _internal(method: str, exc: Exception) -> ConnectError:
    """An error xcron did not foresee: logged in full here, sent as INTERNAL without its text (which may
    hold server paths or connection details)."""
    log.error("%s/%s failed", _SERVICE, method, exc_info=exc)
    return ConnectError(Code.INTERNAL, "internal error; the server's log has the details")


def call_context(ctx: RequestContext[Any, Any], principal: Principal | None) -> CallContext:
    remaining = ctx.timeout_ms
    return CallContext(
        principal=principal.name if principal is not None else "",
        peer=f"http:{ctx.client_address or 'unknown'}",
        deadline=None if remaining is None else remaining / 1000.0,
        roles=frozenset(r.value for r in principal.roles) if principal is not None else None,
    )


class _ConnectContext:
    """The part of grpc.aio.ServicerContext the gRPC health servicer uses, over a Connect call."""

    async def abort(self, code: grpc.StatusCode, details: str = "") -> NoReturn:
        raise ConnectError(_CODES.get(code.value[0], Code.UNKNOWN), details)


class ConnectJobService:
    """Implements the generated Connect protocol (connect_gen) over the transport-neutral JobHandlers."""

    def __init__(
        self,
        handlers: JobHandlers,
        authorizer: Authorizer | None,
        failures: AuthFailures | None = None,
        on_call_end: Callable[[str, str], None] | None = None,
    ) -> None:
        """`on_call_end(method, code)` counts each call as the gRPC port does (full method name, gRPC code
        name), so `xcron_rpcs_total` covers both ports."""
        self._handlers = handlers
        self._authorizer = authorizer
        self._failures = failures
        self._on_call_end = on_call_end
        self._closing = asyncio.Event()

    def _ended(self, name: str, code: str) -> None:
        if self._on_call_end is not None:
            self._on_call_end(f"{_SERVICE}/{name}", code)

    def close_streams(self) -> None:
        """Ends every WatchJobs stream cleanly (the client sees the stream end, not a reset), for shutdown."""
        self._closing.set()

    async def _call_context(self, name: str, ctx: RequestContext[Any, Any]) -> CallContext:
        principal = None
        if self._authorizer is not None:
            method = f"/{_SERVICE}/{name}"
            metadata = [("authorization", v) for v in ctx.request_headers.getall("authorization")]
            try:
                principal = await self._authorizer.check(method, metadata)
            except AuthRefused as refused:
                if self._failures is not None:
                    address = (ctx.client_address or "unknown").rsplit(":", 1)[0]
                    peer = f"http:{ctx.client_address or 'unknown'}"
                    self._failures.record(address, refused.kind, method, peer, refused.error.message)
                raise connect_error(refused.error) from None
        return call_context(ctx, principal)

    async def _unary(
        self, name: str, handler: Callable[[Q, CallContext], Awaitable[R]], request: Q, ctx: RequestContext[Any, Any]
    ) -> R:
        code = "UNKNOWN"
        try:
            call = await self._call_context(name, ctx)
            try:
                response = await handler(request, call)
            except XcronServerError as exc:
                raise connect_error(exc) from None
            except Exception as exc:
                raise _internal(name, exc) from None
            code = "OK"
            return response
        except ConnectError as exc:
            code = _grpc_code_name(exc.code)
            raise
        except asyncio.CancelledError:
            code = "CANCELLED"  # the client went away
            raise
        finally:
            self._ended(name, code)

    async def list_jobs(self, request: pb.ListJobsRequest, ctx: RequestContext[Any, Any]) -> pb.ListJobsResponse:
        return await self._unary("ListJobs", self._handlers.list_jobs, request, ctx)

    async def get_job(self, request: pb.GetJobRequest, ctx: RequestContext[Any, Any]) -> pb.GetJobResponse:
        return await self._unary("GetJob", self._handlers.get_job, request, ctx)

    async def run_job(self, request: pb.RunJobRequest, ctx: RequestContext[Any, Any]) -> pb.RunJobResponse:
        return await self._unary("RunJob", self._handlers.run_job, request, ctx)

    async def cancel_job(self, request: pb.CancelJobRequest, ctx: RequestContext[Any, Any]) -> pb.CancelJobResponse:
        return await self._unary("CancelJob", self._handlers.cancel_job, request, ctx)

    async def set_schedule(
        self, request: pb.SetScheduleRequest, ctx: RequestContext[Any, Any]
    ) -> pb.SetScheduleResponse:
        return await self._unary("SetSchedule", self._handlers.set_schedule, request, ctx)

    async def pause_schedule(
        self, request: pb.PauseScheduleRequest, ctx: RequestContext[Any, Any]
    ) -> pb.PauseScheduleResponse:
        return await self._unary("PauseSchedule", self._handlers.pause_schedule, request, ctx)

    async def resume_schedule(
        self, request: pb.ResumeScheduleRequest, ctx: RequestContext[Any, Any]
    ) -> pb.ResumeScheduleResponse:
        return await self._unary("ResumeSchedule", self._handlers.resume_schedule, request, ctx)

    async def reload_schedules(
        self, request: pb.ReloadSchedulesRequest, ctx: RequestContext[Any, Any]
    ) -> pb.ReloadSchedulesResponse:
        return await self._unary("ReloadSchedules", self._handlers.reload_schedules, request, ctx)

    async def list_executions(
        self, request: pb.ListExecutionsRequest, ctx: RequestContext[Any, Any]
    ) -> pb.ListExecutionsResponse:
        return await self._unary("ListExecutions", self._handlers.list_executions, request, ctx)

    async def get_execution(
        self, request: pb.GetExecutionRequest, ctx: RequestContext[Any, Any]
    ) -> pb.GetExecutionResponse:
        return await self._unary("GetExecution", self._handlers.get_execution, request, ctx)

    async def get_caller(self, request: pb.GetCallerRequest, ctx: RequestContext[Any, Any]) -> pb.GetCallerResponse:
        return await self._unary("GetCaller", self._handlers.get_caller, request, ctx)

    async def watch_jobs(
        self, request: pb.WatchJobsRequest, ctx: RequestContext[Any, Any]
    ) -> AsyncIterator[pb.WatchJobsResponse]:
        code = "UNKNOWN"
        try:
            async for response in self._watch_jobs(request, ctx):
                yield response
            code = "OK"
        except ConnectError as exc:
            code = _grpc_code_name(exc.code)
            raise
        except (asyncio.CancelledError, GeneratorExit):
            code = "CANCELLED"  # the client went away
            raise
        finally:
            self._ended("WatchJobs", code)

    async def _watch_jobs(
        self, request: pb.WatchJobsRequest, ctx: RequestContext[Any, Any]
    ) -> AsyncIterator[pb.WatchJobsResponse]:
        call = await self._call_context("WatchJobs", ctx)
        try:
            stream = await self._handlers.watch_jobs(request, call)
        except XcronServerError as exc:
            raise connect_error(exc) from None
        except Exception as exc:
            raise _internal("WatchJobs", exc) from None
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            while not self._closing.is_set():
                following = asyncio.ensure_future(anext(stream))
                await asyncio.wait((following, closing), return_when=asyncio.FIRST_COMPLETED)
                if not following.done():  # shutting down: end the stream ourselves
                    following.cancel()
                    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                        await following
                    return
                try:
                    yield following.result()
                except StopAsyncIteration:
                    return
        finally:
            closing.cancel()
            await stream.aclose()  # closes the watcher now


def _grpc_code_name(code: Code) -> str:
    """Connect spells one code differently from gRPC: CANCELED."""
    return "CANCELLED" if code is Code.CANCELED else code.name


def connect_app(service: ConnectJobService, *, read_max_bytes: int) -> JobServiceASGIApplication:
    return JobServiceASGIApplication(service, read_max_bytes=read_max_bytes)


class HealthASGIApplication(ConnectASGIApplication[Any]):
    """grpc.health.v1.Health/Check over Connect, answered by the gRPC health servicer (always open, as on
    the gRPC port). The health proto ships no Connect bindings, so this one method is declared here."""

    def __init__(self, health: Any) -> None:
        async def check(
            request: health_pb2.HealthCheckRequest, ctx: RequestContext[Any, Any]
        ) -> health_pb2.HealthCheckResponse:
            return await health.Check(request, _ConnectContext())

        method = MethodInfo(
            name="Check",
            service_name="grpc.health.v1.Health",
            input=health_pb2.HealthCheckRequest,
            output=health_pb2.HealthCheckResponse,
            idempotency_level=IdempotencyLevel.NO_SIDE_EFFECTS,
            stream_type=StreamType.UNARY,
        )
        super().__init__(
            service=health,
            endpoints=lambda _: {"/grpc.health.v1.Health/Check": Endpoint.unary(method=method, function=check)},
            read_max_bytes=64 * 1024,
            codecs=google_protobuf_codecs(),
        )

    @property
    def path(self) -> str:
        return "/grpc.health.v1.Health"
