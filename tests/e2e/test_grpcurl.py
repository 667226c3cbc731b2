"""The README's grpcurl recipes, run with the real grpcurl binary against a real server."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

GRPCURL = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")


def grpcurl(
    target: str, *args: str, data: dict[str, Any] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    cmd = [GRPCURL, "-plaintext", "-max-time", "20"]
    if data is not None:
        cmd += ["-d", json.dumps(data)]
    cmd += [target, *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise AssertionError(f"grpcurl {args} failed ({result.returncode}): {result.stderr}")
    return result


def call(target: str, method: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
    out = grpcurl(target, f"xcron.v1.JobService/{method}", data=data or {}).stdout
    return json.loads(out) if out.strip() else {}


def test_reflection_lists_and_describes_services(server: Any) -> None:
    services = grpcurl(server.target, "list").stdout.split()
    assert {"xcron.v1.JobService", "grpc.health.v1.Health"} <= set(services)
    described = grpcurl(server.target, "describe", "xcron.v1.JobService").stdout
    assert "rpc RunJob ( .xcron.v1.RunJobRequest ) returns ( .xcron.v1.RunJobResponse )" in described
    assert "Starts a job now." in described  # the proto's comments travel with reflection
    message = grpcurl(server.target, "describe", "xcron.v1.Schedule").stdout
    assert "oneof spec" in message and ".xcron.v1.CronSpec cron = 3;" in message


def test_health_check_serving(server: Any) -> None:
    out = grpcurl(server.target, "grpc.health.v1.Health/Check", data={"service": "xcron.v1.JobService"}).stdout
    assert json.loads(out) == {"status": "SERVING"}


def test_list_and_get_jobs(server: Any) -> None:
    jobs = call(server.target, "ListJobs")["jobs"]
    ids = [j["id"] for j in jobs]
    assert ids == sorted(ids)
    assert {"xcron.purge-history", "xcron.backup", "example.greet", "test.block"} <= set(ids)
    job = call(server.target, "GetJob", {"job_id": "example.greet"})["job"]
    assert job["state"] == "JOB_STATE_NOT_YET_RUN"
    assert [p["name"] for p in job["parameters"]] == ["name", "times", "shout", "delay"]


def watch_until(target: str, job_id: str, state: str, execution_id: str, timeout: float = 30) -> list[dict[str, Any]]:
    """Follows WatchJobs through grpcurl until the job shows `state` for that execution; returns the messages."""
    cmd = [GRPCURL, "-plaintext", "-max-time", str(timeout), "-d", json.dumps({"job_ids": [job_id]}),
           target, "xcron.v1.JobService/WatchJobs"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    decoder = json.JSONDecoder()
    messages: list[dict[str, Any]] = []
    buffer = ""
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            buffer += line
            try:
                message, _ = decoder.raw_decode(buffer.strip())
            except json.JSONDecodeError:
                continue
            buffer = ""
            messages.append(message)
            if any(s.get("state") == state and s.get("executionId") == execution_id
                   for s in message.get("statuses", [])):  # fmt: skip
                return messages
        raise AssertionError(f"stream ended before {job_id} was {state}: {messages}")
    finally:
        proc.kill()
        proc.wait()


def test_run_with_parameters_and_watch_until_completed(server: Any) -> None:
    run = call(
        server.target,
        "RunJob",
        {"job_id": "test.types", "parameters": {"s": {"string_value": "x"}, "i": {"int_value": "7"},
                                                "u": {"duration_value": "90s"}}},
    )["execution"]  # fmt: skip
    assert run["state"] == "EXECUTION_STATE_RUNNING"
    messages = watch_until(server.target, "test.types", "JOB_STATE_COMPLETED", run["id"])
    assert messages[0]["kind"] == "WATCH_EVENT_KIND_SNAPSHOT"
    sequences = [int(m["sequence"]) for m in messages]
    assert sequences == sorted(sequences)
    execution = call(server.target, "GetExecution", {"execution_id": run["id"]})["execution"]
    assert execution["state"] == "EXECUTION_STATE_COMPLETED"
    assert "i=7" in execution["statusText"] and "u=datetime.timedelta(seconds=90)" in execution["statusText"]


@pytest.mark.parametrize(
    ("method", "data", "code", "needle"),
    [
        ("GetJob", {"job_id": "no.such.job"}, "NotFound", "no job with id 'no.such.job'"),
        ("RunJob", {"job_id": "test.types", "parameters": {"i": {"int_value": "1"}}}, "InvalidArgument",
         "parameters.s: required parameter 's' is missing"),
        ("RunJob", {"job_id": "test.types", "parameters": {"s": {"string_value": "x"}, "i": {"string_value": "1"}}},
         "InvalidArgument", "parameters.i: parameter 'i' is declared int but a string was given"),
        ("RunJob", {"job_id": "test.types", "parameters": {"nope": {"bool_value": True}}}, "InvalidArgument",
         "unknown parameter 'nope'"),
        ("CancelJob", {"job_id": "test.block"}, "FailedPrecondition", "is not running"),
        ("CancelJob", {"job_id": "test.fail"}, "FailedPrecondition", "cannot be cancelled"),
        ("ListJobs", {"page_size": -1}, "InvalidArgument", "page_size"),
        ("SetSchedule", {"job_id": "test.tick", "schedules": [{"cron": {"expression": "61 * * * *"}}]},
         "InvalidArgument", "schedules[0].cron.expression"),
    ],
)  # fmt: skip
def test_errors_carry_status_and_field(server: Any, method: str, data: dict[str, Any], code: str, needle: str) -> None:
    result = grpcurl(server.target, f"xcron.v1.JobService/{method}", data=data, check=False)
    assert result.returncode != 0
    assert f"Code: {code}" in result.stderr
    assert needle in result.stderr
    assert "google.rpc.ErrorInfo" in result.stderr


def test_cancel_a_long_job(server: Any) -> None:
    run = call(server.target, "RunJob", {"job_id": "test.block"})["execution"]
    again = grpcurl(server.target, "xcron.v1.JobService/RunJob", data={"job_id": "test.block"}, check=False)
    assert "Code: Aborted" in again.stderr and "already running" in again.stderr
    cancelled = call(server.target, "CancelJob", {"job_id": "test.block"})["execution"]
    assert cancelled["id"] == run["id"] and cancelled["cancelRequested"] is True
    watch_until(server.target, "test.block", "JOB_STATE_CANCELLED", run["id"])
    execution = call(server.target, "GetExecution", {"execution_id": run["id"]})["execution"]
    assert execution["state"] == "EXECUTION_STATE_CANCELLED"


def test_failing_job_is_aborted_with_its_error(server: Any) -> None:
    run = call(
        server.target,
        "RunJob",
        {"job_id": "test.fail", "parameters": {"message": {"string_value": "disk on fire"}}},
    )
    execution_id = run["execution"]["id"]
    watch_until(server.target, "test.fail", "JOB_STATE_ABORTED", execution_id)
    execution = call(server.target, "GetExecution", {"execution_id": execution_id})["execution"]
    assert execution["state"] == "EXECUTION_STATE_ABORTED"
    assert execution["error"] == "RuntimeError: disk on fire"
    job = call(server.target, "GetJob", {"job_id": "test.fail"})["job"]
    assert job["state"] == "JOB_STATE_ABORTED" and "disk on fire" in job["statusText"]
