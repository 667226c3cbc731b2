"""Cluster replicas under injected faults, each against real PostgreSQL and real replica processes: a TCP
proxy the test controls between one replica and the database (forward, black-hole, reset), SIGSTOP/SIGCONT,
`pg_terminate_backend` of every connection, concurrent SetSchedule on two replicas. The jobs write what
they really did to a history file (`test.record`), and `history.check` asserts over it: no occurrence ran
twice, no two runs of one job overlapped beyond what the partition window allows.

Needs PostgreSQL on 127.0.0.1:5432 (trust auth, database `test`), or XCRON_TEST_PG_DSN; elsewhere the tests
are skipped saying so (CI fails instead, see tests/support/requires.py).
"""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import history
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from requires import require
from schedules import as_set
from server_process import ServerProcess
from tcp_proxy import TcpProxy
from waiting import eventually
from watching import follow

from xcron.client import (
    Client,
    ExecutionState,
    FailedPreconditionError,
    IntervalSpec,
    JobState,
    Schedule,
    UnavailableError,
)
from xcron.server.core.model import IntervalSpec as ServerIntervalSpec
from xcron.server.stores.xcron_xml import parse_schedule_xml

DSN = os.environ.get("XCRON_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
LEASE = 3.0
REACTION = 1.0
"""The documented bound on overlap under a partition for a job that honours cancellation: the time it takes
to notice a cancel request (test.record looks every 20 ms; the rest is margin for a loaded machine)."""


def _reachable() -> bool:
    try:
        with psycopg.connect(DSN, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


@pytest.fixture(autouse=True)
def _postgres() -> None:
    require(_reachable(), f"PostgreSQL at {DSN}")


@pytest.fixture
def schema() -> Iterator[str]:
    name = f"xcron_faults_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    info = conninfo_to_dict(DSN)
    with TcpProxy(str(info.get("host", "127.0.0.1")), int(str(info.get("port", 5432)))) as started:
        yield started


def via(proxy: TcpProxy) -> str:
    """The DSN, through the proxy."""
    return make_conninfo(DSN, host="127.0.0.1", port=proxy.port)


Start = Callable[..., ServerProcess]


@pytest.fixture
def replicas(tmp_path: Path, schema: str) -> Iterator[Start]:
    started: list[ServerProcess] = []

    def start(name: str, dsn: str = DSN) -> ServerProcess:
        workdir = tmp_path / name
        workdir.mkdir(exist_ok=True)
        args = ["--store", dsn, "--store-schema", schema, "--replica-id", name, "--lease", str(LEASE)]
        server = ServerProcess(workdir=workdir, extra_args=args).start()
        started.append(server)
        return server

    yield start
    for server in started:
        if server.process is not None and server.process.poll() is None:
            server.process.send_signal(signal.SIGCONT)
        server.kill()


class Watcher:
    """Every status one replica's WatchJobs stream delivers, collected in a thread until close()."""

    def __init__(self, target: str, job_id: str) -> None:
        self._client = Client(target, timeout=60)
        self.statuses: list[Any] = []
        self._stream = self._client.watch_jobs([job_id])
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for event in self._stream:
                self.statuses.extend(event.statuses)
        except Exception:  # the channel closed under the stream
            return

    def of(self, execution_id: str) -> list[tuple[JobState, str]]:
        return [(s.state, s.status_text) for s in list(self.statuses) if s.execution_id == execution_id]

    def close(self) -> None:
        self._client.close()
        self._thread.join(10)


def after_abort(states: list[tuple[JobState, str]]) -> list[JobState]:
    """The states a watcher saw for a run after it first saw it ABORTED; if the ABORTED status was coalesced
    away (a newer run of the job followed within the watcher's pace), every state other than RUNNING, so a
    run that came back COMPLETED or CANCELLED is caught either way."""
    seen = [state for state, _ in states]
    if JobState.ABORTED in seen:
        return seen[seen.index(JobState.ABORTED) + 1 :]
    return [state for state in seen if state is not JobState.RUNNING]


def test_blackholed_replica_fences_itself_and_its_abort_stands(
    replicas: Start, proxy: TcpProxy, tmp_path: Path
) -> None:
    a, b = replicas("a"), replicas("b", via(proxy))
    log = tmp_path / "history.jsonl"
    watcher = Watcher(a.target, "test.record")
    with Client(a.target, timeout=20) as client_a, Client(b.target, timeout=20) as client_b:
        run_b = client_b.run_job("test.record", {"history": str(log)})
        eventually(lambda: history.started(log, run_b.id))
        mark = len(b.output)
        proxy.blackhole()
        cut = time.time()
        aborted = follow(client_a, "test.record", lambda s: s.execution_id == run_b.id and s.state is JobState.ABORTED)
        detected = time.time()
        assert "replica b stopped" in aborted.status_text
        run_a = client_a.run_job("test.record", {"history": str(log), "release": str(tmp_path / "release")})
        b.wait_for_log("lease not renewed", after=mark)
        eventually(lambda: history.ended(log, run_b.id))
        with pytest.raises(UnavailableError):
            client_b.run_job("test.tick")  # cut off and fenced: b starts nothing (the others do)
        proxy.forward()
        # Back: b learns its run was aborted (it never records it COMPLETED or CANCELLED), and every replica's
        # job row points at the newest run, a's.
        eventually(lambda: client_b.get_execution(run_b.id).state is ExecutionState.ABORTED, timeout=30)
        eventually(lambda: client_b.get_job("test.record").execution_id == run_a.id, timeout=30)
        assert client_a.get_execution(run_b.id).state is ExecutionState.ABORTED
        job = client_a.get_job("test.record")
        assert (job.execution_id, job.state) == (run_a.id, JobState.RUNNING)
        (tmp_path / "release").touch()
        follow(client_a, "test.record", lambda s: s.execution_id == run_a.id and s.state is JobState.COMPLETED)
        eventually(lambda: client_b.get_job("test.record").state is JobState.COMPLETED)
    watcher.close()
    assert after_abort(watcher.of(run_b.id)) == []  # a's watchers never saw the aborted run come back
    verdict = history.check(history.load(log), overlap_allowed=REACTION)
    ended = history.load(log)[run_b.id].end or 0.0
    print(
        f"\nblack-hole: dead replica detected after {detected - cut:.2f} s (lease {LEASE} s); overlap "
        f"{verdict.max_overlap:.3f} s; b's run ended {ended - cut:.2f} s after the cut"
    )


def test_late_outcome_of_an_uncancellable_run_cannot_overwrite_its_abort(
    replicas: Start, proxy: TcpProxy, tmp_path: Path
) -> None:
    a, b = replicas("a"), replicas("b", via(proxy))
    watcher = Watcher(a.target, "test.stubborn")
    with Client(a.target, timeout=20) as client_a, Client(b.target, timeout=20) as client_b:
        run_b = client_b.run_job("test.stubborn", {"release": str(tmp_path / "release-b")})
        follow(client_a, "test.stubborn", lambda s: s.execution_id == run_b.id and s.status_text == "waiting")
        mark = len(b.output)
        proxy.blackhole()
        follow(client_a, "test.stubborn", lambda s: s.execution_id == run_b.id and s.state is JobState.ABORTED)
        run_a = client_a.run_job("test.stubborn", {"release": str(tmp_path / "release-a")})
        b.wait_for_log("lease not renewed", after=mark)  # it asked; this job does not listen
        proxy.forward()
        (tmp_path / "release-b").touch()  # b's run finishes its work now, long after it was aborted
        b.wait_for_log("but the database has it ABORTED", after=mark, timeout=30)
        assert client_b.get_execution(run_b.id).state is ExecutionState.ABORTED
        eventually(lambda: client_b.get_job("test.stubborn").execution_id == run_a.id, timeout=30)
        assert client_a.get_job("test.stubborn").execution_id == run_a.id
        (tmp_path / "release-a").touch()
        follow(client_a, "test.stubborn", lambda s: s.execution_id == run_a.id and s.state is JobState.COMPLETED)
    watcher.close()
    assert after_abort(watcher.of(run_b.id)) == []  # never COMPLETED, never RUNNING again, anywhere


def test_stopped_replica_learns_on_resume_that_its_run_was_aborted(replicas: Start, tmp_path: Path) -> None:
    a, b = replicas("a"), replicas("b")
    log = tmp_path / "history.jsonl"
    watcher = Watcher(a.target, "test.record")
    with Client(a.target, timeout=20) as client_a, Client(b.target, timeout=20) as client_b:
        run_b = client_b.run_job("test.record", {"history": str(log)})
        eventually(lambda: history.started(log, run_b.id))
        assert b.process is not None
        b.process.send_signal(signal.SIGSTOP)
        stopped = time.time()
        follow(client_a, "test.record", lambda s: s.execution_id == run_b.id and s.state is JobState.ABORTED)
        detected = time.time()
        run_a = client_a.run_job("test.record", {"history": str(log), "release": str(tmp_path / "release")})
        eventually(lambda: history.started(log, run_a.id))
        mark = len(b.output)
        b.process.send_signal(signal.SIGCONT)
        resumed = time.time()
        b.wait_for_log("lease not renewed", after=mark)
        eventually(lambda: history.ended(log, run_b.id))
        eventually(lambda: client_b.get_execution(run_b.id).state is ExecutionState.ABORTED, timeout=30)
        eventually(lambda: client_b.get_job("test.record").execution_id == run_a.id, timeout=30)
        b.wait_for_log("lost its lease", after=mark)
        (tmp_path / "release").touch()
        follow(client_a, "test.record", lambda s: s.execution_id == run_a.id and s.state is JobState.COMPLETED)
    watcher.close()
    assert after_abort(watcher.of(run_b.id)) == []
    runs = history.load(log)
    # Frozen, b could not stop its run; resumed, it stops it at once (its lease clock ran out meanwhile).
    # So the two runs overlapped while b was frozen, and for at most REACTION after it resumed.
    frozen_overlap = max(0.0, resumed - runs[run_a.id].start)
    verdict = history.check(runs, overlap_allowed=frozen_overlap + REACTION)
    assert runs[run_b.id].how == "cancelled"
    print(
        f"\nSIGSTOP: dead replica detected after {detected - stopped:.2f} s; b's run stopped "
        f"{(runs[run_b.id].end or 0.0) - resumed:.3f} s after SIGCONT (overlap {verdict.max_overlap:.2f} s, "
        f"of which {frozen_overlap:.2f} s frozen)"
    )


def test_state_heals_after_the_listener_misses_a_notification(replicas: Start, proxy: TcpProxy, tmp_path: Path) -> None:
    a, b = replicas("a", via(proxy)), replicas("b")
    log = tmp_path / "history.jsonl"
    watcher = Watcher(a.target, "test.record")
    with Client(a.target, timeout=20) as client_a, Client(b.target, timeout=20) as client_b:
        run = client_b.run_job("test.record", {"history": str(log), "release": str(tmp_path / "release")})
        follow(client_a, "test.record", lambda s: s.execution_id == run.id and s.status_text == "holding")
        proxy.blackhole()  # shorter than a lease: a stays a healthy replica
        (tmp_path / "release").touch()
        eventually(lambda: client_b.get_job("test.record").state is JobState.COMPLETED)
        proxy.reset()  # the notification of the end, in flight to a, is lost with its connection
        proxy.forward()
        eventually(lambda: client_a.get_job("test.record").state is JobState.COMPLETED)
        assert client_a.get_job("test.record").execution_id == run.id
        with pytest.raises(FailedPreconditionError, match="not running"):
            client_a.cancel_job("test.record")
        eventually(lambda: (JobState.COMPLETED, "released") in watcher.of(run.id))
    watcher.close()


def _terminate_all(schema: str) -> int:
    with psycopg.connect(DSN, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE %s",
            (f"xcron/{schema}/%",),
        ).fetchall()
    return len(rows)


def test_scheduled_occurrences_run_at_most_once_under_faults(
    replicas: Start, proxy: TcpProxy, tmp_path: Path, schema: str
) -> None:
    a, b, c = replicas("a"), replicas("b"), replicas("c", via(proxy))
    log = tmp_path / "history.jsonl"

    def runs() -> int:
        return len(history.load(log))

    with Client(a.target, timeout=20) as client_a, Client(c.target, timeout=20) as client_c:
        every = Schedule.every(timedelta(seconds=1), parameters={"history": str(log), "hold": 0.3})
        job = client_a.set_schedule("test.record", [every])
        eventually(lambda: as_set(client_c.get_job("test.record").schedules) == as_set(job.schedules))
        eventually(lambda: runs() >= 3, timeout=20)
        assert _terminate_all(schema) >= 9  # every connection of every replica: pools and listeners
        seen = runs()
        eventually(lambda: runs() >= seen + 3, timeout=20)
        mark = len(c.output)
        proxy.blackhole()
        c.wait_for_log("lease not renewed", after=mark)
        seen = runs()
        eventually(lambda: runs() >= seen + 2, timeout=20)  # the others fire on
        proxy.forward()
        c.wait_for_log("lease renewed", after=mark, timeout=30)
        seen = runs()
        eventually(lambda: runs() >= seen + 3, timeout=20)
        client_a.pause_schedule("test.record")
        eventually(lambda: all(r.end is not None for r in history.load(log).values()))
    verdict = history.check(history.load(log), overlap_allowed=0.0)
    assert verdict.runs >= 11
    assert "deadlock" not in a.log() + b.log() + c.log()


def _every(spec: object) -> timedelta:
    assert isinstance(spec, IntervalSpec | ServerIntervalSpec)
    return spec.every


def _at_once(*calls: Callable[[], object]) -> None:
    """Makes the calls from as many threads released together; all must succeed (be acknowledged)."""
    barrier = threading.Barrier(len(calls))
    errors: list[BaseException] = []

    def go(call: Callable[[], object]) -> None:
        barrier.wait()
        try:
            call()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []


def test_concurrent_schedule_edits_are_never_lost(replicas: Start, schema: str) -> None:
    a, b = replicas("a"), replicas("b")

    def stored() -> dict[str, timedelta]:
        with psycopg.connect(DSN) as conn:
            row = conn.execute(
                sql.SQL("SELECT xml FROM {}.schedule_document").format(sql.Identifier(schema))
            ).fetchone()
        assert row is not None
        document = parse_schedule_xml(bytes(row[0]), source="db", default_zone="UTC")
        return {e.type_name.split(",")[0]: _every(e.schedules[0].spec) for e in document.entries if e.schedules}

    def shows(client: Client, job_id: str, interval: timedelta) -> Callable[[], bool]:
        def check() -> bool:
            schedules = client.get_job(job_id).schedules  # empty until this replica has seen the first edit
            return bool(schedules) and _every(schedules[0].spec) == interval

        return check

    def set_every(client: Client, job_id: str, interval: timedelta) -> Callable[[], object]:
        return lambda: client.set_schedule(job_id, [Schedule.every(interval)])

    with Client(a.target, timeout=20) as client_a, Client(b.target, timeout=20) as client_b:
        for trial in range(10):
            tick, spam = timedelta(seconds=600 + trial), timedelta(seconds=900 + trial)
            _at_once(set_every(client_a, "test.tick", tick), set_every(client_b, "test.spam", spam))
            document = stored()
            assert document["xcron_test_jobs.TickJob"] == tick, f"trial {trial}: the edit on a was lost"
            assert document["xcron_test_jobs.SpamJob"] == spam, f"trial {trial}: the edit on b was lost"
            for client in (client_a, client_b):
                eventually(shows(client, "test.tick", tick))
                eventually(shows(client, "test.spam", spam))
        # One job, two replicas, the same instant: one winner, and everyone agrees on it.
        for trial in range(5):
            mine, theirs = timedelta(seconds=100 + trial), timedelta(seconds=200 + trial)
            _at_once(set_every(client_a, "test.tick", mine), set_every(client_b, "test.tick", theirs))
            winner = stored()["xcron_test_jobs.TickJob"]
            assert winner in (mine, theirs)
            for client in (client_a, client_b):
                eventually(shows(client, "test.tick", winner))


def test_skip_counters_are_cluster_wide_and_counted_once(replicas: Start, tmp_path: Path) -> None:
    a, b = replicas("a"), replicas("b")
    log = tmp_path / "history.jsonl"
    with Client(a.target, timeout=20) as client_a, Client(b.target, timeout=20) as client_b:

        def skipped(client: Client) -> int:
            return client.get_job("test.record").schedules[0].overlap_skipped_count

        # Each run holds 2.5 s on a schedule of 1 s: the occurrences in between are skipped (SKIP overlap).
        every = Schedule.every(timedelta(seconds=1), parameters={"history": str(log), "hold": 2.5})
        job = client_a.set_schedule("test.record", [every])
        eventually(lambda: as_set(client_b.get_job("test.record").schedules) == as_set(job.schedules))
        eventually(lambda: len(history.load(log)) >= 4, timeout=30)
        client_a.pause_schedule("test.record")
        paused = datetime.now(UTC)
        eventually(lambda: all(r.end is not None for r in history.load(log).values()), timeout=10)
        eventually(lambda: skipped(client_a) == skipped(client_b) > 0, timeout=10)  # the same on every replica
        total = skipped(client_a)
    runs = history.load(log).values()
    due = sorted(datetime.fromisoformat(r.scheduled) for r in runs if r.scheduled is not None)
    # Counted once: the occurrences between the runs, plus those after the last run until the pause.
    between = sum(round((later - earlier).total_seconds()) - 1 for earlier, later in itertools.pairwise(due))
    after = int((paused - due[-1]).total_seconds())
    assert between <= total <= between + after, (between, total, after)
