"""Three xcron replicas on one real PostgreSQL: each occurrence once, runs visible and cancellable
from every replica, a killed replica's run ABORTED after its lease.

Needs PostgreSQL on 127.0.0.1:5432 (trust auth, database `test`), or XCRON_TEST_PG_DSN; skipped
with the reason when none answers (in CI, a failure: tests/support/requires.py). Each test works in a
schema of its own."""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from lxml import etree
from psycopg import sql
from psycopg.conninfo import make_conninfo
from requires import require
from schedules import as_set
from server_process import SUPPORT, ServerProcess
from waiting import eventually
from watching import follow

from xcron.client import AbortedError, Client, ExecutionState, JobState, Schedule

DSN = os.environ.get("XCRON_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
LEASE = 3.0


def _reachable() -> str | None:
    try:
        with psycopg.connect(DSN, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return f"PostgreSQL is not reachable at {DSN}: {exc}"


@pytest.fixture(autouse=True)
def _postgres() -> None:
    reason = _reachable()
    require(reason is None, f"a reachable PostgreSQL ({reason})")


@pytest.fixture
def schema() -> Iterator[str]:
    name = f"xcron_e2e_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


@pytest.fixture
def replicas(tmp_path: Path, schema: str) -> Iterator[Callable[[str], ServerProcess]]:
    started: list[ServerProcess] = []

    def start(name: str) -> ServerProcess:
        workdir = tmp_path / name
        workdir.mkdir(exist_ok=True)
        args = ["--store", DSN, "--store-schema", schema, "--replica-id", name, "--lease", str(LEASE)]
        server = ServerProcess(workdir=workdir, extra_args=args).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


def count_completed(client: Client, job_id: str, runs: int) -> None:
    """Follows the watch stream until `runs` different executions of the job were seen COMPLETED."""
    seen: set[str] = set()

    def enough(status: Any) -> bool:
        if status.state is JobState.COMPLETED:
            seen.add(status.execution_id)
        return len(seen) >= runs

    follow(client, job_id, enough)


def test_each_scheduled_occurrence_runs_once_across_replicas(replicas: Callable[[str], ServerProcess]) -> None:
    a, b, c = replicas("a"), replicas("b"), replicas("c")
    with Client(a.target, timeout=20) as client_a, Client(b.target, timeout=20) as client_b:
        job = client_a.set_schedule("test.tick", [Schedule.every(timedelta(seconds=1))])
        # Shared through the database: b reloads when a's save is notified (eventually, so ask until then).
        eventually(lambda: as_set(client_b.get_job("test.tick").schedules) == as_set(job.schedules))
        count_completed(client_b, "test.tick", 4)
        c.stop(signal.SIGKILL)  # a replica dies; the others carry on
        killed_at = client_a.get_job("test.tick").last_start_time
        assert killed_at is not None
        count_completed(client_a, "test.tick", 4 + int(LEASE))
        client_a.pause_schedule("test.tick")
        runs = client_a.list_executions("test.tick", page_size=1000).items
    due = sorted(r.scheduled_time for r in runs if r.scheduled_time is not None)
    assert len(due) == len(set(due)), "an occurrence ran twice"
    after_lease = [t for t in due if t > killed_at + timedelta(seconds=LEASE + 1)]
    assert len(after_lease) >= 2
    for earlier, later in itertools.pairwise(after_lease):
        assert later - earlier == timedelta(seconds=1), "an occurrence was lost after the lease"
    assert {r.state for r in runs} == {ExecutionState.COMPLETED}


def test_runs_are_seen_and_cancelled_across_replicas(replicas: Callable[[str], ServerProcess]) -> None:
    a, b = replicas("a"), replicas("b")
    with Client(a.target, timeout=20) as client_a, Client(b.target, timeout=20) as client_b:
        run = client_b.run_job("test.block", request_id="req-1")
        assert client_a.run_job("test.block", request_id="req-1").id == run.id  # one run, whichever replica
        with pytest.raises(AbortedError, match="already running"):
            client_a.run_job("test.block")
        follow(client_a, "test.block", lambda s: s.execution_id == run.id and s.status_text == "waiting")
        assert client_a.get_job("test.block").state is JobState.RUNNING
        client_a.cancel_job("test.block")  # the run lives on replica b
        follow(client_a, "test.block", lambda s: s.execution_id == run.id and s.state is JobState.CANCELLED)
        assert client_b.get_execution(run.id).state is ExecutionState.CANCELLED


def test_a_killed_replicas_run_is_aborted_after_the_lease(replicas: Callable[[str], ServerProcess]) -> None:
    a, b = replicas("a"), replicas("b")
    with Client(a.target, timeout=30) as client_a, Client(b.target, timeout=20) as client_b:
        run = client_b.run_job("test.block")
        follow(client_a, "test.block", lambda s: s.execution_id == run.id and s.status_text == "waiting")
        b.stop(signal.SIGKILL)
        killed = datetime.now(UTC)
        status = follow(client_a, "test.block", lambda s: s.execution_id == run.id and s.state is JobState.ABORTED)
        assert "replica b stopped" in status.status_text
        execution = client_a.get_execution(run.id)
        assert execution.state is ExecutionState.ABORTED
        assert execution.finish_time is not None
        detected = (execution.finish_time - killed).total_seconds()
        print(f"\nkill -9: run recorded ABORTED {detected:.2f} s after the kill")
        assert client_a.run_and_wait("test.tick", timeout=20).state is ExecutionState.COMPLETED


def _tool(*args: str) -> subprocess.CompletedProcess[str]:
    """`xcron-server` run as a one-off tool; it must exit by itself."""
    return subprocess.run(
        [sys.executable, "-m", "xcron.server", "--jobs", "xcron_test_jobs", "--time-zone", "UTC", *args],
        capture_output=True, text=True, timeout=60,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join([str(SUPPORT), os.environ.get("PYTHONPATH", "")])),
    )  # fmt: skip


def test_import_and_export_move_schedules_between_file_and_database(
    replicas: Callable[[str], ServerProcess], tmp_path: Path, schema: str
) -> None:
    source = Path(__file__).resolve().parent.parent / "data" / "santedb.sample.xml"
    shutil.copy(source, tmp_path / "in.xml")
    imported = _tool("--store", DSN, "--store-schema", schema, "--import", str(tmp_path / "in.xml"))
    assert imported.returncode == 0, imported.stderr  # imports, then exits: it does not serve
    assert "xcron listening" not in imported.stdout + imported.stderr
    server = replicas("a")
    with Client(server.target, timeout=20) as client:
        assert client.reload_schedules().unknown_entry_count == 3
    assert f"schedules from postgresql schema {schema}" in server.log()
    assert str(server.schedule_file) not in server.log()  # the file is not what is used
    exported = _tool("--store", DSN, "--store-schema", schema, "--export", str(tmp_path / "out.xml"))
    assert exported.returncode == 0, exported.stderr

    def entries(path: Path) -> list[bytes]:
        return [etree.tostring(e, method="c14n", exclusive=True) for e in etree.parse(str(path)).getroot()]

    assert entries(tmp_path / "out.xml") == entries(tmp_path / "in.xml")  # SanteDB's entries, as they were
    with psycopg.connect(DSN) as conn:  # neither one-off tool left a trace in the replica list
        rows = conn.execute(sql.SQL("SELECT replica_id FROM {}.replicas").format(sql.Identifier(schema))).fetchall()
    assert [row[0] for row in rows] == ["a"]
    both = _tool("--store", DSN, "--store-schema", schema, "--import", "x.xml", "--export", "y.xml")
    assert both.returncode == 2 and "one at a time" in both.stderr


def test_backup_under_the_postgresql_store_dumps_the_schema(
    replicas: Callable[[str], ServerProcess], tmp_path: Path, schema: str
) -> None:
    require(shutil.which("pg_dump") is not None and shutil.which("pg_restore") is not None, "pg_dump and pg_restore")
    server = replicas("a")
    folder = tmp_path / "backups"
    with Client(server.target, timeout=20) as client:
        client.set_schedule("test.tick", [Schedule.every(timedelta(hours=1))])
        assert client.run_and_wait("test.tick", timeout=20).state is ExecutionState.COMPLETED
        done = client.run_and_wait("xcron.backup", {"folder": str(folder)}, timeout=60)
    assert done.state is ExecutionState.COMPLETED, done.error
    (backup,) = folder.iterdir()
    assert b"xcron_test_jobs.TickJob" in (backup / "xcron.xml").read_bytes()  # the stored schedules
    listing = subprocess.run(
        ["pg_restore", "--list", str(backup / "state.pgdump")], capture_output=True, text=True, check=True
    ).stdout
    for table in ("jobs", "executions", "schedules", "schedule_document"):
        assert f"TABLE DATA {schema} {table} " in listing


def test_backup_keeps_the_database_password_off_pg_dumps_command_line(
    tmp_path: Path, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Anyone on the host can read a process's arguments (`ps`): pg_dump gets the password in PGPASSWORD."""
    real = shutil.which("pg_dump")
    require(real is not None, "pg_dump")
    spy = tmp_path / "bin" / "pg_dump"
    spy.parent.mkdir()
    seen = tmp_path / "pg_dump.seen"
    spy.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" "PGPASSWORD=$PGPASSWORD" > {seen}\nexec {real} "$@"\n')
    spy.chmod(0o755)
    monkeypatch.setenv("PATH", f"{spy.parent}:{os.environ['PATH']}")
    dsn = make_conninfo(DSN, password="s3cret-pw")  # trust authentication ignores it; pg_dump must not show it
    server = ServerProcess(
        workdir=tmp_path, extra_args=["--store", dsn, "--store-schema", schema, "--replica-id", "a"]
    ).start()
    try:
        with Client(server.target, timeout=20) as client:
            done = client.run_and_wait("xcron.backup", {"folder": str(tmp_path / "backups")}, timeout=60)
    finally:
        server.kill()
    assert done.state is ExecutionState.COMPLETED, done.error
    arguments, environment = seen.read_text().splitlines()
    assert "--dbname=" in arguments and "s3cret-pw" not in arguments
    assert environment == "PGPASSWORD=s3cret-pw"


def test_backup_without_pg_dump_refuses_rather_than_backing_up_nothing(
    replicas: Callable[[str], ServerProcess], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # the replica finds no pg_dump
    server = replicas("a")
    folder = tmp_path / "backups"
    with Client(server.target, timeout=20) as client:
        done = client.run_and_wait("xcron.backup", {"folder": str(folder)}, timeout=60)
    assert done.state is ExecutionState.ABORTED
    assert "pg_dump is not installed" in done.error and "nothing was backed up" in done.error
    assert list(folder.iterdir()) == []  # no partial backup left behind
