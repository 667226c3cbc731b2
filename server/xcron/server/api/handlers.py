"""JobService's logic, transport-neutral: a pb request in, a pb response (or an async iterator of them) out,
xcron's core errors (xcron.server.core.errors) raised. The gRPC servicer (servicer.py) and any other
transport (HTTP/Connect) are thin adapters over this class: they build a CallContext, call the method,
and map the errors to their status in one place (status.py for gRPC).
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from xcron.server.api import convert
from xcron.server.core.errors import InvalidArgument
from xcron.server.core.events import WatchBatch, Watcher
from xcron.server.core.manager import JobManager
from xcron.server.core.ports import ExecutionCursor
from xcron.v1 import job_service_pb2 as pb

R = TypeVar("R")


@dataclass(frozen=True, kw_only=True)
class CallContext:
    """What a handler may know of the call besides its request, whatever the transport."""

    principal: str = ""
    """The authenticated caller's name; "" when the server runs without authentication."""
    peer: str = ""
    """The caller's address as the transport reports it (for logs)."""
    deadline: float | None = None
    """Seconds left before the caller gives up; None without a deadline."""
    roles: frozenset[str] | None = None
    """The authenticated caller's roles ("read", "run", "schedule", "admin"); None without authentication."""


DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
MAX_ID_LENGTH = 128


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


def _checked_id(value: str, field: str = "job_id") -> str:
    """A job or execution id as a request gives it: present and at most MAX_ID_LENGTH characters."""
    if not value:
        raise InvalidArgument(field, "required")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidArgument(field, f"longer than {MAX_ID_LENGTH} characters")
    return value


class JobHandlers:
    """One method per JobService RPC, named in snake case (ListJobs -> list_jobs)."""

    def __init__(self, manager: JobManager) -> None:
        self._manager = manager
        self._cache: dict[tuple[object, ...], Any] = {}
        self._cache_version: tuple[int, int] | None = None

    async def list_jobs(self, request: pb.ListJobsRequest, call: CallContext) -> pb.ListJobsResponse:
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

    async def get_job(self, request: pb.GetJobRequest, call: CallContext) -> pb.GetJobResponse:
        if not 0 <= request.next_fire_time_count <= 100:
            raise InvalidArgument("next_fire_time_count", "must be between 0 and 100")
        job_id = _checked_id(request.job_id)
        count = request.next_fire_time_count or 5
        return self._cached(
            ("GetJob", job_id, count),
            lambda: pb.GetJobResponse(job=convert.job(self._manager.view(job_id, fire_time_count=count))),
        )

    async def run_job(self, request: pb.RunJobRequest, call: CallContext) -> pb.RunJobResponse:
        if len(request.request_id) > MAX_ID_LENGTH:
            raise InvalidArgument("request_id", f"longer than {MAX_ID_LENGTH} characters")
        record = await self._manager.run(
            _checked_id(request.job_id),
            convert.from_parameters(request.parameters),
            request_id=request.request_id,
        )
        return pb.RunJobResponse(execution=convert.execution(record))

    async def cancel_job(self, request: pb.CancelJobRequest, call: CallContext) -> pb.CancelJobResponse:
        record = await self._manager.cancel(_checked_id(request.job_id), request.execution_id)
        return pb.CancelJobResponse(execution=convert.execution(record))

    async def set_schedule(self, request: pb.SetScheduleRequest, call: CallContext) -> pb.SetScheduleResponse:
        job_id = _checked_id(request.job_id)
        self._manager.check_job(job_id)
        now = self._manager.now()
        schedules = [convert.from_schedule(s, f"schedules[{i}]", now) for i, s in enumerate(request.schedules)]
        checked = await self._manager.set_schedules(job_id, schedules, validate_only=request.validate_only)
        if request.validate_only:  # AIP-163: the same checks, the computed schedules, nothing saved
            return pb.SetScheduleResponse(job=convert.job(self._manager.preview(job_id, checked)), validated_only=True)
        return pb.SetScheduleResponse(job=convert.job(self._manager.view(job_id)))

    async def pause_schedule(self, request: pb.PauseScheduleRequest, call: CallContext) -> pb.PauseScheduleResponse:
        job_id = _checked_id(request.job_id)
        await self._manager.set_paused(job_id, True)
        return pb.PauseScheduleResponse(job=convert.job(self._manager.view(job_id)))

    async def resume_schedule(self, request: pb.ResumeScheduleRequest, call: CallContext) -> pb.ResumeScheduleResponse:
        job_id = _checked_id(request.job_id)
        await self._manager.set_paused(job_id, False)
        return pb.ResumeScheduleResponse(job=convert.job(self._manager.view(job_id)))

    async def reload_schedules(
        self, request: pb.ReloadSchedulesRequest, call: CallContext
    ) -> pb.ReloadSchedulesResponse:
        scheduled, unknown = await self._manager.reload()
        return pb.ReloadSchedulesResponse(scheduled_job_count=scheduled, unknown_entry_count=unknown)

    async def list_executions(self, request: pb.ListExecutionsRequest, call: CallContext) -> pb.ListExecutionsResponse:
        job_id = _checked_id(request.job_id)
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

    async def get_execution(self, request: pb.GetExecutionRequest, call: CallContext) -> pb.GetExecutionResponse:
        execution_id = _checked_id(request.execution_id, "execution_id")
        return pb.GetExecutionResponse(execution=convert.execution(await self._manager.get_execution(execution_id)))

    async def get_caller(self, request: pb.GetCallerRequest, call: CallContext) -> pb.GetCallerResponse:
        if call.roles is None:  # no --tokens-file: everyone may do everything
            return pb.GetCallerResponse(authentication_required=False, roles=["admin"])
        return pb.GetCallerResponse(authentication_required=True, name=call.principal, roles=sorted(call.roles))

    async def watch_jobs(
        self, request: pb.WatchJobsRequest, call: CallContext
    ) -> AsyncGenerator[pb.WatchJobsResponse, None]:
        """Checks the request and subscribes (raising here, before any message), then streams batches."""
        return _stream(self._watcher(request), convert.watch_response)

    async def watch_jobs_encoded(self, request: pb.WatchJobsRequest, call: CallContext) -> AsyncGenerator[bytes, None]:
        """watch_jobs with each message already encoded (WatchJobsResponse's wire bytes), for a transport that
        sends bytes: a batch many watchers share is encoded once, not once per stream."""
        return _stream(self._watcher(request), convert.watch_response_bytes)

    def _watcher(self, request: pb.WatchJobsRequest) -> Watcher:
        for i, job_id in enumerate(request.job_ids):
            self._manager.check_job(_checked_id(job_id, f"job_ids[{i}]"))
        if request.after_sequence < 0:
            raise InvalidArgument("after_sequence", "must not be negative")
        return self._manager.watch(request.job_ids, after_sequence=request.after_sequence)


async def _stream(watcher: Watcher, encode: Callable[[WatchBatch], R]) -> AsyncGenerator[R, None]:
    try:
        while True:
            batch = await watcher.next_batch()
            yield encode(batch)  # paced by the watcher (events.PACE)
    finally:
        watcher.close()
