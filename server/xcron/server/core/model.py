"""Domain values shared by the core, the stores and the API layer.

Frozen, keyword-only and timezone-aware, so they can be passed between the event loop, the
store thread and job threads without copying. Nothing here knows about protobuf or XML.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from enum import StrEnum
from functools import cached_property

ParameterValue = str | int | bool | float | datetime | timedelta


class ParameterType(StrEnum):
    STRING = "string"
    INT = "int"
    BOOL = "bool"
    DOUBLE = "double"
    TIMESTAMP = "timestamp"
    DURATION = "duration"


@dataclass(frozen=True, kw_only=True)
class ParameterSpec:
    """A parameter a job declares; its position in the job's list is SanteDB's positional index."""

    name: str
    type: ParameterType
    required: bool = False
    default: ParameterValue | None = None
    description: str = ""


class JobState(StrEnum):
    NOT_YET_RUN = "not_yet_run"
    RUNNING = "running"
    COMPLETED = "completed"
    ABORTED = "aborted"
    CANCELLED = "cancelled"


class ExecutionState(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    ABORTED = "aborted"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self is not ExecutionState.RUNNING


class Trigger(StrEnum):
    MANUAL = "manual"
    SCHEDULE = "schedule"


class MisfirePolicy(StrEnum):
    RUN_ONCE = "run_once"
    SKIP = "skip"
    RUN_ALL = "run_all"


class OverlapPolicy(StrEnum):
    SKIP = "skip"
    BUFFER_ONE = "buffer_one"
    CANCEL_OTHER = "cancel_other"


@dataclass(frozen=True, kw_only=True)
class IntervalSpec:
    """Every `every`, in absolute time, anchored at the schedule's start (start + k * every)."""

    every: timedelta


@dataclass(frozen=True, kw_only=True)
class CalendarSpec:
    """On `days` (ISO weekdays, 1 = Monday … 7 = Sunday) at `time_of_day`, wall clock in the zone.

    No days: one run, the first time `time_of_day` comes at or after the schedule's start.
    """

    days: frozenset[int]
    time_of_day: time


@dataclass(frozen=True, kw_only=True)
class CronSpec:
    """A croniter expression: five fields, or six with seconds last."""

    expression: str


ScheduleSpec = IntervalSpec | CalendarSpec | CronSpec

DEFAULT_MAX_CATCHUP_RUNS = 10


@dataclass(frozen=True, kw_only=True)
class Schedule:
    """One schedule of a job. `start` and `end` are aware datetimes; `time_zone` "" means the server's."""

    spec: ScheduleSpec
    start: datetime
    end: datetime | None = None
    time_zone: str = ""
    parameters: Mapping[str, ParameterValue] = field(default_factory=dict)
    misfire_policy: MisfirePolicy = MisfirePolicy.RUN_ONCE
    misfire_grace: timedelta | None = None
    max_catchup_runs: int = DEFAULT_MAX_CATCHUP_RUNS
    overlap_policy: OverlapPolicy = OverlapPolicy.SKIP

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or (self.end is not None and self.end.tzinfo is None):
            raise ValueError("schedule start and end must be timezone-aware")

    @cached_property
    def key(self) -> str:
        """Identifies when this schedule fires, so its last fire time survives re-saving it unchanged.

        Parameters and policies are left out on purpose: changing them does not make past
        occurrences due again.
        """
        text = "|".join(
            (
                repr(self.spec),
                self.start.isoformat(),
                self.end.isoformat() if self.end else "",
                self.time_zone,
            )
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True, kw_only=True)
class JobSchedules:
    """A job's schedules as xcron.xml holds them."""

    schedules: tuple[Schedule, ...] = ()
    paused: bool = False
