"""Values and error fields (issue 12, items 7-9), against a real server: Timestamp and Duration keep to
protobuf's ranges and come back exactly, schedule errors name the exact field and never a server path,
and only IANA zone names are time zones."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from server_process import ServerProcess
from waiting import eventually

from xcron.client import Client, InvalidArgumentError, Schedule
from xcron.v1 import job_service_pb2 as pb
from xcron.v1 import job_service_pb2_grpc as pb_grpc

GRPCURL = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
MAX_SECONDS = 315_576_000_000


@pytest.fixture
def stub(server: ServerProcess) -> Iterator[pb_grpc.JobServiceStub]:
    with grpc.insecure_channel(server.target) as channel:
        yield pb_grpc.JobServiceStub(channel)


def bad_field(error: grpc.RpcError) -> tuple[grpc.StatusCode, list[str], str]:
    status = rpc_status.from_call(error)
    fields: list[str] = []
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            request = error_details_pb2.BadRequest()
            detail.Unpack(request)
            fields += [v.field for v in request.field_violations]
    return error.code(), fields, error.details() or ""


def run_types(stub: pb_grpc.JobServiceStub, **values: pb.ParameterValue) -> pb.RunJobResponse:
    parameters = {"s": pb.ParameterValue(string_value="x"), "i": pb.ParameterValue(int_value=1), **values}
    response: pb.RunJobResponse = stub.RunJob(pb.RunJobRequest(job_id="test.types", parameters=parameters), timeout=20)
    return response


@pytest.mark.parametrize(
    "duration",
    [
        Duration(seconds=MAX_SECONDS + 1),
        Duration(seconds=316_224_000_000),  # 10,000 years of 366 days: was accepted
        Duration(seconds=-MAX_SECONDS - 1),
        Duration(seconds=1, nanos=-1),  # mixed signs
        Duration(seconds=0, nanos=1_000_000_000),
    ],
)
def test_durations_out_of_range_are_invalid_argument(stub: pb_grpc.JobServiceStub, duration: Duration) -> None:
    with pytest.raises(grpc.RpcError) as failed:
        run_types(stub, u=pb.ParameterValue(duration_value=duration))
    code, fields, message = bad_field(failed.value)
    assert (code, fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["parameters.u"])
    assert "out of range" in message


def test_timestamps_out_of_range_are_invalid_argument(stub: pb_grpc.JobServiceStub) -> None:
    for ts in (Timestamp(seconds=253_402_300_800), Timestamp(seconds=-62_135_596_801)):
        with pytest.raises(grpc.RpcError) as failed:
            run_types(stub, t=pb.ParameterValue(timestamp_value=ts))
        assert bad_field(failed.value)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, ["parameters.t"])


def test_extreme_values_come_back_exactly_and_grpcurl_prints_the_history(
    server: ServerProcess, stub: pb_grpc.JobServiceStub
) -> None:
    extremes = {
        "u": pb.ParameterValue(duration_value=Duration(seconds=MAX_SECONDS, nanos=999_999_000)),
        "t": pb.ParameterValue(timestamp_value=Timestamp(seconds=253_402_300_799, nanos=999_999_000)),
    }
    run = run_types(stub, **extremes).execution
    negative = {"u": pb.ParameterValue(duration_value=Duration(seconds=-MAX_SECONDS, nanos=-999_999_000))}
    second = run_types(stub, **negative).execution

    def completed(execution_id: str) -> bool:
        got = stub.GetExecution(pb.GetExecutionRequest(execution_id=execution_id), timeout=20).execution
        return bool(got.state == pb.EXECUTION_STATE_COMPLETED)

    eventually(lambda: completed(run.id) and completed(second.id))
    got = stub.GetExecution(pb.GetExecutionRequest(execution_id=run.id), timeout=20).execution
    assert got.parameters["u"] == extremes["u"] and got.parameters["t"] == extremes["t"]
    got = stub.GetExecution(pb.GetExecutionRequest(execution_id=second.id), timeout=20).execution
    assert got.parameters["u"] == negative["u"]
    listed = subprocess.run(
        [GRPCURL, "-plaintext", "-max-time", "20", "-d", json.dumps({"job_id": "test.types"}), server.target,
         "xcron.v1.JobService/ListExecutions"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert '"315576000000.999999s"' in listed.stdout and '"-315576000000.999999s"' in listed.stdout


@pytest.mark.parametrize(
    ("schedule", "field", "needle"),
    [
        (pb.Schedule(interval=pb.IntervalSpec(interval=Duration(seconds=2**31))), "interval.interval", "at most"),
        (pb.Schedule(interval=pb.IntervalSpec(interval=Duration(seconds=10, nanos=5000))), "interval.interval",
         "whole number"),
        (pb.Schedule(interval=pb.IntervalSpec(interval=Duration(seconds=60)),
                     misfire_grace_period=Duration(seconds=10**9 + 1)), "misfire_grace_period", "at most"),
        (pb.Schedule(interval=pb.IntervalSpec(interval=Duration(seconds=60)),
                     misfire_grace_period=Duration(seconds=1, nanos=500_000_000)), "misfire_grace_period",
         "whole number"),
    ],
)  # fmt: skip
def test_schedule_errors_name_the_exact_field_and_no_server_path(
    server: ServerProcess, stub: pb_grpc.JobServiceStub, schedule: pb.Schedule, field: str, needle: str
) -> None:
    ok = pb.Schedule(interval=pb.IntervalSpec(interval=Duration(seconds=60)))
    with pytest.raises(grpc.RpcError) as failed:
        stub.SetSchedule(pb.SetScheduleRequest(job_id="test.tick", schedules=[ok, schedule]), timeout=20)
    code, fields, message = bad_field(failed.value)
    assert (code, fields) == (grpc.StatusCode.INVALID_ARGUMENT, [f"schedules[1].{field}"])
    assert needle in message and "positive whole number" not in message
    assert str(server.workdir) not in message and "xcron.xml:" not in message


@pytest.mark.parametrize("zone", ["localtime", "posixrules", "Factory", "posix/Europe/Paris", "right/UTC"])
def test_only_iana_zone_names_are_time_zones(server: ServerProcess, zone: str) -> None:
    with Client(server.target, timeout=20) as client, pytest.raises(InvalidArgumentError) as failed:
        client.set_schedule("test.tick", [Schedule.every(timedelta(hours=1), time_zone=zone)])
    assert [v.field for v in failed.value.field_violations] == ["schedules[0].time_zone"]
    assert "IANA" in failed.value.message
    with Client(server.target, timeout=20) as client:  # real names still work, links included
        for name in ("Europe/Paris", "UTC", "US/Eastern"):
            client.set_schedule("test.tick", [Schedule.every(timedelta(hours=1), time_zone=name)])


def test_server_refuses_a_non_iana_default_zone(tmp_path: Path) -> None:
    server = ServerProcess(workdir=tmp_path, extra_args=["--time-zone", "localtime"])
    result = subprocess.run(server.command(), capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2 and "IANA" in result.stderr
