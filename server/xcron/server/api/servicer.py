"""JobService: each RPC validates its request, calls the job manager, converts the answer."""

from __future__ import annotations

import base64
import functools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeAlias, TypeVar

import grpc

from xcron.server.api import convert
from xcron.server.api.auth import CURRENT_PRINCIPAL, Role
from xcron.server.api.status import to_status
from xcron.server.core.errors import InvalidArgument, XcronServerError
from xcron.server.core.service import JobManager
from xcron.server.stores.state import ExecutionCursor
from xcron.v1 import job_service_pb2 as pb
from xcron.v1 import job_service_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)
Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
R = TypeVar("R")

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
MAX_ID_LENGTH = 128


def _unary(
    method: Callable[[Servicer, Any, Context], Awaitable[R]],
) -> Callable[[Servicer, Any, Context], Awaitable[R]]:
    @functools.wraps(method)
    async def wrapper(self: Servicer, request: Any, context: Context) -> R:
        try:
            return await method(self, request, context)
        except XcronServerError as exc:
            await context.abort_with_status(to_status(exc))
            raise  # unreachable: abort_with_status raises

    return wrapper


def _page_size(value: int, field: str = "page_size") -> int:
    if value < 0:
        raise InvalidArgument(field, "must not be negative")
    return min(value or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def _encode_token(payload: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()


def _decode_token(token: str, kind: str, shape: tuple[type, ...]) -> list[Any]:
    """The token's fields after its kind, checked against `shape`, or INVALID_ARGUMENT."""
    try:
        payload = json.loads(base64.urlsafe_b64decode(token.encode()))
        if (
            not isinstance(payload, list)
            or len(payload) != len(shape) + 1
            or payload[0] != kind
            or not all(isinstance(v, t) for v, t in zip(payload[1:], shape, strict=True))
        ):
            raise ValueError(token)
        return payload[1:]
    except (ValueError, UnicodeError) as exc:
        raise InvalidArgument(
            "page_token", "not a page token from this method; pass next_page_token back unchanged"
        ) from exc


def _job_id(value: str, field: str = "job_id") -> str:
    if not value:
        raise InvalidArgument(field, "required")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidArgument(field, f"longer than {MAX_ID_LENGTH} characters")
    return value


class Servicer(pb_grpc.JobServiceServicer):
    def __init__(self, manager: JobManager) -> None:
        self._manager = manager
        self._cache: dict[tuple[object, ...], Any] = {}
        self._cache_version: tuple[int, int] | None = None

    @_unary
    async def ListJobs(self, request: pb.ListJobsRequest, context: Context) -> pb.ListJobsResponse:
        return self._cached(("ListJobs", request.page_size, request.page_token), lambda: self._list_jobs(request))

    def _cached(self, key: tuple[object, ...], build: Callable[[], R]) -> R:
        """Dashboards poll: while no job, run or schedule changed, a read answers what it built last time."""
        version = self._manager.version
        if self._cache_version != version:
            self._cache.clear()
            self._cache_version = version
        if key in self._cache:
            return self._cache[key]  # type: ignore[no-any-return]
        value = build()
        if len(self._cache) < 1024:
            self._cache[key] = value
        return value

    def _list_jobs(self, request: pb.ListJobsRequest) -> pb.ListJobsResponse:
        size = _page_size(request.page_size)
        ids = self._manager.job_ids()
        if request.page_token:
            (after,) = _decode_token(request.page_token, "jobs", (str,))
            ids = [i for i in ids if i > after]
        page = ids[:size]
        token = _encode_token(["jobs", page[-1]]) if len(ids) > size else ""
        # One next fire time per schedule in lists (GetJob shows more): lists stay cheap.
        jobs = [convert.job(self._manager.view(i, fire_time_count=1)) for i in page]
        return pb.ListJobsResponse(jobs=jobs, next_page_token=token)

    @_unary
    async def GetJob(self, request: pb.GetJobRequest, context: Context) -> pb.GetJobResponse:
        if not 0 <= request.next_fire_time_count <= 100:
            raise InvalidArgument("next_fire_time_count", "must be between 0 and 100")
        job_id = _job_id(request.job_id)
        count = request.next_fire_time_count or 5
        return self._cached(
            ("GetJob", job_id, count),
            lambda: pb.GetJobResponse(job=convert.job(self._manager.view(job_id, fire_time_count=count))),
        )

    @_unary
    async def RunJob(self, request: pb.RunJobRequest, context: Context) -> pb.RunJobResponse:
        if len(request.request_id) > MAX_ID_LENGTH:
            raise InvalidArgument("request_id", f"longer than {MAX_ID_LENGTH} characters")
        record = await self._manager.run(
            _job_id(request.job_id),
            convert.from_parameters(request.parameters),
            request_id=request.request_id,
        )
        return pb.RunJobResponse(execution=convert.execution(record))

    @_unary
    async def CancelJob(self, request: pb.CancelJobRequest, context: Context) -> pb.CancelJobResponse:
        record = await self._manager.cancel(_job_id(request.job_id), request.execution_id)
        return pb.CancelJobResponse(execution=convert.execution(record))

    @_unary
    async def SetSchedule(self, request: pb.SetScheduleRequest, context: Context) -> pb.SetScheduleResponse:
        job_id = _job_id(request.job_id)
        self._manager.registry.get(job_id)
        now = self._manager.clock.now()
        schedules = [convert.from_schedule(s, f"schedules[{i}]", now) for i, s in enumerate(request.schedules)]
        checked = await self._manager.set_schedules(job_id, schedules, validate_only=request.validate_only)
        if request.validate_only:
            return pb.SetScheduleResponse(job=convert.job(self._manager.preview(job_id, checked)), validated_only=True)
        return pb.SetScheduleResponse(job=convert.job(self._manager.view(job_id)))

    @_unary
    async def PauseSchedule(self, request: pb.PauseScheduleRequest, context: Context) -> pb.PauseScheduleResponse:
        job_id = _job_id(request.job_id)
        await self._manager.set_paused(job_id, True)
        return pb.PauseScheduleResponse(job=convert.job(self._manager.view(job_id)))

    @_unary
    async def ResumeSchedule(self, request: pb.ResumeScheduleRequest, context: Context) -> pb.ResumeScheduleResponse:
        job_id = _job_id(request.job_id)
        await self._manager.set_paused(job_id, False)
        return pb.ResumeScheduleResponse(job=convert.job(self._manager.view(job_id)))

    @_unary
    async def ReloadSchedules(self, request: pb.ReloadSchedulesRequest, context: Context) -> pb.ReloadSchedulesResponse:
        scheduled, unknown = await self._manager.reload()
        return pb.ReloadSchedulesResponse(scheduled_job_count=scheduled, unknown_entry_count=unknown)

    @_unary
    async def ListExecutions(self, request: pb.ListExecutionsRequest, context: Context) -> pb.ListExecutionsResponse:
        job_id = _job_id(request.job_id)
        size = _page_size(request.page_size)
        before = None
        if request.page_token:
            token_job, ts, execution_id = _decode_token(request.page_token, "executions", (str, str, str))
            if token_job != job_id:
                raise InvalidArgument("page_token", "this page token belongs to another job")
            try:
                before = ExecutionCursor(datetime.fromisoformat(ts).astimezone(UTC), execution_id)
            except ValueError as exc:
                raise InvalidArgument("page_token", "not a page token from this method") from exc
        records = await self._manager.list_executions(job_id, limit=size + 1, before=before)
        page = records[:size]
        token = ""
        if len(records) > size:
            last = page[-1]
            token = _encode_token(["executions", job_id, last.start_time.isoformat(), last.id])
        return pb.ListExecutionsResponse(executions=[convert.execution(r) for r in page], next_page_token=token)

    @_unary
    async def GetExecution(self, request: pb.GetExecutionRequest, context: Context) -> pb.GetExecutionResponse:
        execution_id = _job_id(request.execution_id, "execution_id")
        return pb.GetExecutionResponse(execution=convert.execution(await self._manager.get_execution(execution_id)))

    @_unary
    async def GetCaller(self, request: pb.GetCallerRequest, context: Context) -> pb.GetCallerResponse:
        principal = CURRENT_PRINCIPAL.get()
        if principal is None:  # no --tokens-file: everyone may do everything
            return pb.GetCallerResponse(authentication_required=False, roles=[Role.ADMIN.value])
        roles = sorted(r.value for r in principal.roles)
        return pb.GetCallerResponse(authentication_required=True, name=principal.name, roles=roles)

    async def WatchJobs(self, request: pb.WatchJobsRequest, context: Context) -> AsyncIterator[pb.WatchJobsResponse]:
        try:
            for i, job_id in enumerate(request.job_ids):
                self._manager.registry.get(_job_id(job_id, f"job_ids[{i}]"))
            if request.after_sequence < 0:
                raise InvalidArgument("after_sequence", "must not be negative")
            watcher = self._manager.bus.subscribe(request.job_ids, after_sequence=request.after_sequence)
        except XcronServerError as exc:
            await context.abort_with_status(to_status(exc))
            return
        try:
            while True:
                batch = await watcher.next_batch()
                yield convert.watch_response(batch)  # paced by the watcher (events.PACE)
        finally:
            watcher.close()
