"""Random and mutated requests of every RPC against a live server: no crash, never UNKNOWN or
INTERNAL, and the server still answers its health check afterwards."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from server_process import ServerProcess

from xcron.v1 import job_service_pb2 as pb

SERVICE = "/xcron.v1.JobService/"
FORBIDDEN = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
# Job ids the fuzzer may touch: quick jobs only (and unknown ones), so runs never pile up.
JOB_IDS = st.sampled_from(["test.tick", "test.types", "test.fail", "nope", "", "x" * 300, "test.tick\x00"])
TEXT = st.text(max_size=40)


@st.composite
def timestamps(draw: st.DrawFn) -> Any:
    from google.protobuf.timestamp_pb2 import Timestamp

    return Timestamp(seconds=draw(st.integers(-(2**40), 2**40)), nanos=draw(st.integers(-(2**31), 2**31 - 1)))


@st.composite
def durations(draw: st.DrawFn) -> Any:
    from google.protobuf.duration_pb2 import Duration

    return Duration(seconds=draw(st.integers(-(2**40), 2**40)), nanos=draw(st.integers(-(2**31), 2**31 - 1)))


@st.composite
def values(draw: st.DrawFn) -> pb.ParameterValue:
    kind = draw(st.sampled_from(["s", "i", "b", "d", "t", "u", "none"]))
    match kind:
        case "s":
            return pb.ParameterValue(string_value=draw(TEXT))
        case "i":
            return pb.ParameterValue(int_value=draw(st.integers(-(2**63), 2**63 - 1)))
        case "b":
            return pb.ParameterValue(bool_value=draw(st.booleans()))
        case "d":
            return pb.ParameterValue(double_value=draw(st.floats(allow_nan=True, allow_infinity=True)))
        case "t":
            return pb.ParameterValue(timestamp_value=draw(timestamps()))
        case "u":
            return pb.ParameterValue(duration_value=draw(durations()))
    return pb.ParameterValue()


PARAMETERS = st.dictionaries(
    st.sampled_from(["s", "i", "b", "d", "t", "u", "label", "message", "zz"]), values(), max_size=4
)


@st.composite
def schedules(draw: st.DrawFn) -> pb.Schedule:
    s = pb.Schedule(
        time_zone=draw(st.sampled_from(["", "UTC", "Europe/Paris", "Mars/Base", "../etc", "America/New_York"])),
        misfire_policy=pb.MisfirePolicy.ValueType(draw(st.integers(0, 5))),
        overlap_policy=pb.OverlapPolicy.ValueType(draw(st.integers(0, 5))),
        max_catchup_runs=draw(st.integers(-5, 2**31 - 1)),
    )
    if draw(st.booleans()):
        s.start_time.CopyFrom(draw(timestamps()))
    if draw(st.booleans()):
        s.end_time.CopyFrom(draw(timestamps()))
    if draw(st.booleans()):
        s.misfire_grace_period.CopyFrom(draw(durations()))
    for name, value in draw(PARAMETERS).items():
        s.parameters[name].CopyFrom(value)
    kind = draw(st.sampled_from(["interval", "calendar", "cron", "none"]))
    if kind == "interval":
        s.interval.interval.CopyFrom(draw(durations()))
    elif kind == "calendar":
        s.calendar.days.extend(pb.DayOfWeek.ValueType(d) for d in draw(st.lists(st.integers(0, 9), max_size=9)))
        s.calendar.time_of_day.hours = draw(st.integers(-2, 30))
        s.calendar.time_of_day.minutes = draw(st.integers(-2, 70))
        s.calendar.time_of_day.seconds = draw(st.integers(-2, 70))
    elif kind == "cron":
        s.cron.expression = draw(st.one_of(TEXT, st.sampled_from(["* * * * *", "0 3 * * 1-5", "@daily", "61 * * * *"])))
    return s


PAGE = st.integers(-(2**31), 2**31 - 1)
# Page tokens: random text, or base64 of JSON lists that look almost like the server's own tokens.
JSON_ITEMS = st.one_of(
    st.sampled_from(["jobs", "executions", "test.tick", "2026-01-01T00:00:00+00:00"]), st.integers(), TEXT
)
TOKENS = st.one_of(
    TEXT,
    st.lists(JSON_ITEMS, max_size=5).map(lambda v: base64.urlsafe_b64encode(json.dumps(v).encode()).decode()),
)
REQUESTS: dict[str, st.SearchStrategy[Message]] = {
    "ListJobs": st.builds(pb.ListJobsRequest, page_size=PAGE, page_token=TOKENS),
    "GetJob": st.builds(pb.GetJobRequest, job_id=JOB_IDS, next_fire_time_count=PAGE),
    "RunJob": st.builds(pb.RunJobRequest, job_id=JOB_IDS, parameters=PARAMETERS, request_id=TEXT),
    "CancelJob": st.builds(pb.CancelJobRequest, job_id=JOB_IDS, execution_id=TEXT),
    "SetSchedule": st.builds(pb.SetScheduleRequest, job_id=JOB_IDS, schedules=st.lists(schedules(), max_size=3)),
    "PauseSchedule": st.builds(pb.PauseScheduleRequest, job_id=JOB_IDS),
    "ResumeSchedule": st.builds(pb.ResumeScheduleRequest, job_id=JOB_IDS),
    "ReloadSchedules": st.just(pb.ReloadSchedulesRequest()),
    "ListExecutions": st.builds(pb.ListExecutionsRequest, job_id=JOB_IDS, page_size=PAGE, page_token=TOKENS),
    "GetExecution": st.builds(pb.GetExecutionRequest, execution_id=TEXT),
    "WatchJobs": st.builds(
        pb.WatchJobsRequest, job_ids=st.lists(JOB_IDS, max_size=3), after_sequence=st.integers(-(2**63), 2**63 - 1)
    ),
}


@st.composite
def mutated(draw: st.DrawFn, strategy: st.SearchStrategy[Message]) -> bytes:
    """A valid request's bytes with random flips, insertions and cuts: what a broken client sends."""
    data = bytearray(draw(strategy).SerializeToString())
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["flip", "insert", "cut"]))
        position = draw(st.integers(0, len(data)))
        if op == "flip" and data:
            data[min(position, len(data) - 1)] ^= draw(st.integers(1, 255))
        elif op == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=8))
        elif data:
            del data[position:]
    return bytes(data)


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(workdir=tmp_path_factory.mktemp("fuzz")).start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def channel(fuzz_server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(fuzz_server.target) as channel:
        yield channel


def call(channel: grpc.Channel, method: str, payload: bytes) -> None:
    identity = lambda b: b  # noqa: E731 - send the bytes as they are
    try:
        if method == "WatchJobs":
            stream = channel.unary_stream(SERVICE + method, identity, identity)(payload, timeout=10)
            next(iter(stream), None)
            stream.cancel()
        else:
            channel.unary_unary(SERVICE + method, identity, identity)(payload, timeout=10)
    except grpc.RpcError as error:
        code = error.code()
        assert code not in FORBIDDEN, f"{method} answered {code}: {error.details()}"
        assert code != grpc.StatusCode.CANCELLED or method == "WatchJobs"


SETTINGS = settings(
    max_examples=int(os.environ.get("XCRON_FUZZ_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@pytest.mark.parametrize("method", sorted(REQUESTS))
@SETTINGS
@given(data=st.data())
def test_random_requests_never_crash_or_answer_unknown(channel: grpc.Channel, method: str, data: st.DataObject) -> None:
    strategy = REQUESTS[method]
    payload = data.draw(st.one_of(strategy.map(lambda m: m.SerializeToString()), mutated(strategy)))
    call(channel, method, payload)


def test_server_is_healthy_after_the_fuzzing(channel: grpc.Channel, fuzz_server: ServerProcess) -> None:
    response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert response.status == health_pb2.HealthCheckResponse.SERVING
    assert fuzz_server.process is not None and fuzz_server.process.poll() is None
    assert "Traceback" not in fuzz_server.log(), fuzz_server.log()
