"""A typed client for the xcron job service, blocking (:class:`Client`) and asyncio (:class:`AsyncClient`).

::

    from datetime import timedelta
    from xcron.client import Client, Schedule

    with Client("127.0.0.1:50051") as xcron:
        for job in xcron.iter_jobs():
            print(job.id, job.state.name)
        execution = xcron.run_and_wait("xcron.purge-history", {"older_than": timedelta(days=30)}, timeout=60)
        xcron.set_schedule("xcron.purge-history", [Schedule.every(timedelta(hours=1))])

It depends only on grpcio, protobuf and grpcio-status. The generated stub stays reachable as ``Client.stub``.
"""

from ._async import AsyncClient
from ._errors import (
    AbortedError,
    AlreadyExistsError,
    CancelledError,
    DeadlineExceededError,
    FailedPreconditionError,
    FieldViolation,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
    XcronError,
)
from ._models import (
    CalendarSpec,
    Caller,
    CronSpec,
    DayOfWeek,
    Execution,
    ExecutionState,
    IntervalSpec,
    Job,
    JobState,
    JobStatus,
    MisfirePolicy,
    OverlapPolicy,
    Page,
    ParameterDeclaration,
    ParameterType,
    ParameterValue,
    ReloadResult,
    Schedule,
    ScheduleOptions,
    ScheduleSpec,
    Trigger,
    WatchEvent,
    WatchEventKind,
)
from ._sync import Client

__all__ = [
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
]
