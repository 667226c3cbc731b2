"""Proto <-> domain conversion. Protobuf types stop here; the core never sees them."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, time, timedelta
from typing import Generic, TypeVar

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from xcron.server.core.errors import InvalidArgument
from xcron.server.core.events import BatchKind, JobStatus, WatchBatch
from xcron.server.core.jobs import Job
from xcron.server.core.manager import JobView
from xcron.server.core.model import (
    DEFAULT_MAX_CATCHUP_RUNS,
    CalendarSpec,
    CronSpec,
    ExecutionState,
    IntervalSpec,
    JobState,
    MisfirePolicy,
    OverlapPolicy,
    ParameterSpec,
    ParameterType,
    ParameterValue,
    Schedule,
    Trigger,
)
from xcron.server.core.ports import ExecutionRecord, ScheduleRecord
from xcron.v1 import job_service_pb2 as pb

V = TypeVar("V")

JOB_STATES = {
    JobState.NOT_YET_RUN: pb.JOB_STATE_NOT_YET_RUN,
    JobState.RUNNING: pb.JOB_STATE_RUNNING,
    JobState.COMPLETED: pb.JOB_STATE_COMPLETED,
    JobState.ABORTED: pb.JOB_STATE_ABORTED,
    JobState.CANCELLED: pb.JOB_STATE_CANCELLED,
}
EXECUTION_STATES = {
    ExecutionState.RUNNING: pb.EXECUTION_STATE_RUNNING,
    ExecutionState.COMPLETED: pb.EXECUTION_STATE_COMPLETED,
    ExecutionState.ABORTED: pb.EXECUTION_STATE_ABORTED,
    ExecutionState.CANCELLED: pb.EXECUTION_STATE_CANCELLED,
}
TRIGGERS = {Trigger.MANUAL: pb.TRIGGER_MANUAL, Trigger.SCHEDULE: pb.TRIGGER_SCHEDULE}
PARAMETER_TYPES = {
    ParameterType.STRING: pb.PARAMETER_TYPE_STRING,
    ParameterType.INT: pb.PARAMETER_TYPE_INT,
    ParameterType.BOOL: pb.PARAMETER_TYPE_BOOL,
    ParameterType.DOUBLE: pb.PARAMETER_TYPE_DOUBLE,
    ParameterType.TIMESTAMP: pb.PARAMETER_TYPE_TIMESTAMP,
    ParameterType.DURATION: pb.PARAMETER_TYPE_DURATION,
}
MISFIRE = {
    MisfirePolicy.RUN_ONCE: pb.MISFIRE_POLICY_RUN_ONCE,
    MisfirePolicy.SKIP: pb.MISFIRE_POLICY_SKIP,
    MisfirePolicy.RUN_ALL: pb.MISFIRE_POLICY_RUN_ALL,
}
OVERLAP = {
    OverlapPolicy.SKIP: pb.OVERLAP_POLICY_SKIP,
    OverlapPolicy.BUFFER_ONE: pb.OVERLAP_POLICY_BUFFER_ONE,
    OverlapPolicy.CANCEL_OTHER: pb.OVERLAP_POLICY_CANCEL_OTHER,
}
MISFIRE_FROM = {v: k for k, v in MISFIRE.items()} | {pb.MISFIRE_POLICY_UNSPECIFIED: MisfirePolicy.RUN_ONCE}
OVERLAP_FROM = {v: k for k, v in OVERLAP.items()} | {pb.OVERLAP_POLICY_UNSPECIFIED: OverlapPolicy.SKIP}
WATCH_KINDS = {
    BatchKind.SNAPSHOT: pb.WATCH_EVENT_KIND_SNAPSHOT,
    BatchKind.CHANGES: pb.WATCH_EVENT_KIND_CHANGES,
}

_MAX_SECONDS = 253402300799  # 9999-12-31T23:59:59Z, the end of Timestamp's range


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timestamp(value: datetime) -> Timestamp:
    # Integer arithmetic on the aware datetime: several times faster than Timestamp.FromDatetime.
    delta = value - _EPOCH
    return Timestamp(seconds=delta.days * 86400 + delta.seconds, nanos=delta.microseconds * 1000)


def optional_timestamp(value: datetime | None) -> Timestamp | None:
    return timestamp(value) if value is not None else None


def from_timestamp(ts: Timestamp, field: str) -> datetime:
    if not -62135596800 <= ts.seconds <= _MAX_SECONDS or not 0 <= ts.nanos < 1_000_000_000:
        raise InvalidArgument(field, "timestamp is out of range")
    return ts.ToDatetime(tzinfo=UTC)


def duration(value: timedelta) -> Duration:
    d = Duration()
    d.FromTimedelta(value)
    return d


_MAX_DURATION_SECONDS = 315_576_000_000  # google.protobuf.Duration: ±10,000 years


def from_duration(d: Duration, field: str) -> timedelta:
    """Duration's own rules: |seconds| <= 315,576,000,000, |nanos| < 1e9, both of one sign. xcron keeps
    microseconds: finer nanos are cut toward zero, so the value never grows past the range."""
    if (
        abs(d.seconds) > _MAX_DURATION_SECONDS
        or abs(d.nanos) >= 1_000_000_000
        or (d.seconds > 0 and d.nanos < 0)
        or (d.seconds < 0 and d.nanos > 0)
    ):
        raise InvalidArgument(
            field,
            f"duration {d.seconds}s {d.nanos}ns is out of range: at most ±315,576,000,000 s, "
            "nanos below 1e9 and of the same sign",
        )
    return d.ToTimedelta()


def parameter_value(value: ParameterValue) -> pb.ParameterValue:
    out = pb.ParameterValue()
    set_parameter_value(out, value)
    return out


def set_parameter_value(out: pb.ParameterValue, value: ParameterValue) -> None:
    """Sets `value` in place, e.g. in a map entry: building a message and copying it in cost three times as much
    (most of an Execution's conversion, for a job with a few parameters)."""
    if isinstance(value, bool):
        out.bool_value = value
    elif isinstance(value, int):
        out.int_value = value
    elif isinstance(value, float):
        out.double_value = value
    elif isinstance(value, str):
        out.string_value = value
    elif isinstance(value, datetime):
        out.timestamp_value.CopyFrom(timestamp(value))
    else:
        out.duration_value.CopyFrom(duration(value))


def from_parameter_value(value: pb.ParameterValue, field: str) -> ParameterValue:
    kind = value.WhichOneof("kind")
    match kind:
        case "string_value":
            return value.string_value
        case "int_value":
            return value.int_value
        case "bool_value":
            return value.bool_value
        case "double_value":
            return value.double_value
        case "timestamp_value":
            return from_timestamp(value.timestamp_value, field)
        case "duration_value":
            return from_duration(value.duration_value, field)
    raise InvalidArgument(field, "no value set (set exactly one of string_value, int_value, bool_value, ...)")


def from_parameters(values: Mapping[str, pb.ParameterValue], field: str = "parameters") -> dict[str, ParameterValue]:
    return {name: from_parameter_value(v, f"{field}.{name}") for name, v in values.items()}


def parameter_declaration(spec: ParameterSpec) -> pb.ParameterDeclaration:
    return pb.ParameterDeclaration(
        name=spec.name,
        type=PARAMETER_TYPES[spec.type],
        required=spec.required and spec.default is None,
        default_value=parameter_value(spec.default) if spec.default is not None else None,
        description=spec.description,
    )


def schedule(s: Schedule, record: ScheduleRecord | None = None, next_times: Sequence[datetime] = ()) -> pb.Schedule:
    out = pb.Schedule(
        start_time=timestamp(s.start),
        end_time=optional_timestamp(s.end),
        time_zone=s.time_zone,
        misfire_policy=MISFIRE[s.misfire_policy],
        misfire_grace_period=duration(s.misfire_grace) if s.misfire_grace else None,
        max_catchup_runs=s.max_catchup_runs,
        overlap_policy=OVERLAP[s.overlap_policy],
        next_fire_times=[timestamp(t) for t in next_times],
    )
    for name, value in s.parameters.items():
        set_parameter_value(out.parameters[name], value)
    spec = s.spec
    if isinstance(spec, IntervalSpec):
        out.interval.interval.CopyFrom(duration(spec.every))
    elif isinstance(spec, CalendarSpec):
        out.calendar.days.extend(pb.DayOfWeek.ValueType(d) for d in sorted(spec.days))
        out.calendar.time_of_day.hours = spec.time_of_day.hour
        out.calendar.time_of_day.minutes = spec.time_of_day.minute
        out.calendar.time_of_day.seconds = spec.time_of_day.second
    else:
        out.cron.expression = spec.expression
    if record is not None:
        if record.last_run is not None:
            out.last_fire_time.CopyFrom(timestamp(record.last_run))
        out.overlap_skipped_count = record.overlap_skipped
        out.misfire_skipped_count = record.misfire_skipped
        out.not_started_count = record.not_started
    return out


def from_schedule(s: pb.Schedule, field: str, now: datetime) -> Schedule:
    kind = s.WhichOneof("spec")
    spec: IntervalSpec | CalendarSpec | CronSpec
    if kind == "interval":
        spec = IntervalSpec(every=from_duration(s.interval.interval, f"{field}.interval.interval"))
    elif kind == "calendar":
        days = set()
        for day in s.calendar.days:
            if not 1 <= day <= 7:
                raise InvalidArgument(f"{field}.calendar.days", f"{day} is not a day of the week (1 = Monday … 7)")
            days.add(int(day))
        tod = s.calendar.time_of_day
        if not (0 <= tod.hours <= 23 and 0 <= tod.minutes <= 59 and 0 <= tod.seconds <= 59):
            raise InvalidArgument(
                f"{field}.calendar.time_of_day",
                f"{tod.hours:02}:{tod.minutes:02}:{tod.seconds:02} is not a time of day",
            )
        spec = CalendarSpec(days=frozenset(days), time_of_day=time(tod.hours, tod.minutes, tod.seconds))
    elif kind == "cron":
        spec = CronSpec(expression=s.cron.expression.strip())
    else:
        raise InvalidArgument(field, "set one of interval, calendar or cron")
    if s.max_catchup_runs < 0:
        raise InvalidArgument(f"{field}.max_catchup_runs", "must not be negative")
    grace = (
        from_duration(s.misfire_grace_period, f"{field}.misfire_grace_period")
        if s.HasField("misfire_grace_period")
        else None
    )
    if grace is not None and grace < timedelta(0):
        raise InvalidArgument(f"{field}.misfire_grace_period", "must not be negative")
    if s.misfire_policy not in MISFIRE_FROM:
        raise InvalidArgument(f"{field}.misfire_policy", f"unknown value {s.misfire_policy}")
    if s.overlap_policy not in OVERLAP_FROM:
        raise InvalidArgument(f"{field}.overlap_policy", f"unknown value {s.overlap_policy}")
    start = from_timestamp(s.start_time, f"{field}.start_time") if s.HasField("start_time") else now
    end = from_timestamp(s.end_time, f"{field}.end_time") if s.HasField("end_time") else None
    return Schedule(
        spec=spec,
        start=start.replace(microsecond=0) if not s.HasField("start_time") else start,
        end=end,
        time_zone=s.time_zone.strip(),
        parameters=from_parameters(s.parameters, f"{field}.parameters"),
        misfire_policy=MISFIRE_FROM[s.misfire_policy],
        misfire_grace=grace or None,
        max_catchup_runs=s.max_catchup_runs or DEFAULT_MAX_CATCHUP_RUNS,
        overlap_policy=OVERLAP_FROM[s.overlap_policy],
    )


_JOB_TEMPLATES: dict[str, pb.Job] = {}


def _job_template(job_type: type[Job]) -> pb.Job:
    """What never changes about a job, built once: later copied, never modified."""
    cached = _JOB_TEMPLATES.get(job_type.id)
    if cached is None:
        cached = _JOB_TEMPLATES[job_type.id] = _build_job_template(job_type)
    return cached


def _build_job_template(job_type: type[Job]) -> pb.Job:
    return pb.Job(
        id=job_type.id,
        name=job_type.name,
        description=job_type.description,
        parameters=[parameter_declaration(p) for p in job_type.parameters],
        can_cancel=job_type.can_cancel,
        type_name=job_type.effective_type_name(),
    )


class _Kept(Generic[V]):
    """Conversions of immutable objects, remembered by the objects' ids: an entry holds its objects, so
    their ids cannot be reused while it is kept (a key found is those very objects). Beyond `size`
    entries the oldest goes; with `recent`, a hit makes its entry the newest."""

    __slots__ = ("_entries", "_recent", "_size")

    def __init__(self, size: int, *, recent: bool = False) -> None:
        self._entries: OrderedDict[object, tuple[object, V]] = OrderedDict()
        self._size = size
        self._recent = recent

    def get(self, key: object) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._recent:
            self._entries.move_to_end(key)
        return entry[1]

    def keep(self, key: object, held: object, value: V) -> V:
        """Remembers `value` under `key`, holding `held`: the objects whose ids the key is made of."""
        self._entries[key] = (held, value)
        if len(self._entries) > self._size:
            self._entries.popitem(last=False)
        return value


_SCHEDULES: _Kept[pb.Schedule] = _Kept(20_000, recent=True)


def _schedule_template(s: Schedule) -> pb.Schedule:
    """A schedule's own fields, converted once per Schedule object (they are immutable)."""
    built = _SCHEDULES.get(id(s))
    return _SCHEDULES.keep(id(s), s, schedule(s)) if built is None else built


def job(view: JobView) -> pb.Job:
    record = view.record
    out = pb.Job()
    out.CopyFrom(_job_template(view.job))
    out.state = JOB_STATES[record.state]
    out.progress = record.progress
    out.status_text = record.status_text
    if record.last_start is not None:
        out.last_start_time.CopyFrom(timestamp(record.last_start))
    if record.last_finish is not None:
        out.last_finish_time.CopyFrom(timestamp(record.last_finish))
    out.execution_id = record.execution_id
    out.schedules_paused = view.paused
    out.disabled_schedules.extend(view.disabled_schedules)
    for s, r, times in view.schedules:
        item = out.schedules.add()
        item.CopyFrom(_schedule_template(s))
        item.next_fire_times.extend(timestamp(t) for t in times)
        if r.last_run is not None:
            item.last_fire_time.CopyFrom(timestamp(r.last_run))
        item.overlap_skipped_count = r.overlap_skipped
        item.misfire_skipped_count = r.misfire_skipped
        item.not_started_count = r.not_started
    return out


def execution(record: ExecutionRecord) -> pb.Execution:
    out = pb.Execution(
        id=record.id,
        job_id=record.job_id,
        trigger=TRIGGERS[record.trigger],
        state=EXECUTION_STATES[record.state],
        start_time=timestamp(record.start_time),
        finish_time=optional_timestamp(record.finish_time),
        error=record.error,
        progress=record.progress,
        status_text=record.status_text,
        scheduled_time=optional_timestamp(record.scheduled_time),
        request_id=record.request_id,
        cancel_requested=record.cancel_requested,
    )
    for name, value in record.parameters.items():
        set_parameter_value(out.parameters[name], value)
    return out


def job_status(status: JobStatus) -> pb.JobStatus:
    record = status.record
    return pb.JobStatus(
        job_id=record.job_id,
        state=JOB_STATES[record.state],
        progress=record.progress,
        status_text=record.status_text,
        last_start_time=optional_timestamp(record.last_start),
        last_finish_time=optional_timestamp(record.last_finish),
        execution_id=record.execution_id,
        sequence=status.sequence,
    )


_STATUSES: _Kept[pb.JobStatus] = _Kept(4096)


def _cached_status(status: JobStatus) -> pb.JobStatus:
    """One change goes to every watcher: convert it once, not once per watcher."""
    built = _STATUSES.get(id(status))
    return _STATUSES.keep(id(status), status, job_status(status)) if built is None else built


_CACHED_BATCHES = 256
_CACHED_BATCH_STATUSES = 256
"""Batches of at most this many statuses are remembered (a snapshot of many jobs is not): at most
_CACHED_BATCHES x this many statuses held."""
_BATCHES: _Kept[pb.WatchJobsResponse] = _Kept(_CACHED_BATCHES)


def _batch_key(batch: WatchBatch) -> tuple[object, ...] | None:
    """What makes two watchers' batches the same (their kind, sequence and status objects, in order); None
    for a batch too large to remember."""
    if len(batch.statuses) > _CACHED_BATCH_STATUSES:
        return None
    return (batch.kind, batch.sequence, *map(id, batch.statuses))


def watch_response(batch: WatchBatch) -> pb.WatchJobsResponse:
    """Watchers woken together hold the same changes, so their batches are the same: build the message once
    (it is never changed after, and serializing only reads it). With 1,000 watchers of 50 jobs, 99 % of
    the batches were built already, and building one was a quarter of the event loop's time."""
    key = _batch_key(batch)
    if key is None:
        return _watch_response(batch)
    built = _BATCHES.get(key)
    return _BATCHES.keep(key, batch.statuses, _watch_response(batch)) if built is None else built


def _watch_response(batch: WatchBatch) -> pb.WatchJobsResponse:
    return pb.WatchJobsResponse(
        kind=WATCH_KINDS[batch.kind],
        statuses=[_cached_status(s) for s in batch.statuses],
        sequence=batch.sequence,
    )


# WatchJobsResponse encoded without building it (gRPC's WatchJobs): protobuf's wire format lets a message be
# written field by field, and a repeated message field is each element's encoding behind the field's tag and
# length. The bytes are those SerializeToString gives (fields in number order, defaults left out; a test
# compares them), so a client cannot tell the difference.
_KIND_FIELD = 1 << 3 | 0  # WatchJobsResponse.kind, varint
_STATUSES_FIELD = 2 << 3 | 2  # WatchJobsResponse.statuses, length-delimited
_SEQUENCE_FIELD = 3 << 3 | 0  # WatchJobsResponse.sequence, varint


def _varint(value: int) -> bytes:
    """Protobuf's base-128 varint; a negative int64 as its two's complement (ten bytes)."""
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_KIND_BYTES = {kind: bytes([_KIND_FIELD]) + _varint(value) for kind, value in WATCH_KINDS.items()}
_STATUS_FIELDS: _Kept[bytes] = _Kept(4096)
_BATCH_BYTES: _Kept[bytes] = _Kept(_CACHED_BATCHES)


def _status_field(status: JobStatus) -> bytes:
    """One element of `statuses`, tag and length included; encoded once per change, as _cached_status."""
    encoded = _STATUS_FIELDS.get(id(status))
    if encoded is None:
        body = job_status(status).SerializeToString()
        encoded = _STATUS_FIELDS.keep(id(status), status, bytes([_STATUSES_FIELD]) + _varint(len(body)) + body)
    return encoded


def watch_response_bytes(batch: WatchBatch) -> bytes:
    """watch_response(batch).SerializeToString(), without building the message: each status is encoded once
    however many watchers and batches carry it, and a batch is their concatenation. A batch that many
    watchers hold is encoded once (as watch_response builds it once), so gRPC serializes nothing per stream."""
    key = _batch_key(batch)
    encoded = _BATCH_BYTES.get(key) if key is not None else None
    if encoded is not None:
        return encoded
    if not -(1 << 63) <= batch.sequence < 1 << 63:  # as protobuf refuses an int64 out of range
        raise ValueError(f"sequence {batch.sequence} is out of range for int64")
    parts = [_KIND_BYTES[batch.kind], *map(_status_field, batch.statuses)]
    if batch.sequence:
        parts.append(bytes([_SEQUENCE_FIELD]) + _varint(batch.sequence))
    encoded = b"".join(parts)
    return encoded if key is None else _BATCH_BYTES.keep(key, batch.statuses, encoded)
