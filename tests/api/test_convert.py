"""proto <-> domain at the edge (api/convert.py): values round-trip with their type, and every refusal names
the offending field as the BadRequest will."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from typing import Any, cast

import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from xcron.server.api import convert
from xcron.server.core.errors import InvalidArgument
from xcron.server.core.events import BatchKind, JobStatus, WatchBatch
from xcron.server.core.model import (
    CalendarSpec,
    CronSpec,
    ExecutionState,
    IntervalSpec,
    JobState,
    MisfirePolicy,
    OverlapPolicy,
    ParameterValue,
    Schedule,
    Trigger,
)
from xcron.server.core.ports import ExecutionRecord, JobRecord
from xcron.v1 import job_service_pb2 as pb

NOW = datetime(2026, 3, 2, 8, 0, 30, 500_000, tzinfo=UTC)


@pytest.mark.parametrize(
    "value",
    ["text", 42, -(2**63), True, False, 0.25, datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC), timedelta(seconds=-1.5)],
)
def test_parameter_values_round_trip_with_their_type(value: ParameterValue) -> None:
    back = convert.from_parameter_value(convert.parameter_value(value), "parameters.x")
    assert back == value and type(back) is type(value)


def test_an_executions_parameters_round_trip_with_their_type_even_zero() -> None:
    """Set in place in the map's entries (set_parameter_value): a zero or False still says its kind."""
    values: dict[str, ParameterValue] = {
        "s": "", "i": 0, "b": False, "d": 0.0, "t": NOW, "dt": timedelta(0), "big": -(2**63), "neg": -1.5,
    }  # fmt: skip
    record = ExecutionRecord(
        id="e1", job_id="j", parameters=values, trigger=Trigger.MANUAL, state=ExecutionState.RUNNING, start_time=NOW
    )
    wire = pb.Execution.FromString(convert.execution(record).SerializeToString())
    back = convert.from_parameters(wire.parameters)
    assert back == values and all(type(back[k]) is type(v) for k, v in values.items())


def test_an_empty_parameter_value_names_its_field() -> None:
    with pytest.raises(InvalidArgument) as caught:
        convert.from_parameters({"n": pb.ParameterValue()})
    assert caught.value.field == "parameters.n"


@pytest.mark.parametrize(
    ("duration", "ok"),
    [
        (duration_pb2.Duration(seconds=315_576_000_000), True),
        (duration_pb2.Duration(seconds=315_576_000_001), False),
        (duration_pb2.Duration(seconds=1, nanos=-1), False),
        (duration_pb2.Duration(seconds=-1, nanos=-999_999_999), True),
    ],
)
def test_durations_follow_the_well_known_type_rules(duration: duration_pb2.Duration, ok: bool) -> None:
    if ok:
        assert convert.from_duration(duration, "d") == duration.ToTimedelta()
    else:
        with pytest.raises(InvalidArgument) as caught:
            convert.from_duration(duration, "d")
        assert caught.value.field == "d"


def test_timestamps_out_of_range_are_refused() -> None:
    with pytest.raises(InvalidArgument):
        convert.from_timestamp(timestamp_pb2.Timestamp(seconds=-62135596801), "t")
    assert convert.from_timestamp(convert.timestamp(NOW), "t") == NOW


def test_a_schedule_without_start_starts_now_to_the_second() -> None:
    s = pb.Schedule(cron=pb.CronSpec(expression="  0 9 * * 1-5 "), time_zone=" Europe/Paris ")
    schedule = convert.from_schedule(s, "schedules[0]", NOW)
    assert schedule.spec == CronSpec(expression="0 9 * * 1-5")
    assert schedule.start == NOW.replace(microsecond=0) and schedule.time_zone == "Europe/Paris"
    assert schedule.misfire_policy is MisfirePolicy.RUN_ONCE and schedule.overlap_policy is OverlapPolicy.SKIP


@pytest.mark.parametrize(
    ("message", "field"),
    [
        (pb.Schedule(), "schedules[2]"),
        (pb.Schedule(calendar=pb.CalendarSpec(days=[cast(Any, 8)])), "schedules[2].calendar.days"),
        (
            pb.Schedule(calendar=pb.CalendarSpec(days=[cast(Any, 1)], time_of_day=cast(Any, {"hours": 24}))),
            "schedules[2].calendar.time_of_day",
        ),
        (pb.Schedule(cron=pb.CronSpec(expression="* * * * *"), max_catchup_runs=-1), "schedules[2].max_catchup_runs"),
        (
            pb.Schedule(
                cron=pb.CronSpec(expression="* * * * *"), misfire_grace_period=duration_pb2.Duration(seconds=-1)
            ),
            "schedules[2].misfire_grace_period",
        ),
        (pb.Schedule(cron=pb.CronSpec(expression="* * * * *"), overlap_policy=99), "schedules[2].overlap_policy"),  # type: ignore[arg-type]
    ],
)
def test_schedule_refusals_name_the_field(message: pb.Schedule, field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        convert.from_schedule(message, "schedules[2]", NOW)
    assert caught.value.field == field


def test_a_schedule_reads_back_as_it_was_written() -> None:
    schedule = Schedule(
        spec=CalendarSpec(days=frozenset({1, 5}), time_of_day=time(23, 0)),
        start=NOW,
        end=NOW + timedelta(days=30),
        time_zone="Europe/Paris",
        parameters={"n": 3},
        misfire_policy=MisfirePolicy.SKIP,
        misfire_grace=timedelta(minutes=5),
        overlap_policy=OverlapPolicy.BUFFER_ONE,
    )
    assert convert.from_schedule(convert.schedule(schedule), "s", NOW) == schedule
    interval = Schedule(spec=IntervalSpec(every=timedelta(minutes=15)), start=NOW)
    assert convert.from_schedule(convert.schedule(interval), "s", NOW) == interval


def test_an_execution_converts_every_field() -> None:
    record = ExecutionRecord(
        id="e1",
        job_id="j",
        parameters={"n": 3},
        trigger=Trigger.SCHEDULE,
        state=ExecutionState.ABORTED,
        start_time=NOW,
        finish_time=NOW + timedelta(seconds=2),
        error="boom",
        progress=0.5,
        status_text="half",
        scheduled_time=NOW - timedelta(seconds=1),
        request_id="r",
        cancel_requested=True,
    )
    out = convert.execution(record)
    assert (out.id, out.job_id, out.error, out.progress, out.status_text, out.request_id) == (
        "e1",
        "j",
        "boom",
        0.5,
        "half",
        "r",
    )
    assert out.parameters["n"].int_value == 3 and out.cancel_requested
    assert out.state == pb.EXECUTION_STATE_ABORTED and out.trigger == pb.TRIGGER_SCHEDULE
    assert out.finish_time.ToDatetime(tzinfo=UTC) == NOW + timedelta(seconds=2)
    assert out.scheduled_time.ToDatetime(tzinfo=UTC) == NOW - timedelta(seconds=1)


def _status(job_id: str, sequence: int) -> JobStatus:
    return JobStatus(JobRecord(job_id=job_id, state=JobState.RUNNING, progress=0.5, status_text="half"), sequence)


def test_a_batch_many_watchers_hold_is_built_once_and_a_different_one_is_not_mistaken_for_it() -> None:
    a, b = _status("job.a", 2048), _status("job.b", 4096)
    first = convert.watch_response(WatchBatch(BatchKind.CHANGES, (a, b), 4096))
    again = convert.watch_response(WatchBatch(BatchKind.CHANGES, (a, b), 4096))  # another watcher's batch
    assert again is first
    assert [s.job_id for s in first.statuses] == ["job.a", "job.b"] and first.sequence == 4096
    assert first.kind == pb.WATCH_EVENT_KIND_CHANGES
    others = [
        WatchBatch(BatchKind.CHANGES, (b, a), 4096),  # the same changes in another order
        WatchBatch(BatchKind.CHANGES, (a,), 4096),
        WatchBatch(BatchKind.SNAPSHOT, (a, b), 4096),
        WatchBatch(BatchKind.CHANGES, (a, b), 6144),
        WatchBatch(BatchKind.CHANGES, (_status("job.a", 2048), b), 4096),  # an equal status, another change
    ]
    built = [convert.watch_response(batch) for batch in others]
    assert all(message is not first for message in built)
    assert [s.job_id for s in built[0].statuses] == ["job.b", "job.a"]
    assert built[2].kind == pb.WATCH_EVENT_KIND_SNAPSHOT and built[3].sequence == 6144


def test_a_large_snapshot_is_not_kept_for_the_next_watcher() -> None:
    statuses = tuple(_status(f"job.{i}", 2048) for i in range(convert._CACHED_BATCH_STATUSES + 1))
    batch = WatchBatch(BatchKind.SNAPSHOT, statuses, 2048)
    first = convert.watch_response(batch)
    assert convert.watch_response(batch) is not first
    assert len(first.statuses) == len(statuses)


def _varied_statuses() -> list[JobStatus]:
    """Statuses whose encodings differ in every way a field can: defaults left out, lengths over one varint
    byte, non-ASCII text, timestamps before and after 1970, large sequence numbers."""
    base = JobRecord(job_id="job.a", state=JobState.RUNNING, progress=0.5, status_text="half", execution_id="e1")
    return [
        JobStatus(JobRecord(job_id="job.b"), 0),  # every field at its default but the id
        JobStatus(base, 2048),
        JobStatus(replace(base, status_text="é 😀 " * 60, progress=1.0), 2**53 - 1),
        JobStatus(replace(base, job_id="j" * 300, last_start=NOW), 127),
        JobStatus(replace(base, last_finish=datetime(1960, 1, 1, tzinfo=UTC)), 128),
    ]


@pytest.mark.parametrize("kind", list(BatchKind))
@pytest.mark.parametrize("sequence", [0, 1, 127, 128, 2**53 - 1, 2**63 - 1, -1, -(2**63)])
def test_an_encoded_batch_is_the_bytes_protobuf_gives_for_its_message(kind: BatchKind, sequence: int) -> None:
    statuses = _varied_statuses()
    for count in range(len(statuses) + 1):
        batch = WatchBatch(kind, tuple(statuses[:count]), sequence)
        encoded = convert.watch_response_bytes(batch)
        assert encoded == convert.watch_response(batch).SerializeToString(deterministic=True)
        back = pb.WatchJobsResponse.FromString(encoded)
        assert [s.job_id for s in back.statuses] == [s.job_id for s in statuses[:count]]
        assert (back.kind, back.sequence) == (convert.WATCH_KINDS[kind], sequence)


def test_an_encoded_batch_many_watchers_hold_is_encoded_once_and_a_different_one_anew() -> None:
    a, b = _status("job.a", 2048), _status("job.b", 4096)
    first = convert.watch_response_bytes(WatchBatch(BatchKind.CHANGES, (a, b), 4096))
    assert convert.watch_response_bytes(WatchBatch(BatchKind.CHANGES, (a, b), 4096)) is first
    other = convert.watch_response_bytes(WatchBatch(BatchKind.CHANGES, (b, a), 4096))
    assert other is not first and [s.job_id for s in pb.WatchJobsResponse.FromString(other).statuses] == [
        "job.b",
        "job.a",
    ]
    equal_change = convert.watch_response_bytes(WatchBatch(BatchKind.CHANGES, (_status("job.a", 2048), b), 4096))
    assert equal_change is not first and equal_change == first  # encoded anew, to the same bytes


@pytest.mark.parametrize("sequence", [2**63, -(2**63) - 1])
def test_a_sequence_out_of_int64_range_is_refused_as_protobuf_refuses_it(sequence: int) -> None:
    batch = WatchBatch(BatchKind.CHANGES, (), sequence)
    with pytest.raises(ValueError):
        convert.watch_response(batch).SerializeToString()
    with pytest.raises(ValueError, match="out of range"):
        convert.watch_response_bytes(batch)


def test_conversions_are_kept_by_identity_and_the_oldest_go_first() -> None:
    """The caches behind the converters: an entry holds its object (so its id stays that object's), at most
    `size` are kept, and with `recent` a hit keeps an entry longer."""
    plain: convert._Kept[str] = convert._Kept(2)
    recent: convert._Kept[str] = convert._Kept(2, recent=True)
    a, b, c = object(), object(), object()
    for kept in (plain, recent):
        kept.keep(id(a), a, "a")
        kept.keep(id(b), b, "b")
        assert kept.get(id(a)) == "a"  # a hit: with `recent`, a is now the newest
        kept.keep(id(c), c, "c")
    assert (plain.get(id(a)), plain.get(id(b)), plain.get(id(c))) == (None, "b", "c")
    assert (recent.get(id(a)), recent.get(id(b)), recent.get(id(c))) == ("a", None, "c")
