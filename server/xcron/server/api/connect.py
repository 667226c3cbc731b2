"""JobService over Connect (JSON and binary over HTTP/1.1 and HTTP/2) and gRPC-Web, from connectrpc.

A transport adapter, not a second API: each method authorizes the call with the same token table and
role table as the gRPC interceptor (xcron.server.api.auth), then calls the very same servicer method the
gRPC server calls. The servicer reports every error by aborting with the `grpc.Status` built by
`status.to_status` (or auth's status builders); `_ConnectContext.abort_with_status` turns that status into
a `ConnectError` with the same code, message and details (ErrorInfo, BadRequest as `Any`), in this one
place. Limits are the same too: the servicer and core enforce them, and the request size limit is
`read_max_bytes`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator
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

from xcron.server.api.auth import (
    ANY_ROLE_METHODS,
    CURRENT_PRINCIPAL,
    METHOD_ROLES,
    Role,
    TokenTable,
    bearer_token,
    permission_denied_status,
    unauthenticated_status,
)
from xcron.server.api.connect_gen.job_service_connect import JobServiceASGIApplication
from xcron.server.api.servicer import Servicer
from xcron.v1 import job_service_pb2 as pb

log = logging.getLogger(__name__)
M = TypeVar("M")

_CODES: dict[grpc.StatusCode, Code] = {
    c: Code[c.name.replace("CANCELLED", "CANCELED")] for c in grpc.StatusCode if c is not grpc.StatusCode.OK
}
_SERVICE = pb.DESCRIPTOR.services_by_name["JobService"].full_name


def connect_error(status: grpc.Status) -> ConnectError:
    """The ConnectError carrying a gRPC rich status: same code, message and google.rpc details."""
    code = _CODES.get(status.code, Code.UNKNOWN)
    rich = next((v for k, v in status.trailing_metadata or () if k == "grpc-status-details-bin"), None)
    details = []
    message = status.details or ""
    if isinstance(rich, bytes):
        parsed = status_pb2.Status.FromString(rich)
        message = parsed.message
        details = [ConnectAny(type_url=d.type_url, value=d.value) for d in parsed.details]
    return ConnectError(code, message, details)


class _ConnectContext:
    """The part of grpc.aio.ServicerContext the servicer uses, over a Connect call."""

    def __init__(self, ctx: RequestContext[Any, Any]) -> None:
        self._ctx = ctx

    async def abort_with_status(self, status: grpc.Status) -> NoReturn:
        raise connect_error(status)

    async def abort(self, code: grpc.StatusCode, details: str = "") -> NoReturn:
        raise ConnectError(_CODES.get(code, Code.UNKNOWN), details)

    def peer(self) -> str:
        return f"http:{self._ctx.client_address or 'unknown'}"

    def time_remaining(self) -> float | None:
        remaining = self._ctx.timeout_ms
        return None if remaining is None else remaining / 1000.0


class ConnectJobService:
    """Implements the generated Connect protocol (connect_gen) by calling the gRPC servicer's methods."""

    def __init__(self, servicer: Servicer, tokens: TokenTable | None) -> None:
        self._servicer = servicer
        self._tokens = tokens
        self._closing = asyncio.Event()

    def close_streams(self) -> None:
        """Ends every WatchJobs stream cleanly (the client sees the stream end, not a reset), for shutdown."""
        self._closing.set()

    async def _authorize(self, name: str, ctx: RequestContext[Any, Any]) -> None:
        if self._tokens is None:
            return
        method = f"/{_SERVICE}/{name}"
        token, problem = bearer_token([("authorization", v) for v in ctx.request_headers.getall("authorization")])
        status = None
        if token is None:
            status = unauthenticated_status(problem)
        else:
            principal = await self._tokens.authenticate(token)
            if principal is None:
                status = unauthenticated_status("invalid bearer token")
            else:
                role = None if method in ANY_ROLE_METHODS else METHOD_ROLES.get(method, Role.ADMIN)
                if role is not None and not principal.allows(role):
                    status = permission_denied_status(method, role, principal)
                else:
                    CURRENT_PRINCIPAL.set(principal)
        if status is not None:
            log.info("denied %s from http:%s: %s", method, ctx.client_address, status.details)
            raise connect_error(status)

    async def _unary(self, name: str, request: Any, ctx: RequestContext[Any, Any]) -> Any:
        await self._authorize(name, ctx)
        return await getattr(self._servicer, name)(request, _ConnectContext(ctx))

    async def list_jobs(self, request: pb.ListJobsRequest, ctx: RequestContext[Any, Any]) -> pb.ListJobsResponse:
        return await self._unary("ListJobs", request, ctx)  # type: ignore[no-any-return]

    async def get_job(self, request: pb.GetJobRequest, ctx: RequestContext[Any, Any]) -> pb.GetJobResponse:
        return await self._unary("GetJob", request, ctx)  # type: ignore[no-any-return]

    async def run_job(self, request: pb.RunJobRequest, ctx: RequestContext[Any, Any]) -> pb.RunJobResponse:
        return await self._unary("RunJob", request, ctx)  # type: ignore[no-any-return]

    async def cancel_job(self, request: pb.CancelJobRequest, ctx: RequestContext[Any, Any]) -> pb.CancelJobResponse:
        return await self._unary("CancelJob", request, ctx)  # type: ignore[no-any-return]

    async def set_schedule(
        self, request: pb.SetScheduleRequest, ctx: RequestContext[Any, Any]
    ) -> pb.SetScheduleResponse:
        return await self._unary("SetSchedule", request, ctx)  # type: ignore[no-any-return]

    async def pause_schedule(
        self, request: pb.PauseScheduleRequest, ctx: RequestContext[Any, Any]
    ) -> pb.PauseScheduleResponse:
        return await self._unary("PauseSchedule", request, ctx)  # type: ignore[no-any-return]

    async def resume_schedule(
        self, request: pb.ResumeScheduleRequest, ctx: RequestContext[Any, Any]
    ) -> pb.ResumeScheduleResponse:
        return await self._unary("ResumeSchedule", request, ctx)  # type: ignore[no-any-return]

    async def reload_schedules(
        self, request: pb.ReloadSchedulesRequest, ctx: RequestContext[Any, Any]
    ) -> pb.ReloadSchedulesResponse:
        return await self._unary("ReloadSchedules", request, ctx)  # type: ignore[no-any-return]

    async def list_executions(
        self, request: pb.ListExecutionsRequest, ctx: RequestContext[Any, Any]
    ) -> pb.ListExecutionsResponse:
        return await self._unary("ListExecutions", request, ctx)  # type: ignore[no-any-return]

    async def get_execution(
        self, request: pb.GetExecutionRequest, ctx: RequestContext[Any, Any]
    ) -> pb.GetExecutionResponse:
        return await self._unary("GetExecution", request, ctx)  # type: ignore[no-any-return]

    async def get_caller(self, request: pb.GetCallerRequest, ctx: RequestContext[Any, Any]) -> pb.GetCallerResponse:
        return await self._unary("GetCaller", request, ctx)  # type: ignore[no-any-return]

    async def watch_jobs(
        self, request: pb.WatchJobsRequest, ctx: RequestContext[Any, Any]
    ) -> AsyncIterator[pb.WatchJobsResponse]:
        await self._authorize("WatchJobs", ctx)
        stream = self._servicer.WatchJobs(request, _ConnectContext(ctx))
        assert isinstance(stream, AsyncGenerator)
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
            await stream.aclose()


def connect_app(service: ConnectJobService, *, read_max_bytes: int) -> JobServiceASGIApplication:
    return JobServiceASGIApplication(service, read_max_bytes=read_max_bytes)


class HealthASGIApplication(ConnectASGIApplication[Any]):
    """grpc.health.v1.Health/Check over Connect, answered by the gRPC health servicer (always open, as on
    the gRPC port). The health proto ships no Connect bindings, so this one method is declared here."""

    def __init__(self, health: Any) -> None:
        async def check(
            request: health_pb2.HealthCheckRequest, ctx: RequestContext[Any, Any]
        ) -> health_pb2.HealthCheckResponse:
            return await health.Check(request, _ConnectContext(ctx))

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
