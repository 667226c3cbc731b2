"""Private helpers converting between the client's value objects and the ``xcron.v1`` protobuf messages.

Protobuf types stop here: the public client only hands out the dataclasses of :mod:`xcron.client._models`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, time, timedelta
from typing import TypeVar

from google.protobuf import duration_pb2, timestamp_pb2
from google.protobuf.internal.containers import MessageMap
from google.protobuf.message import Message

from xcron.v1 import job_service_pb2 as pb

from ._models import (
    CalendarSpec,
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
    ParameterDeclaration,
    ParameterType,
    ParameterValue,
    Schedule,
    Trigger,
    WatchEvent,
    WatchEventKind,
)

E = TypeVar("E", bound=enum.Enum)


def enum_from_proto(cls: type[E], value: int) -> E:
    """The member of ``cls`` numbered ``value``; UNSPECIFIED for a number this client does not know."""
    try:
        return cls(value)
    except ValueError:
        return cls(0)


# --- times --------------------------------------------------------------------------------------------------


def require_aware(value: datetime, what: str) -> datetime:
    """``value`` if it is timezone-aware; ValueError otherwise (a naive time is ambiguous on the wire)."""
    if value.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime, got naive {value!r}")
    return value


def timestamp_to_proto(value: datetime, what: str = "datetime") -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(require_aware(value, what).astimezone(UTC).replace(tzinfo=None))
    return ts


def timestamp_from_proto(ts: timestamp_pb2.Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


def optional_timestamp(message: Message, field: str) -> datetime | None:
    """The aware UTC time in ``message.field``, or None when the field is unset."""
    if not message.HasField(field):
        return None
    ts: timestamp_pb2.Timestamp = getattr(message, field)
    return timestamp_from_proto(ts)


def duration_to_proto(value: timedelta) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromTimedelta(value)
    return duration


# --- parameters ---------------------------------------------------------------------------------------------


def value_to_proto(value: ParameterValue, name: str = "value") -> pb.ParameterValue:
    """A ParameterValue message for a plain Python value (bool is checked first: it is an int subclass)."""
    if isinstance(value, bool):
        return pb.ParameterValue(bool_value=value)
    if isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise ValueError(f"parameter {name!r}: {value} does not fit in a 64-bit integer")
        return pb.ParameterValue(int_value=value)
    if isinstance(value, float):
        return pb.ParameterValue(double_value=value)
    if isinstance(value, str):
        return pb.ParameterValue(string_value=value)
    if isinstance(value, datetime):
        return pb.ParameterValue(timestamp_value=timestamp_to_proto(value, f"parameter {name!r}"))
    if isinstance(value, timedelta):
        return pb.ParameterValue(duration_value=duration_to_proto(value))
    raise TypeError(
        f"parameter {name!r}: unsupported type {type(value).__name__} "
        "(use bool, int, float, str, aware datetime or timedelta)"
    )


def value_from_proto(value: pb.ParameterValue) -> ParameterValue | None:
    """The plain Python value in a ParameterValue message; None when no field is set."""
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "double_value":
        return value.double_value
    if kind == "timestamp_value":
        return timestamp_from_proto(value.timestamp_value)
    if kind == "duration_value":
        return value.duration_value.ToTimedelta()
    return None


def parameters_to_proto(target: MessageMap[str, pb.ParameterValue], parameters: Mapping[str, object] | None) -> None:
    """Fill a ``map<string, ParameterValue>`` field from plain Python values."""
    for name, value in (parameters or {}).items():
        if not isinstance(name, str):
            raise TypeError(f"parameter names must be str, got {name!r}")
        target[name].CopyFrom(value_to_proto(value, name))  # type: ignore[arg-type]  # checked at run time


def parameters_from_proto(source: Mapping[str, pb.ParameterValue]) -> dict[str, ParameterValue]:
    result: dict[str, ParameterValue] = {}
    for name, message in source.items():
        value = value_from_proto(message)
        if value is not None:
            result[name] = value
    return result


# --- jobs and executions ------------------------------------------------------------------------------------


def declaration_from_proto(message: pb.ParameterDeclaration) -> ParameterDeclaration:
    default = value_from_proto(message.default_value) if message.HasField("default_value") else None
    return ParameterDeclaration(
        name=message.name,
        type=enum_from_proto(ParameterType, message.type),
        required=message.required,
        default_value=default,
        description=message.description,
    )


def job_from_proto(message: pb.Job) -> Job:
    return Job(
        id=message.id,
        name=message.name,
        description=message.description,
        parameters=tuple(declaration_from_proto(p) for p in message.parameters),
        can_cancel=message.can_cancel,
        state=enum_from_proto(JobState, message.state),
        progress=message.progress,
        status_text=message.status_text,
        last_start_time=optional_timestamp(message, "last_start_time"),
        last_finish_time=optional_timestamp(message, "last_finish_time"),
        execution_id=message.execution_id,
        schedules=tuple(schedule_from_proto(s) for s in message.schedules),
        schedules_paused=message.schedules_paused,
        type_name=message.type_name,
        disabled_schedules=tuple(message.disabled_schedules),
    )


def job_status_from_proto(message: pb.JobStatus) -> JobStatus:
    return JobStatus(
        job_id=message.job_id,
        state=enum_from_proto(JobState, message.state),
        progress=message.progress,
        status_text=message.status_text,
        last_start_time=optional_timestamp(message, "last_start_time"),
        last_finish_time=optional_timestamp(message, "last_finish_time"),
        execution_id=message.execution_id,
        sequence=message.sequence,
    )


def watch_event_from_proto(message: pb.WatchJobsResponse) -> WatchEvent:
    return WatchEvent(
        kind=enum_from_proto(WatchEventKind, message.kind),
        statuses=tuple(job_status_from_proto(s) for s in message.statuses),
        sequence=message.sequence,
    )


def execution_from_proto(message: pb.Execution) -> Execution:
    return Execution(
        id=message.id,
        job_id=message.job_id,
        parameters=parameters_from_proto(message.parameters),
        trigger=enum_from_proto(Trigger, message.trigger),
        state=enum_from_proto(ExecutionState, message.state),
        start_time=optional_timestamp(message, "start_time"),
        finish_time=optional_timestamp(message, "finish_time"),
        error=message.error,
        progress=message.progress,
        status_text=message.status_text,
        scheduled_time=optional_timestamp(message, "scheduled_time"),
        request_id=message.request_id,
        cancel_requested=message.cancel_requested,
    )


# --- schedules ----------------------------------------------------------------------------------------------


def schedule_to_proto(schedule: Schedule) -> pb.Schedule:
    """The Schedule message for a schedule's input fields (output-only fields are not sent)."""
    message = pb.Schedule(
        time_zone=schedule.time_zone,
        misfire_policy=schedule.misfire_policy.value,  # type: ignore[arg-type]
        max_catchup_runs=schedule.max_catchup_runs,
        overlap_policy=schedule.overlap_policy.value,  # type: ignore[arg-type]
    )
    spec = schedule.spec
    if isinstance(spec, IntervalSpec):
        message.interval.interval.CopyFrom(duration_to_proto(spec.every))
    elif isinstance(spec, CalendarSpec):
        message.calendar.days.extend(sorted(day.value for day in spec.days))  # type: ignore[misc]
        tod = spec.time_of_day
        message.calendar.time_of_day.CopyFrom(pb.TimeOfDay(hours=tod.hour, minutes=tod.minute, seconds=tod.second))
    elif isinstance(spec, CronSpec):
        message.cron.expression = spec.expression
    else:  # pragma: no cover - guarded by the type checker
        raise TypeError(f"unsupported schedule spec {spec!r}")
    if schedule.start_time is not None:
        message.start_time.CopyFrom(timestamp_to_proto(schedule.start_time, "start_time"))
    if schedule.end_time is not None:
        message.end_time.CopyFrom(timestamp_to_proto(schedule.end_time, "end_time"))
    if schedule.misfire_grace_period is not None:
        message.misfire_grace_period.CopyFrom(duration_to_proto(schedule.misfire_grace_period))
    parameters_to_proto(message.parameters, schedule.parameters)
    return message


def _spec_from_proto(message: pb.Schedule) -> IntervalSpec | CalendarSpec | CronSpec:
    which = message.WhichOneof("spec")
    if which == "interval":
        return IntervalSpec(every=message.interval.interval.ToTimedelta())
    if which == "calendar":
        tod = message.calendar.time_of_day
        days = frozenset(DayOfWeek(d) for d in message.calendar.days if d in DayOfWeek._value2member_map_)
        return CalendarSpec(days=days, time_of_day=time(tod.hours, tod.minutes, tod.seconds))
    return CronSpec(expression=message.cron.expression)


def schedule_from_proto(message: pb.Schedule) -> Schedule:
    grace = message.misfire_grace_period.ToTimedelta() if message.HasField("misfire_grace_period") else None
    return Schedule(
        spec=_spec_from_proto(message),
        start_time=optional_timestamp(message, "start_time"),
        end_time=optional_timestamp(message, "end_time"),
        time_zone=message.time_zone,
        parameters=parameters_from_proto(message.parameters),
        misfire_policy=enum_from_proto(MisfirePolicy, message.misfire_policy),
        misfire_grace_period=grace,
        max_catchup_runs=message.max_catchup_runs,
        overlap_policy=enum_from_proto(OverlapPolicy, message.overlap_policy),
        next_fire_times=tuple(timestamp_from_proto(ts) for ts in message.next_fire_times),
        last_fire_time=optional_timestamp(message, "last_fire_time"),
        overlap_skipped_count=message.overlap_skipped_count,
        misfire_skipped_count=message.misfire_skipped_count,
        not_started_count=message.not_started_count,
    )


def run_job_request(job_id: str, parameters: Mapping[str, object] | None, request_id: str) -> pb.RunJobRequest:
    request = pb.RunJobRequest(job_id=job_id, request_id=request_id)
    parameters_to_proto(request.parameters, parameters)
    return request


def set_schedule_request(
    job_id: str, schedules: Sequence[Schedule], *, validate_only: bool = False
) -> pb.SetScheduleRequest:
    if isinstance(schedules, Schedule):
        raise TypeError("set_schedule takes a sequence of schedules; wrap a single one in a list")
    return pb.SetScheduleRequest(
        job_id=job_id, schedules=[schedule_to_proto(s) for s in schedules], validate_only=validate_only
    )
