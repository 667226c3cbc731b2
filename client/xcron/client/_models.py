"""The value objects the client speaks in: frozen, keyword-only dataclasses and enums.

They mirror the ``xcron.v1`` messages, with timestamps as aware UTC :class:`~datetime.datetime` objects,
durations as :class:`~datetime.timedelta` and job parameters as plain Python values. Conversion to and from
protobuf lives in :mod:`xcron.client._convert`; nothing here imports the generated code.
"""

from __future__ import annotations

import enum
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Generic, TypeAlias, TypedDict, TypeVar, Unpack

__all__ = [
    "CalendarSpec",
    "CronSpec",
    "DayOfWeek",
    "Execution",
    "ExecutionState",
    "IntervalSpec",
    "Job",
    "JobState",
    "JobStatus",
    "MisfirePolicy",
    "OverlapPolicy",
    "Page",
    "ParameterDeclaration",
    "ParameterType",
    "ParameterValue",
    "ReloadResult",
    "Schedule",
    "ScheduleOptions",
    "ScheduleSpec",
    "Trigger",
    "WatchEvent",
    "WatchEventKind",
]

T = TypeVar("T")

ParameterValue: TypeAlias = bool | int | float | str | datetime | timedelta
"""A job parameter value: ``bool``, ``int`` (64-bit), ``float``, ``str``, aware ``datetime`` or timedelta."""


def _frozen_mapping(values: Mapping[str, ParameterValue]) -> Mapping[str, ParameterValue]:
    return types.MappingProxyType(dict(values))


# --- enums: the proto names without their prefix, same numbers ----------------------------------------------


class JobState(enum.Enum):
    """The state of a job, as the jobs panel shows it."""

    UNSPECIFIED = 0
    NOT_YET_RUN = 1
    RUNNING = 2
    COMPLETED = 3
    ABORTED = 4
    CANCELLED = 5

    @property
    def finished(self) -> bool:
        """Whether the job's last execution has ended (COMPLETED, ABORTED or CANCELLED)."""
        return self in (JobState.COMPLETED, JobState.ABORTED, JobState.CANCELLED)


class ExecutionState(enum.Enum):
    """The state of one execution."""

    UNSPECIFIED = 0
    RUNNING = 1
    COMPLETED = 2
    ABORTED = 3
    CANCELLED = 4

    @property
    def finished(self) -> bool:
        """Whether the execution has ended (COMPLETED, ABORTED or CANCELLED)."""
        return self in (ExecutionState.COMPLETED, ExecutionState.ABORTED, ExecutionState.CANCELLED)


class Trigger(enum.Enum):
    """What started an execution."""

    UNSPECIFIED = 0
    MANUAL = 1
    SCHEDULE = 2


class ParameterType(enum.Enum):
    """The declared type of a job parameter."""

    UNSPECIFIED = 0
    STRING = 1
    INT = 2
    BOOL = 3
    DOUBLE = 4
    TIMESTAMP = 5
    DURATION = 6


class DayOfWeek(enum.IntEnum):
    """Days of the week, ISO numbered like :meth:`datetime.date.isoweekday`."""

    MONDAY = 1
    TUESDAY = 2
    WEDNESDAY = 3
    THURSDAY = 4
    FRIDAY = 5
    SATURDAY = 6
    SUNDAY = 7


class MisfirePolicy(enum.Enum):
    """What to do with occurrences missed while the server was down or the schedule could not fire."""

    UNSPECIFIED = 0
    """The server's default, RUN_ONCE."""
    RUN_ONCE = 1
    SKIP = 2
    RUN_ALL = 3


class OverlapPolicy(enum.Enum):
    """What to do when an occurrence is due while the job is still running."""

    UNSPECIFIED = 0
    """The server's default, SKIP."""
    SKIP = 1
    BUFFER_ONE = 2
    CANCEL_OTHER = 3


class WatchEventKind(enum.Enum):
    """What a :class:`WatchEvent` carries."""

    UNSPECIFIED = 0
    SNAPSHOT = 1
    """The current state of every watched job: the first event, and after a resume the server can't honour."""
    CHANGES = 2
    """The latest state of the jobs that changed since the previous event."""


# --- jobs ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ParameterDeclaration:
    """A parameter a job declares."""

    name: str
    """The name to use in :meth:`Client.run_job`'s ``parameters``."""
    type: ParameterType
    required: bool
    """Whether a run must supply it (a declared default makes it optional)."""
    default_value: ParameterValue | None = None
    """The value used when a run does not supply it; ``None`` when there is none."""
    description: str = ""


@dataclass(frozen=True, kw_only=True)
class Job:
    """A job registered in the server, with its live state."""

    id: str
    """Stable identifier, e.g. ``"xcron.purge-history"``."""
    name: str
    description: str = ""
    parameters: tuple[ParameterDeclaration, ...] = ()
    """The parameters it takes, in declaration order."""
    can_cancel: bool = False
    """Whether :meth:`Client.cancel_job` can stop it."""
    state: JobState = JobState.UNSPECIFIED
    progress: float = 0.0
    """Progress of the current or last execution, 0..1."""
    status_text: str = ""
    """Status text of the current or last execution."""
    last_start_time: datetime | None = None
    last_finish_time: datetime | None = None
    execution_id: str = ""
    """The current (if running) or last execution's id; empty if the job never ran."""
    schedules: tuple[Schedule, ...] = ()
    schedules_paused: bool = False
    type_name: str = ""
    """The key of the job's entry in xcron.xml, ``"module.Class, package"``."""
    disabled_schedules: tuple[str, ...] = ()
    """Schedules in xcron.xml the server cannot honour and does not run, as ``"xcron.xml:LINE: reason"``."""


@dataclass(frozen=True, kw_only=True)
class JobStatus:
    """The live state of one job, as :meth:`Client.watch_jobs` reports it."""

    job_id: str
    state: JobState
    progress: float = 0.0
    """Progress of the current or last execution, 0..1."""
    status_text: str = ""
    last_start_time: datetime | None = None
    last_finish_time: datetime | None = None
    execution_id: str = ""
    """The current or last execution's id."""
    sequence: int = 0
    """The sequence number of the change that produced this status."""


@dataclass(frozen=True, kw_only=True)
class Execution:
    """One run of a job."""

    id: str
    job_id: str
    parameters: Mapping[str, ParameterValue] = field(default_factory=dict)
    """The parameters it ran with, defaults filled in (read-only)."""
    trigger: Trigger = Trigger.UNSPECIFIED
    state: ExecutionState = ExecutionState.UNSPECIFIED
    start_time: datetime | None = None
    finish_time: datetime | None = None
    """When it ended; ``None`` while running."""
    error: str = ""
    """Why it failed (ABORTED) or was cancelled; empty otherwise."""
    progress: float = 0.0
    """Last reported progress, 0..1."""
    status_text: str = ""
    scheduled_time: datetime | None = None
    """For scheduled runs: the occurrence it ran for."""
    request_id: str = ""
    """The request_id of the run call that started it, if any."""
    cancel_requested: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "parameters", _frozen_mapping(self.parameters))

    @property
    def finished(self) -> bool:
        """Whether the execution has ended."""
        return self.state.finished


# --- schedules ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class IntervalSpec:
    """Fires every ``every``, in absolute time, at ``start_time + k * every`` (DST does not shift it)."""

    every: timedelta
    """At least one second, whole seconds."""


@dataclass(frozen=True, kw_only=True)
class CalendarSpec:
    """Fires on the given days at a wall-clock time in the schedule's time zone.

    No days: fires once, at the schedule's ``start_time`` date and ``time_of_day``.
    """

    days: frozenset[DayOfWeek] = frozenset()
    """The days it fires on (plain ISO ints 1..7 are accepted too); empty for a one-shot."""
    time_of_day: time
    """A naive wall-clock time, whole seconds."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "days", frozenset(DayOfWeek(day) for day in self.days))
        if self.time_of_day.tzinfo is not None:
            raise ValueError("time_of_day must be naive: the schedule's time_zone gives its zone")
        if self.time_of_day.microsecond:
            raise ValueError("time_of_day must be whole seconds")


@dataclass(frozen=True, kw_only=True)
class CronSpec:
    """Fires at the times a cron expression gives, in the schedule's time zone."""

    expression: str
    """Five fields (minute hour day month weekday) or six (seconds last)."""


ScheduleSpec: TypeAlias = IntervalSpec | CalendarSpec | CronSpec


class ScheduleOptions(TypedDict, total=False):
    """The optional input fields of a :class:`Schedule`, as keywords of its convenience constructors."""

    start_time: datetime | None
    end_time: datetime | None
    time_zone: str
    parameters: Mapping[str, ParameterValue]
    misfire_policy: MisfirePolicy
    misfire_grace_period: timedelta | None
    max_catchup_runs: int
    overlap_policy: OverlapPolicy


@dataclass(frozen=True, kw_only=True)
class Schedule:
    """One schedule of a job: a spec saying when it fires, and its policies.

    Build one with :meth:`every`, :meth:`on_days` or :meth:`cron`. The fields after ``overlap_policy`` are
    output only: the server fills them in and ignores them on input.
    """

    spec: ScheduleSpec
    start_time: datetime | None = None
    """No occurrence before this (aware); the phase of an interval. ``None``: the time it was set."""
    end_time: datetime | None = None
    """No occurrence after this (aware); ``None`` for no end."""
    time_zone: str = ""
    """IANA zone for calendar and cron times, e.g. ``"Europe/Paris"``; empty for the server's zone."""
    parameters: Mapping[str, ParameterValue] = field(default_factory=dict)
    """The parameters the job runs with when this schedule fires (read-only)."""
    misfire_policy: MisfirePolicy = MisfirePolicy.UNSPECIFIED
    misfire_grace_period: timedelta | None = None
    """Missed occurrences older than this are dropped; ``None`` for no limit."""
    max_catchup_runs: int = 0
    """With :attr:`MisfirePolicy.RUN_ALL`: at most this many catch-up runs (0 means 10)."""
    overlap_policy: OverlapPolicy = OverlapPolicy.UNSPECIFIED
    next_fire_times: tuple[datetime, ...] = ()
    """Output only: the next few occurrences (none while paused or ended)."""
    last_fire_time: datetime | None = None
    """Output only: the last occurrence this schedule fired for."""
    overlap_skipped_count: int = 0
    """Output only: occurrences skipped because the job was still running."""
    misfire_skipped_count: int = 0
    """Output only: occurrences dropped by the misfire policy."""
    not_started_count: int = 0
    """Output only: occurrences due and free to run but not started since the server started (mostly the
    server's --max-running limit)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "parameters", _frozen_mapping(self.parameters))
        for name in ("start_time", "end_time"):
            value = getattr(self, name)
            if value is not None and value.utcoffset() is None:
                raise ValueError(f"{name} must be an aware datetime, got naive {value!r}")

    @classmethod
    def every(cls, interval: timedelta | float, **kwargs: Unpack[ScheduleOptions]) -> Schedule:
        """A schedule firing every ``interval`` (a timedelta or a number of seconds)."""
        every = interval if isinstance(interval, timedelta) else timedelta(seconds=interval)
        return cls(spec=IntervalSpec(every=every), **kwargs)

    @classmethod
    def on_days(cls, days: Iterable[DayOfWeek | int], at: time, **kwargs: Unpack[ScheduleOptions]) -> Schedule:
        """A schedule firing on ``days`` (empty: once, on ``start_time``'s date) at wall-clock time ``at``."""
        spec = CalendarSpec(days=frozenset(DayOfWeek(day) for day in days), time_of_day=at)
        return cls(spec=spec, **kwargs)

    @classmethod
    def cron(cls, expression: str, **kwargs: Unpack[ScheduleOptions]) -> Schedule:
        """A schedule firing at the times of a cron expression: 5 fields (minute hour day month weekday),
        or 6 with the seconds last; the server refuses Quartz/Cronos (seconds-first) expressions."""
        return cls(spec=CronSpec(expression=expression), **kwargs)


# --- results ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class WatchEvent:
    """One message of a :meth:`Client.watch_jobs` stream."""

    kind: WatchEventKind
    statuses: tuple[JobStatus, ...]
    """At most one status per job: its latest state (a slow reader does not see every intermediate one)."""
    sequence: int
    """The highest sequence number this event covers; pass it as ``after_sequence`` to resume."""


@dataclass(frozen=True, kw_only=True)
class Page(Generic[T]):
    """One page of a listing."""

    items: tuple[T, ...]
    next_page_token: str = ""
    """Pass as ``page_token`` for the next page; empty on the last page."""


@dataclass(frozen=True, kw_only=True)
class ReloadResult:
    """What :meth:`Client.reload_schedules` did."""

    scheduled_job_count: int
    """How many jobs of this server have schedules after the reload."""
    unknown_entry_count: int
    """How many entries in the file are for jobs this server does not know (kept unchanged)."""


@dataclass(frozen=True, kw_only=True)
class Caller:
    """Who :meth:`Client.get_caller` says the caller is."""

    authentication_required: bool
    """Whether the server requires a bearer token."""
    name: str
    """The token's name in the server's tokens file; empty without authentication."""
    roles: frozenset[str]
    """The caller's roles ("read", "run", "schedule", "admin"; admin allows everything)."""
