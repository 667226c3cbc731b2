"""The asyncio client: the same methods as :class:`~xcron.client.Client`, awaitable or async-iterable."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import Self

import grpc

from xcron.v1 import job_service_pb2 as pb
from xcron.v1 import job_service_pb2_grpc as pb_grpc

from . import _convert as convert
from ._common import (
    DEFAULT_TARGET,
    DEFAULT_TIMEOUT,
    FIRST_PAUSE,
    LAST_PAUSE,
    Deadline,
    Step,
    job_ids_list,
    metadata_tuple,
    new_request_id,
    record_lag_pause,
    run_wait_step,
)
from ._errors import UnavailableError, translate_errors
from ._models import Caller, Execution, Job, Page, ReloadResult, Schedule, WatchEvent

__all__ = ["AsyncClient"]


class AsyncClient:
    """An asyncio client of one xcron server; build it inside the event loop it is used on.

    Every unary call gets ``timeout`` seconds (None: no limit) and carries ``metadata``; :meth:`watch_jobs`
    has no deadline. Failed calls raise :class:`~xcron.client.XcronError` subclasses. Use it as an async
    context manager, or await :meth:`close`, to close the channel it created; a ``channel`` passed in is left
    open.

    A ``token`` is sent as ``authorization: Bearer <token>`` on every call, for servers started with
    ``--tokens-file``.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        channel: grpc.aio.Channel | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        metadata: Sequence[tuple[str, str]] = (),
        credentials: grpc.ChannelCredentials | None = None,
        token: str | None = None,
    ) -> None:
        if channel is not None and credentials is not None:
            raise ValueError("pass credentials or a channel, not both")
        self._owns_channel = channel is None
        self._closed = False
        if channel is None:
            if credentials is None:
                channel = grpc.aio.insecure_channel(target)
            else:
                channel = grpc.aio.secure_channel(target, credentials)
        self._channel: grpc.aio.Channel = channel
        # The same class at run time; the .pyi types its grpc.aio flavour separately.
        self._stub: pb_grpc.JobServiceAsyncStub = pb_grpc.JobServiceStub(channel)  # type: ignore[assignment]
        self._timeout = timeout
        self._metadata = metadata_tuple(
            metadata if token is None else (*metadata, ("authorization", f"Bearer {token}"))
        )

    @property
    def stub(self) -> pb_grpc.JobServiceAsyncStub:
        """The generated stub on this client's channel, for calls this layer does not wrap."""
        return self._stub

    @property
    def channel(self) -> grpc.aio.Channel:
        """The underlying channel."""
        return self._channel

    async def close(self) -> None:
        """Close the channel if this client created it (idempotent)."""
        if self._owns_channel and not self._closed:
            self._closed = True
            await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- jobs -----------------------------------------------------------------------------------------------

    async def list_jobs(self, *, page_size: int = 0, page_token: str = "") -> Page[Job]:
        """One page of the registered jobs, ordered by id (page_size 0: the server's default, 50)."""
        request = pb.ListJobsRequest(page_size=page_size, page_token=page_token)
        with translate_errors():
            response = await self._stub.ListJobs(request, timeout=self._timeout, metadata=self._metadata)
        return Page(
            items=tuple(convert.job_from_proto(j) for j in response.jobs),
            next_page_token=response.next_page_token,
        )

    async def iter_jobs(self, *, page_size: int = 0) -> AsyncIterator[Job]:
        """Every registered job, following the pages."""
        token = ""
        while True:
            page = await self.list_jobs(page_size=page_size, page_token=token)
            for item in page.items:
                yield item
            token = page.next_page_token
            if not token:
                return

    async def get_job(self, job_id: str, *, next_fire_time_count: int = 0) -> Job:
        """One job with its state and schedules (next_fire_time_count 0: 5 next fire times per schedule)."""
        request = pb.GetJobRequest(job_id=job_id, next_fire_time_count=next_fire_time_count)
        with translate_errors():
            response = await self._stub.GetJob(request, timeout=self._timeout, metadata=self._metadata)
        return convert.job_from_proto(response.job)

    async def run_job(
        self,
        job_id: str,
        parameters: Mapping[str, object] | None = None,
        *,
        request_id: str | None = None,
    ) -> Execution:
        """Start a job now and return the execution that started.

        ``parameters`` are plain values (bool, int, float, str, aware datetime, timedelta). Without a
        ``request_id`` a fresh UUID is sent, so that retrying the same request cannot run the job twice.
        Raises AbortedError if the job is already running.
        """
        return await self._run_job(job_id, parameters, request_id, self._timeout)

    async def _run_job(
        self,
        job_id: str,
        parameters: Mapping[str, object] | None,
        request_id: str | None,
        call_timeout: float | None,
    ) -> Execution:
        request = convert.run_job_request(job_id, parameters, request_id or new_request_id())
        with translate_errors():
            response = await self._stub.RunJob(request, timeout=call_timeout, metadata=self._metadata)
        return convert.execution_from_proto(response.execution)

    async def cancel_job(self, job_id: str, *, execution_id: str = "") -> Execution:
        """Ask the job's running execution (only if it is ``execution_id``, when given) to stop."""
        request = pb.CancelJobRequest(job_id=job_id, execution_id=execution_id)
        with translate_errors():
            response = await self._stub.CancelJob(request, timeout=self._timeout, metadata=self._metadata)
        return convert.execution_from_proto(response.execution)

    # --- schedules ------------------------------------------------------------------------------------------

    async def set_schedule(self, job_id: str, schedules: Sequence[Schedule], *, validate_only: bool = False) -> Job:
        """Replace all of a job's schedules (an empty sequence clears them); returns the updated job.

        ``validate_only``: check them and return the job as it would be, with their next fire times,
        without saving anything."""
        request = convert.set_schedule_request(job_id, schedules, validate_only=validate_only)
        with translate_errors():
            response = await self._stub.SetSchedule(request, timeout=self._timeout, metadata=self._metadata)
        return convert.job_from_proto(response.job)

    async def clear_schedule(self, job_id: str) -> Job:
        """Remove all of a job's schedules."""
        return await self.set_schedule(job_id, ())

    async def pause_schedule(self, job_id: str) -> Job:
        """Stop a job's schedules from firing without forgetting them."""
        request = pb.PauseScheduleRequest(job_id=job_id)
        with translate_errors():
            response = await self._stub.PauseSchedule(request, timeout=self._timeout, metadata=self._metadata)
        return convert.job_from_proto(response.job)

    async def resume_schedule(self, job_id: str) -> Job:
        """Let a paused job's schedules fire again (occurrences missed while paused are not run)."""
        request = pb.ResumeScheduleRequest(job_id=job_id)
        with translate_errors():
            response = await self._stub.ResumeSchedule(request, timeout=self._timeout, metadata=self._metadata)
        return convert.job_from_proto(response.job)

    async def get_caller(self) -> Caller:
        """Who the server takes the caller to be, and the roles of its token."""
        with translate_errors():
            response = await self._stub.GetCaller(pb.GetCallerRequest(), timeout=self._timeout, metadata=self._metadata)
        return Caller(
            authentication_required=response.authentication_required,
            name=response.name,
            roles=frozenset(response.roles),
        )

    async def reload_schedules(self) -> ReloadResult:
        """Re-read xcron.xml on the server (an invalid file is rejected and the running schedules stay)."""
        with translate_errors():
            response = await self._stub.ReloadSchedules(
                pb.ReloadSchedulesRequest(), timeout=self._timeout, metadata=self._metadata
            )
        return ReloadResult(
            scheduled_job_count=response.scheduled_job_count,
            unknown_entry_count=response.unknown_entry_count,
        )

    # --- watching -------------------------------------------------------------------------------------------

    def watch_jobs(self, job_ids: Sequence[str] = (), *, after_sequence: int = 0) -> AsyncGenerator[WatchEvent, None]:
        """Stream the watched jobs' states (all jobs when ``job_ids`` is empty): a snapshot, then changes.

        The call starts at the first ``anext()``. Closing the async generator (``await aclose()``, or
        ``contextlib.aclosing``) cancels the call. A slow reader sees only the latest state per job.
        Resume after a disconnect with the last event's ``sequence`` as ``after_sequence``.
        """
        request = pb.WatchJobsRequest(job_ids=job_ids_list(job_ids), after_sequence=after_sequence)
        return self._watch(request, None)

    async def _watch(
        self, request: pb.WatchJobsRequest, call_timeout: float | None
    ) -> AsyncGenerator[WatchEvent, None]:
        call = self._stub.WatchJobs(request, timeout=call_timeout, metadata=self._metadata)
        try:
            with translate_errors():
                async for response in call:
                    yield convert.watch_event_from_proto(response)
        finally:
            call.cancel()

    # --- executions -----------------------------------------------------------------------------------------

    async def list_executions(self, job_id: str, *, page_size: int = 0, page_token: str = "") -> Page[Execution]:
        """One page of a job's executions, newest first."""
        request = pb.ListExecutionsRequest(job_id=job_id, page_size=page_size, page_token=page_token)
        with translate_errors():
            response = await self._stub.ListExecutions(request, timeout=self._timeout, metadata=self._metadata)
        return Page(
            items=tuple(convert.execution_from_proto(e) for e in response.executions),
            next_page_token=response.next_page_token,
        )

    async def iter_executions(self, job_id: str, *, page_size: int = 0) -> AsyncIterator[Execution]:
        """Every execution of a job, newest first, following the pages."""
        token = ""
        while True:
            page = await self.list_executions(job_id, page_size=page_size, page_token=token)
            for item in page.items:
                yield item
            token = page.next_page_token
            if not token:
                return

    async def get_execution(self, execution_id: str) -> Execution:
        """One execution."""
        return await self._get_execution(execution_id, self._timeout)

    async def _get_execution(self, execution_id: str, call_timeout: float | None) -> Execution:
        request = pb.GetExecutionRequest(execution_id=execution_id)
        with translate_errors():
            response = await self._stub.GetExecution(request, timeout=call_timeout, metadata=self._metadata)
        return convert.execution_from_proto(response.execution)

    async def run_and_wait(
        self,
        job_id: str,
        parameters: Mapping[str, object] | None = None,
        *,
        request_id: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - a budget for several calls, as in the sync client
    ) -> Execution:
        """Run a job and block until that execution ends; returns its full record.

        The job's watch stream is opened (and its snapshot read) before the run starts, so the end cannot be
        missed. Raises DeadlineExceededError after ``timeout`` seconds (None: wait for as long as it takes);
        the execution keeps running on the server. Retrying with the same ``request_id`` waits for the same
        execution instead of starting another one.
        """
        deadline = Deadline(timeout)
        request = pb.WatchJobsRequest(job_ids=[job_id])
        events = self._watch(request, deadline.remaining())
        try:
            await anext(events, None)  # the snapshot: from here on the subscription is live
            execution = await self._run_job(job_id, parameters, request_id, deadline.call_timeout(self._timeout))
            if execution.finished:  # a repeated request_id for a run that is long over
                return await self._get_execution(execution.id, deadline.call_timeout(self._timeout))
            async for event in events:
                step = run_wait_step(event, job_id, execution.id)
                if step is Step.WAIT:
                    continue
                if step is Step.DONE:
                    return await self._ended_record(execution.id, deadline)
                latest = await self._get_execution(execution.id, deadline.call_timeout(self._timeout))
                if latest.finished:
                    return latest
            latest = await self._get_execution(execution.id, deadline.call_timeout(self._timeout))
            if latest.finished:
                return latest
            raise UnavailableError(f"the watch stream ended before execution {execution.id} finished")
        finally:
            await events.aclose()

    async def _ended_record(self, execution_id: str, deadline: Deadline) -> Execution:
        """The record of an execution the watch stream showed ended, asked for again (after a pause growing
        from 20 ms to 1 s) while it still says otherwise, until the deadline (see record_lag_pause)."""
        pause = FIRST_PAUSE
        while True:
            latest = await self._get_execution(execution_id, deadline.call_timeout(self._timeout))
            if latest.finished:
                return latest
            await asyncio.sleep(record_lag_pause(execution_id, latest.state.name, pause, deadline))
            pause = min(pause * 2, LAST_PAUSE)
