"""xcronctl end to end: the real command in a subprocess against a real ``xcron-server`` (the ``server`` fixture).

Runs are synchronised on the server's watch stream (through the client, or ``xcronctl watch``), never on sleeps.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import re
import select
import shutil
import socket
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator, Mapping
from concurrent import futures
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import grpc
import pytest

from xcron.client import Client, DayOfWeek, JobState, Schedule
from xcron.ctl import _parse as parse
from xcron.ctl import _text as fmt
from xcron.ctl._app import main
from xcron.v1 import job_service_pb2 as pb

COMMAND = [sys.executable, "-m", "xcron.ctl"]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][0-9A-Za-z]")


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test's environment without any XCRON_* setting of the developer's shell, and wide tables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("XCRON_")}
    env["COLUMNS"] = "200"
    env.update(extra or {})
    return env


def xcronctl(
    *args: str, target: str | None = None, env: Mapping[str, str] | None = None, timeout: float = 20
) -> Result:
    """Run the real command (with ``--target`` when given) and return its exit code and output."""
    argv = [*COMMAND, *(["--target", target] if target else []), *args]
    done = subprocess.run(argv, capture_output=True, text=True, env=clean_env(env), timeout=timeout, check=False)
    assert "Traceback" not in done.stderr, done.stderr
    return Result(done.returncode, done.stdout, done.stderr)


def in_process(*args: str, target: str) -> Result:
    """The same command in this process: for the matrices of error cases, where a process each is too slow.

    The real process is still run for one case of each kind; this covers the rest of the combinations.
    """
    out, err = io.StringIO(), io.StringIO()
    try:
        code = main(["--target", target, *args], environ={}, stdout=out, stderr=err)
    except SystemExit as exit:  # argparse's own usage errors
        code = int(exit.code or 0)
    return Result(code, out.getvalue(), err.getvalue())


def ok(*args: str, target: str) -> Result:
    result = xcronctl(*args, target=target)
    assert result.code == 0, result
    return result


@pytest.fixture
def client(server: Any) -> Iterator[Client]:
    with Client(server.target, timeout=20) as c:
        yield c


def wait_for_status(client: Client, job_id: str, predicate: Any) -> None:
    """Follow the job's watch stream until a status satisfies ``predicate``."""
    stream = client.watch_jobs([job_id])
    try:
        for event in stream:
            if any(s.job_id == job_id and predicate(s) for s in event.statuses):
                return
    finally:
        stream.close()


# --- jobs and show ------------------------------------------------------------------------------------------


def test_jobs_table_json_and_option_placement(server: Any) -> None:
    table = ok("jobs", target=server.target)
    for text in ("test.block", "test.types", "Types", "NOT_YET_RUN", "Last finish"):
        assert text in table.out
    # global options work after the command too
    after = xcronctl("jobs", "--target", server.target, "--output", "json")
    assert after.code == 0, after
    jobs = after.json()["jobs"]
    ids = [job["id"] for job in jobs]
    assert {"test.block", "test.fail", "test.types", "test.tick"} <= set(ids) and ids == sorted(ids)
    assert len({tuple(job) for job in jobs}) == 1  # the same keys for every job
    types = next(job for job in jobs if job["id"] == "test.types")
    assert types["state"] == "NOT_YET_RUN" and types["last_start_time"] is None and types["schedules"] == []
    assert [p["name"] for p in types["parameters"]] == ["s", "i", "b", "d", "t", "u"]


def test_show_parameters_schedules_and_runs(server: Any) -> None:
    ok("run", "test.types", "-p", "s=x", "-p", "i=1", "--wait", target=server.target)
    ok("schedule", "test.types", "--every", "1h", "-p", "s=sched", "-p", "i=2", target=server.target)
    shown = ok("show", "test.types", target=server.target).out
    for text in ("Parameters", "timestamp", "duration", "Required", "1.5", "every 1h", "s=sched", "Recent runs"):
        assert text in shown, text
    assert "COMPLETED" in shown
    document = ok("show", "test.types", "--next", "3", "-o", "json", target=server.target).json()
    job, executions = document["job"], document["executions"]
    parameters = {p["name"]: p for p in job["parameters"]}
    assert parameters["s"]["required"] and parameters["s"]["type"] == "STRING" and parameters["s"]["default"] is None
    assert parameters["d"] == {"name": "d", "type": "DOUBLE", "required": False, "default": 1.5, "description": ""}
    [schedule] = job["schedules"]
    assert schedule["kind"] == "interval" and schedule["every"] == 3600.0 and len(schedule["next_fire_times"]) == 3
    assert schedule["parameters"] == {"i": 2, "s": "sched"}
    assert [e["state"] for e in executions] == ["COMPLETED"] and executions[0]["parameters"]["i"] == 1


# --- run ----------------------------------------------------------------------------------------------------


def test_run_typed_parameters_and_wait(server: Any) -> None:
    params = ["--param", "s=x", "--param", "i=3", "--param", "u=90s", "--param", "t=2026-01-01T00:00:00+00:00"]
    result = ok("run", "test.types", *params, "--param", "b=yes", "--wait", target=server.target)
    assert "COMPLETED" in result.out and "i=3" in result.out and "s='x'" in result.out and "b=True" in result.out
    document = ok("run", "test.types", *params, "-p", "d=2.5", "-p", "b=0", "-w", "-o", "json", target=server.target)
    execution = document.json()["execution"]
    assert execution["state"] == "COMPLETED" and execution["trigger"] == "MANUAL" and execution["progress"] == 1.0
    assert execution["parameters"] == {
        "b": False,
        "d": 2.5,
        "i": 3,
        "s": "x",
        "t": "2026-01-01T00:00:00+00:00",
        "u": 90.0,
    }
    assert execution["duration"] is not None and execution["error"] == ""


def test_run_without_wait_prints_the_execution_id(server: Any, client: Client) -> None:
    result = ok("run", "test.tick", "--request-id", "req-1", target=server.target)
    execution_id = result.out.strip()
    wait_for_status(client, "test.tick", lambda s: s.execution_id == execution_id and s.state.finished)
    again = ok("run", "test.tick", "--request-id", "req-1", "-o", "json", target=server.target)
    assert again.json()["execution"]["id"] == execution_id  # the same request id: the first execution
    assert client.get_execution(execution_id).request_id == "req-1"


def test_bad_or_unknown_parameter_is_a_usage_error_and_nothing_runs(server: Any) -> None:
    bad = xcronctl("run", "test.types", "--param", "s=x", "--param", "i=abc", "--wait", target=server.target)
    assert bad.code == 2 and bad.err.startswith("xcronctl: parameter 'i'") and "abc" in bad.err and bad.out == ""
    for params, name in (
        (["s=x", "i=1", "zz=1"], "'zz'"),
        (["s=x", "i=1", "t=2026-01-01T00:00"], "'t'"),  # no offset
        (["i=1"], "'s'"),  # required
        (["s=x", "i=1", "b=maybe"], "'b'"),
        (["s=x", "i=1", "d=fast"], "'d'"),
        (["s=x", "i=1", "u=soon"], "'u'"),
        (["s=x", "i=99999999999999999999"], "'i'"),
        (["s=x", "i=1", "i=2"], "'i'"),
        (["s=x", "i"], "NAME=VALUE"),
    ):
        result = in_process("run", "test.types", *(f"--param={p}" for p in params), target=server.target)
        assert result.code == 2 and name in result.err, (params, result)
    history = ok("history", "test.types", "-o", "json", target=server.target).json()
    assert history == {"job_id": "test.types", "executions": []}


def test_unknown_job_is_not_found_exit_4(server: Any) -> None:
    result = xcronctl("run", "no.such", target=server.target)
    assert result.code == 4 and result.err.startswith("xcronctl: NOT_FOUND: ") and "no.such" in result.err
    for args in (
        ["show", "no.such"],
        ["cancel", "no.such"],
        ["schedule", "no.such", "--pause"],
        ["history", "no.such"],
    ):
        result = in_process(*args, target=server.target)
        assert result.code == 4 and result.err.startswith("xcronctl: NOT_FOUND: "), (args, result)


def test_run_wait_of_a_failing_job_exits_1_with_the_error(server: Any) -> None:
    result = xcronctl("run", "test.fail", "--param", "message=kaput", "--wait", target=server.target)
    assert result.code == 1, result
    assert "ABORTED" in result.out and "RuntimeError: kaput" in result.err


def test_cancel_a_running_job(server: Any, client: Client) -> None:
    execution_id = ok("run", "test.block", target=server.target).out.strip()
    cancel = ok("cancel", "test.block", "-o", "json", target=server.target).json()["execution"]
    assert cancel["id"] == execution_id and cancel["cancel_requested"] is True
    wait_for_status(client, "test.block", lambda s: s.execution_id == execution_id and s.state.finished)
    [last] = ok("history", "test.block", "-o", "json", target=server.target).json()["executions"]
    assert last["id"] == execution_id and last["state"] == "CANCELLED" and last["finish_time"] is not None
    again = xcronctl("cancel", "test.block", target=server.target)
    assert again.code == 4 and "FAILED_PRECONDITION" in again.err


def test_run_wait_ends_3_when_cancelled(server: Any, client: Client) -> None:
    stream = client.watch_jobs(["test.block"])
    try:
        next(stream)  # subscribed before the run starts, so its RUNNING status cannot be missed
        waiting = subprocess.Popen(
            [*COMMAND, "--target", server.target, "run", "test.block", "--wait"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_env(),
        )
        for event in stream:
            if any(s.state is JobState.RUNNING for s in event.statuses):
                break
    finally:
        stream.close()
    ok("cancel", "test.block", target=server.target)
    out, err = waiting.communicate(timeout=20)
    assert waiting.returncode == 3, (out, err)
    assert "CANCELLED" in out and "cancel" in err


# --- schedules ----------------------------------------------------------------------------------------------


def test_schedule_every_days_cron_pause_resume_clear(server: Any) -> None:
    target = server.target
    before = server.schedule_file.read_text() if server.schedule_file.exists() else ""

    job = ok("schedule", "test.tick", "--every", "15m", "-p", "label=q", "-o", "json", target=target).json()["job"]
    [every] = job["schedules"]
    assert (every["kind"], every["every"], every["summary"], every["parameters"]) == (
        "interval",
        900.0,
        "every 15m",
        {"label": "q"},
    )
    assert len(every["next_fire_times"]) == 5
    after_every = server.schedule_file.read_text()
    assert after_every != before and 'interval="900"' in after_every

    printed = ok("schedule", "test.tick", "--add", "--days", "mon,fri", "--at", "23:00", "--tz", "Europe/Paris",
                 "--misfire", "skip", "--overlap", "buffer_one", target=target).out  # fmt: skip
    assert "Mon,Fri 23:00 Europe/Paris" in printed and "every 15m" in printed
    job = ok("show", "test.tick", "-o", "json", target=target).json()["job"]
    interval, calendar = job["schedules"]
    assert interval["kind"] == "interval"
    assert calendar["kind"] == "calendar" and calendar["days"] == ["MONDAY", "FRIDAY"]
    assert calendar["time_of_day"] == "23:00:00" and calendar["time_zone"] == "Europe/Paris"
    assert calendar["misfire_policy"] == "SKIP" and calendar["overlap_policy"] == "BUFFER_ONE"
    for fire in calendar["next_fire_times"]:
        local = datetime.fromisoformat(fire).astimezone(ZoneInfo("Europe/Paris"))
        assert local.strftime("%a %H:%M") in ("Mon 23:00", "Fri 23:00")
    assert 'days="Monday Friday"' in server.schedule_file.read_text()

    job = ok("schedule", "test.tick", "--cron", "0 3 * * *", "--tz", "America/New_York",
             "--stop", "2099-01-01T00:00:00Z", "-o", "json", target=target).json()["job"]  # fmt: skip
    [cron] = job["schedules"]  # replaced, not added
    assert cron["kind"] == "cron" and cron["expression"] == "0 3 * * *"
    assert cron["summary"] == "cron 0 3 * * * (America/New_York)" and cron["end_time"] == "2099-01-01T00:00:00+00:00"
    text = server.schedule_file.read_text()
    assert 'expression="0 3 * * *"' in text and 'interval="900"' not in text
    assert "cron 0 3 * * * (America/New_York)" in ok("jobs", target=target).out

    paused = ok("schedule", "test.tick", "--pause", "-o", "json", target=target).json()["job"]
    assert paused["schedules_paused"] is True and paused["schedules"][0]["next_fire_times"] == []
    assert 'xc:paused="true"' in server.schedule_file.read_text()
    assert "paused" in ok("jobs", target=target).out
    resumed = ok("schedule", "test.tick", "--resume", "-o", "json", target=target).json()["job"]
    assert resumed["schedules_paused"] is False and resumed["schedules"][0]["next_fire_times"]
    assert "xc:paused" not in server.schedule_file.read_text()

    bad = xcronctl("schedule", "test.tick", "--cron", "not a cron", target=target)
    assert bad.code == 4 and "INVALID_ARGUMENT" in bad.err and "schedules[0].cron.expression" in bad.err
    assert 'expression="0 3 * * *"' in server.schedule_file.read_text()  # a refused change changes nothing

    cleared = ok("schedule", "test.tick", "--clear", "-o", "json", target=target).json()["job"]
    assert cleared["schedules"] == []
    assert "0 3 * * *" not in server.schedule_file.read_text()


def test_schedule_usage_errors(server: Any) -> None:
    cases = [
        (["--every", "15m", "--cron", "* * * * *"], "one of"),
        (["--days", "mon"], "--at"),
        (["--every", "soon"], "duration"),
        (["--every", "0.5s"], "whole seconds"),
        (["--days", "someday", "--at", "10:00"], "someday"),
        (["--at", "25:00"], "time of day"),
        (["--cron", "* * * * *", "--tz", "Mars/Olympus"], "Mars/Olympus"),
        (["--every", "1h", "--start", "yesterday"], "--start"),
        (["--pause", "--tz", "UTC"], "--tz"),
        (["--every", "1h", "-p", "nope=1"], "'nope'"),
    ]
    for args, words in cases:
        result = in_process("schedule", "test.tick", *args, target=server.target)
        assert result.code == 2 and words in result.err, (args, result)
    real = xcronctl("schedule", "test.tick", "--days", "mon", target=server.target)
    assert real.code == 2 and real.err == "xcronctl: --days needs --at (the time of day)\n"
    assert "test.tick has no schedules" in ok("schedule", "test.tick", target=server.target).out
    assert not server.schedule_file.exists() or "<schedule" not in server.schedule_file.read_text()


# --- history and watch --------------------------------------------------------------------------------------


def test_history_newest_first_and_limit(server: Any) -> None:
    for label in ("one", "two"):
        ok("run", "test.tick", "-p", f"label={label}", "--wait", target=server.target)
    executions = ok("history", "test.tick", "-o", "json", target=server.target).json()["executions"]
    assert [e["parameters"]["label"] for e in executions] == ["two", "one"]
    assert all(e["state"] == "COMPLETED" and e["trigger"] == "MANUAL" for e in executions)
    [newest] = ok("history", "test.tick", "--limit", "1", "-o", "json", target=server.target).json()["executions"]
    assert newest["id"] == executions[0]["id"]
    table = ok("history", "test.tick", target=server.target).out
    assert "tick two for manual" in table and executions[1]["id"] in table


def test_watch_count_json_and_table(server: Any) -> None:
    line = ok("watch", "--count", "1", "--output", "json", target=server.target).out
    [event] = [json.loads(text) for text in line.splitlines()]
    assert event["kind"] == "SNAPSHOT" and event["sequence"] > 0
    assert {"test.block", "test.types"} <= {s["job_id"] for s in event["statuses"]}
    one = ok("watch", "test.types", "--count", "1", "-o", "json", target=server.target).out
    assert [s["job_id"] for s in json.loads(one)["statuses"]] == ["test.types"]
    table = ok("watch", "test.tick", "test.fail", "--count", "1", target=server.target).out
    assert "test.tick" in table and "test.fail" in table and "test.block" not in table


def test_watch_follows_a_run(server: Any) -> None:
    """The run starts after watch has its snapshot: `--count 2` then ends on the run's first change."""
    watcher = subprocess.Popen(
        [*COMMAND, "--target", server.target, "watch", "test.tick", "--count", "2", "-o", "json"],
        stdout=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    assert watcher.stdout is not None
    snapshot = json.loads(watcher.stdout.readline())
    assert snapshot["kind"] == "SNAPSHOT" and snapshot["statuses"][0]["state"] == "NOT_YET_RUN"
    ok("run", "test.tick", target=server.target)
    change = json.loads(watcher.stdout.readline())
    assert watcher.wait(20) == 0
    assert change["kind"] == "CHANGES" and change["statuses"][0]["state"] in ("RUNNING", "COMPLETED")


# --- connection settings ------------------------------------------------------------------------------------


def test_env_target_and_unreachable_server(server: Any) -> None:
    result = xcronctl("jobs", "-o", "json", env={"XCRON_TARGET": server.target})
    assert result.code == 0 and result.json()["jobs"]
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    down = xcronctl("jobs", env={"XCRON_TARGET": f"127.0.0.1:{port}", "XCRON_TIMEOUT": "5"})
    assert down.code == 4 and down.err.startswith("xcronctl: UNAVAILABLE: ")


class RecordingJobService:
    """Just ListJobs, remembering the metadata each call carried (for the token and TLS settings)."""

    def __init__(self) -> None:
        self.metadata: list[dict[str, str]] = []

    def list_jobs(self, request: pb.ListJobsRequest, context: grpc.ServicerContext) -> pb.ListJobsResponse:
        self.metadata.append({key: str(value) for key, value in context.invocation_metadata()})
        return pb.ListJobsResponse(jobs=[pb.Job(id="fake.job", name="Fake", state=pb.JOB_STATE_COMPLETED)])

    def handler(self) -> grpc.GenericRpcHandler:
        list_jobs = grpc.unary_unary_rpc_method_handler(
            self.list_jobs,
            request_deserializer=pb.ListJobsRequest.FromString,
            response_serializer=pb.ListJobsResponse.SerializeToString,
        )
        return grpc.method_handlers_generic_handler("xcron.v1.JobService", {"ListJobs": list_jobs})


@pytest.fixture
def recording_server() -> Iterator[tuple[grpc.Server, RecordingJobService]]:
    service = RecordingJobService()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=[service.handler()])
    yield server, service
    server.stop(None)


def test_env_token_is_sent_as_bearer_metadata(recording_server: tuple[grpc.Server, RecordingJobService]) -> None:
    server, service = recording_server
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    result = xcronctl("jobs", "-o", "json", env={"XCRON_TARGET": f"127.0.0.1:{port}", "XCRON_TOKEN": "s3cret"})
    assert result.code == 0, result
    assert [job["id"] for job in result.json()["jobs"]] == ["fake.job"]
    assert service.metadata[-1]["authorization"] == "Bearer s3cret"
    flag = xcronctl("--token", "other", "jobs", env={"XCRON_TARGET": f"127.0.0.1:{port}", "XCRON_TOKEN": "s3cret"})
    assert flag.code == 0 and service.metadata[-1]["authorization"] == "Bearer other"  # the flag wins
    assert "fake.job" in flag.out


def make_cert(folder: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (and its key), made with the openssl command."""
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    command = ["openssl", "req", "-x509", "-nodes", "-days", "1", "-subj", f"/CN={name}"]
    command += ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    command += ["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)]
    subprocess.run(command, check=True, capture_output=True)
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make certificates")
def test_mutual_tls_with_env_settings(
    recording_server: tuple[grpc.Server, RecordingJobService], tmp_path: Path
) -> None:
    server, service = recording_server
    server_cert, server_key = make_cert(tmp_path, "server")
    client_cert, client_key = make_cert(tmp_path, "client")
    credentials = grpc.ssl_server_credentials(
        [(server_key.read_bytes(), server_cert.read_bytes())],
        root_certificates=client_cert.read_bytes(),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    env = {
        "XCRON_TARGET": f"127.0.0.1:{port}",
        "XCRON_TOKEN": "tls-token",
        "XCRON_CA_CERT": str(server_cert),
        "XCRON_CLIENT_CERT": str(client_cert),
        "XCRON_CLIENT_KEY": str(client_key),
    }
    result = xcronctl("jobs", "-o", "json", env=env)
    assert result.code == 0, result
    assert service.metadata[-1]["authorization"] == "Bearer tls-token"
    plaintext = xcronctl("jobs", env={"XCRON_TARGET": f"127.0.0.1:{port}", "XCRON_TIMEOUT": "5"})
    assert plaintext.code == 4 and "UNAVAILABLE" in plaintext.err
    missing = xcronctl("jobs", "--ca-cert", str(tmp_path / "nope.pem"), env={"XCRON_TARGET": f"127.0.0.1:{port}"})
    assert missing.code == 2 and "nope.pem" in missing.err


# --- the live view ------------------------------------------------------------------------------------------


def run_in_pty(argv: list[str], timeout: float = 20) -> tuple[int, str]:
    """Run ``argv`` on a 120x40 pseudo-terminal; its exit code and everything it drew, escape codes removed."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = clean_env({"TERM": "xterm-256color"})
    env.pop("COLUMNS")
    env.pop("NO_COLOR", None)
    process = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], deadline - time.monotonic())
            if not ready:
                break
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        code = process.wait(timeout=max(0.1, deadline - time.monotonic()))
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
    return code, ANSI.sub("", b"".join(chunks).decode(errors="replace"))


def test_run_wait_live_progress_on_a_terminal(server: Any) -> None:
    stamp = datetime(2026, 1, 1, tzinfo=UTC).isoformat()
    code, screen = run_in_pty(
        [
            *COMMAND,
            "--target",
            server.target,
            "run",
            "test.types",
            "-p",
            "s=x",
            "-p",
            "i=3",
            "-p",
            f"t={stamp}",
            "--wait",
        ]
    )
    assert code == 0, screen
    final = [line for line in screen.replace("\r", "\n").splitlines() if line.strip()]
    assert "100%" in screen and "test.types" in screen  # the progress bar was drawn
    assert final[-1].startswith("COMPLETED test.types") and "i=3" in final[-1] and "s='x'" in final[-1]


# --- the parsing and formatting rules, in process -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("15m", 900),
        ("2h", 7200),
        ("1h30m", 5400),
        ("90", 90),
        ("1.5", 1.5),
        ("250ms", 0.25),
        ("1d", 86400),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse.parse_duration(text) == timedelta(seconds=seconds)
    assert parse.parse_duration(fmt.format_duration(timedelta(seconds=seconds))) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "h", "1x", "-5", "1h 30m", "m15", "nan", "inf"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse.parse_duration(text)


def test_days_bools_and_formatting() -> None:
    mon, tue, wed, thu, fri, sat, sun = DayOfWeek
    assert parse.parse_days("mon,fri") == {mon, fri}
    assert parse.parse_days("Mon-Fri") == parse.parse_days("weekdays") == {mon, tue, wed, thu, fri}
    assert parse.parse_days("fri-mon") == {fri, sat, sun, mon}
    assert parse.parse_days("saturday, 7") == parse.parse_days("weekends")
    with pytest.raises(ValueError, match="funday"):
        parse.parse_days("mon,funday")
    assert [parse.parse_bool(t) for t in ("true", "YES", "1", "false", "no", "0")] == [True] * 3 + [False] * 3
    assert fmt.format_days({mon, fri}) == "Mon,Fri" and fmt.format_days({mon, tue, wed, sun}) == "Mon-Wed,Sun"
    assert fmt.format_duration(timedelta(seconds=5400)) == "1h30m"
    assert fmt.format_duration(timedelta(seconds=90)) == "1m30s"
    assert fmt.format_duration(timedelta(0)) == "0s"


def test_schedule_summaries() -> None:
    assert fmt.schedule_summary(Schedule.every(timedelta(minutes=15))) == "every 15m"
    weekly = Schedule.on_days([DayOfWeek.MONDAY, DayOfWeek.FRIDAY], dtime(23), time_zone="Europe/Paris")
    assert fmt.schedule_summary(weekly) == "Mon,Fri 23:00 Europe/Paris"
    nightly = Schedule.cron("0 3 * * *", time_zone="America/New_York")
    assert fmt.schedule_summary(nightly) == "cron 0 3 * * * (America/New_York)"
    once = Schedule.on_days([], dtime(9, 30, 15), start_time=datetime(2026, 5, 1, tzinfo=UTC))
    assert fmt.schedule_summary(once) == "once 2026-05-01 09:30:15"
