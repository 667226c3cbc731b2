"""The two sides of bench.cluster, each on a database of its own on one PostgreSQL: three xcron replicas
(`xcron-server --store`) and three procrastinate workers, with `count` schedules firing every second (all on
the whole second: procrastinate's cron has second granularity, and xcron gets 1-second interval schedules
anchored on a whole second), and the same no-op job that notes how late its code started.

One step: start the three processes, let them warm up, then count, over `measure` seconds of occurrences:
  - the lateness of each run (its code's start - its occurrence), from the files the jobs append to;
  - missing occurrences (due in the window, never run) and occurrences run more than once, from the
    database (xcron's executions; procrastinate's jobs), and from the jobs' own records;
  - the database's transactions (pg_stat_database xact_commit + xact_rollback of that database) per run.
A backend's statistics reach pg_stat_database at most once a second, and up to 10 s late after a burst
(PGSTAT_MIN_INTERVAL, PGSTAT_IDLE_INTERVAL), but always when it exits: so transactions are counted over the
processes' whole life, from before they start to after they stopped, less what starting and stopping cost
(measured in the idle phase, which therefore comes first), divided by the runs made in that life.
"""

from __future__ import annotations

import concurrent.futures
import math
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bench.common import ROOT, ServerProcess, child_env, percentile

PG_DSN = os.environ.get("XCRON_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
REPLICAS = 3
LATE_LIMIT = 0.100  # p99 lateness above this, or any occurrence missed: the rate is not sustained


def pg_unreachable() -> str | None:
    try:
        with psycopg.connect(PG_DSN, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return f"PostgreSQL is not reachable at {PG_DSN!r} (set XCRON_BENCH_PG_DSN): {str(exc).strip()}"


@dataclass(frozen=True)
class Timing:
    warmup: float  # seconds from the processes' start to the first occurrence measured
    measure: int  # seconds of occurrences measured
    settle: float  # after the last occurrence measured, for its runs to end


@dataclass
class Step:
    """What one side did with `count` schedules firing every second."""

    count: int
    once: bool = True  # an occurrence run twice fails the step (xcron's promise; procrastinate's are counted only)
    expected: int = 0
    lateness: list[float] = field(default_factory=list)  # one per occurrence run (first run)
    missing: int = 0
    duplicates: int = 0  # occurrences run (or recorded) more than once
    transactions: float = 0.0  # over the processes' life, less start-up and shut-down
    seconds: float = 0.0  # the processes' life
    runs: int = 0  # runs made in it (all, not only the window's)
    load: float = 0.0  # the 1-minute load average at the end of the step

    @property
    def p99(self) -> float:
        """Counting occurrences that never ran as infinitely late."""
        return percentile([*self.lateness, *([math.inf] * self.missing)], 99)

    @property
    def sustained(self) -> bool:
        twice = self.duplicates if self.once else 0
        return self.expected > 0 and self.missing == 0 and twice == 0 and self.p99 <= LATE_LIMIT

    @property
    def per_occurrence(self) -> float:
        return self.transactions / self.runs if self.runs else math.nan

    @property
    def per_second(self) -> float:
        return self.transactions / self.seconds if self.seconds else math.nan


class Database:
    """A database of the bench's own on PG_DSN's server, created here and dropped on close."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.dsn = make_conninfo(PG_DSN, dbname=name)
        params = conninfo_to_dict(PG_DSN)
        self.address = f"{params.get('host', '127.0.0.1')}:{params.get('port', 5432)}"
        self._admin = psycopg.connect(PG_DSN, autocommit=True)  # on another database: not counted
        self._admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        self._admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def transactions(self) -> int:
        self._admin.execute("SELECT pg_stat_clear_snapshot()")
        row = self._admin.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s", (self.name,)
        ).fetchone()
        return int(row[0]) if row else 0

    def query(self, text: sql.Composable | str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            cur = conn.execute(text, params)  # type: ignore[arg-type]
            return list(cur.fetchall()) if cur.description is not None else []

    def close(self) -> None:
        self._admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name)))
        self._admin.close()


FLUSHED = 1.0  # seconds for the backends of closed connections to exit, which flushes their statistics


class Ledger:
    """The database's transactions over a set of processes' whole life (see the module docstring)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        time.sleep(FLUSHED)  # pacing: what came before has been counted
        self._before = db.transactions()
        self._began = time.time()
        self.total = 0
        self.seconds = 0.0

    def close(self) -> None:
        """Once the processes have stopped."""
        self.seconds = time.time() - self._began
        time.sleep(FLUSHED)
        self.total = self._db.transactions() - self._before


def _sleep_until(instant: float) -> None:
    time.sleep(max(0.0, instant - time.time()))  # pacing the measurement, not synchronising with it


def _records(folder: Path, lo: float, hi: float) -> tuple[Counter[tuple[int, int]], dict[tuple[int, int], float]]:
    """From the jobs' files: (schedule index, due) -> runs, and the lateness of its first run."""
    runs: Counter[tuple[int, int]] = Counter()
    late: dict[tuple[int, int], float] = {}
    for path in folder.glob("*.txt"):
        for line in path.read_text().splitlines():
            index, due, started = line.split()
            key = (int(index), round(float(due)))
            if lo <= key[1] <= hi:
                runs[key] += 1
                late.setdefault(key, float(started) - float(due))
    return runs, late


def _stop_all(processes: Sequence[ServerProcess]) -> None:
    with concurrent.futures.ThreadPoolExecutor(len(processes) or 1) as pool:
        list(pool.map(lambda p: p.stop(), processes))


def _measure(
    db: Database, processes: Sequence[ServerProcess], count: int, timing: Timing, out: Path
) -> tuple[Step, float, float]:
    """Waits for the window to pass and reads the jobs' records; returns the window."""
    lo = float(math.ceil(time.time() + timing.warmup))
    hi = lo + timing.measure - 1
    step = Step(count, expected=count * timing.measure)
    _sleep_until(hi + timing.settle)
    runs, late = _records(out, lo, hi)
    step.lateness = list(late.values())
    step.missing = step.expected - len(runs)
    step.duplicates = sum(1 for n in runs.values() if n > 1)
    step.load = os.getloadavg()[0]
    for process in processes:
        if process.poll() is not None:
            raise RuntimeError(f"{process.name} exited during the step:\n{''.join(process.output[-30:])}")
    return step, lo, hi


# -- xcron -------------------------------------------------------------------------------------------


def _write_xcron_xml(path: Path, count: int, anchor: datetime) -> None:
    from bench.cluster_jobs import type_name
    from xcron.server.core.model import IntervalSpec, Schedule
    from xcron.server.stores.xcron_xml import ScheduleDocument, ScheduleEntry, save_schedule_file

    every = IntervalSpec(every=timedelta(seconds=1))
    entries = tuple(
        ScheduleEntry(type_name=type_name(i), start_type="schedule", schedules=(Schedule(spec=every, start=anchor),))
        for i in range(count)
    )
    save_schedule_file(path, ScheduleDocument(entries), default_zone="UTC")


class XcronSide:
    """Three replicas on the database `db`, a fresh schema per step."""

    name = "xcron"

    def __init__(self, db: Database, profile: Path | None = None) -> None:
        self.db = db
        self.profile = profile
        self._steps = 0

    def _replicas(self, folder: Path, count: int, anchor: datetime) -> tuple[list[ServerProcess], Ledger]:
        self._steps += 1
        schema = f"bench_{self._steps}"
        os.environ["XCRON_BENCH_CLUSTER_JOBS"] = str(count)
        os.environ["XCRON_BENCH_CLUSTER_OUT"] = str(folder)
        _write_xcron_xml(folder / "xcron.xml", count, anchor)
        module = os.environ.get("XCRON_BENCH_SERVER_MODULE", "xcron.server")
        common = ["--store", self.db.dsn, "--store-schema", schema, "--jobs", "bench.cluster_jobs", "--no-entry-points",
                  "--time-zone", "UTC"]  # fmt: skip
        subprocess.run(
            [sys.executable, "-m", module, *common, "--import", str(folder / "xcron.xml")],
            cwd=folder,
            env=child_env(),
            check=True,
            capture_output=True,
            timeout=120,
        )
        ledger = Ledger(self.db)
        replicas = []
        try:
            for r in range(REPLICAS):
                prefix = [sys.executable]
                if self.profile is not None and r == 0:
                    self.profile.mkdir(parents=True, exist_ok=True)
                    target = self.profile / f"cluster-xcron-{count}-r0.prof"
                    prefix += ["-m", "cProfile", "-o", str(target.resolve())]
                argv = [*prefix, "-m", module, "--listen", "127.0.0.1:0", *common, "--replica-id", f"r{r}",
                        "--data-dir", str(folder / f"r{r}"), "--shutdown-grace", "5",
                        "--log-level", "WARNING"]  # fmt: skip
                replicas.append(ServerProcess(argv, cwd=folder, name=f"xcron replica r{r}").start())
        except BaseException:
            _stop_all(replicas)
            raise
        self.schema = schema
        return replicas, ledger

    def step(self, count: int, timing: Timing) -> Step:
        with tempfile.TemporaryDirectory(prefix="xcron-bench-cluster-") as tmp:
            folder = Path(tmp)
            replicas, ledger = self._replicas(folder, count, datetime(2026, 1, 1, tzinfo=UTC))
            try:
                step, lo, hi = _measure(self.db, replicas, count, timing, folder)
            finally:
                _stop_all(replicas)
                ledger.close()
            schema = sql.Identifier(self.schema)
            # Exactly once, as the database has it: each (job, occurrence) one execution, across replicas.
            rows = self.db.query(
                sql.SQL(
                    """SELECT count(*) AS n FROM {}.executions
                       WHERE scheduled_time BETWEEN to_timestamp(%s) AND to_timestamp(%s)
                       GROUP BY job_id, scheduled_time"""
                ).format(schema),
                (lo, hi),
            )
            step.duplicates = max(step.duplicates, sum(1 for (n,) in rows if n > 1))
            step.missing = max(step.missing, step.expected - len(rows))
            ((runs,),) = self.db.query(sql.SQL("SELECT count(*) FROM {}.executions").format(schema))
            return _charge(step, ledger, self.overhead, runs)

    overhead = 0.0
    """Transactions of starting and stopping the replicas (from the idle phase)."""

    def idle(self, count: int, seconds: float, settle: float) -> Step:
        with tempfile.TemporaryDirectory(prefix="xcron-bench-cluster-") as tmp:
            folder = Path(tmp)
            anchor = datetime.fromtimestamp(math.floor(time.time()) + 86_400, UTC)
            replicas, ledger = self._replicas(folder, count, anchor)
            try:
                step = _idle(self.db, count, seconds, settle)
            finally:
                _stop_all(replicas)
                ledger.close()
            self.overhead = _overhead(step, ledger)
            return step


def _charge(step: Step, ledger: Ledger, overhead: float, runs: int) -> Step:
    step.transactions, step.seconds, step.runs = max(0.0, ledger.total - overhead), ledger.seconds, runs
    return step


def _overhead(idle: Step, ledger: Ledger) -> float:
    """What starting and stopping cost: the life's transactions less the idle rate over the life."""
    return max(0.0, ledger.total - idle.per_second * ledger.seconds)


def _idle(db: Database, count: int, seconds: float, settle: float) -> Step:
    time.sleep(settle)  # start-up's own transactions are over and flushed (pacing, not synchronisation)
    before, began = db.transactions(), time.time()
    time.sleep(seconds)  # the idle window itself
    return Step(count, transactions=db.transactions() - before, seconds=time.time() - began, load=os.getloadavg()[0])


# -- procrastinate ---------------------------------------------------------------------------------


class ProcrastinateSide:
    """Three workers (`bench.cluster_procrastinate`) on the database `db`, its tables emptied per step."""

    name = "procrastinate"
    _TABLES = ("procrastinate_jobs", "procrastinate_periodic_defers", "procrastinate_events", "procrastinate_workers")

    def __init__(self, db: Database, *, concurrency: int, margin: float) -> None:
        import procrastinate

        self.db = db
        self.concurrency = concurrency
        self.margin = margin
        app = procrastinate.App(connector=procrastinate.SyncPsycopgConnector(conninfo=db.dsn))
        with app.open():
            app.schema_manager.apply_schema()

    overhead = 0.0
    """Transactions of starting and stopping the workers (from the idle phase)."""

    def _workers(self, folder: Path, count: int, cron: str) -> tuple[list[ServerProcess], Ledger]:
        tables = sql.SQL(", ").join(sql.Identifier(t) for t in self._TABLES)
        self.db.query(sql.SQL("TRUNCATE {} CASCADE").format(tables))
        ledger = Ledger(self.db)
        workers = []
        try:
            for w in range(REPLICAS):
                argv = [sys.executable, "-m", "bench.cluster_procrastinate", "--dsn", self.db.dsn, "--pg-address",
                        self.db.address, "--count", str(count), "--cron", cron, "--concurrency", str(self.concurrency),
                        "--margin", str(self.margin), "--name", f"w{w}",
                        "--out", str(folder / f"w{w}.txt")]  # fmt: skip
                workers.append(ServerProcess(argv, cwd=ROOT, name=f"procrastinate worker w{w}").start())
        except BaseException:
            _stop_all(workers)
            raise
        return workers, ledger

    def step(self, count: int, timing: Timing) -> Step:
        from bench.cluster_procrastinate import EVERY_SECOND

        with tempfile.TemporaryDirectory(prefix="xcron-bench-procrastinate-") as tmp:
            folder = Path(tmp)
            workers, ledger = self._workers(folder, count, EVERY_SECOND)
            try:
                step, lo, hi = _measure(self.db, workers, count, timing, folder)
            finally:
                _stop_all(workers)
                ledger.close()
            # Exactly once, as its database has it: each (periodic task, occurrence) one job, run once.
            rows = self.db.query(
                """SELECT count(*) FROM procrastinate_jobs
                   WHERE (args->>'timestamp')::bigint BETWEEN %s AND %s
                   GROUP BY args->>'index', args->>'timestamp'""",
                (int(lo), int(hi)),
            )
            step.duplicates = max(step.duplicates, sum(1 for (n,) in rows if n > 1))
            step.once = False  # the same criteria as xcron's, lateness and missed; its duplicates are reported
            ((runs,),) = self.db.query("SELECT count(*) FROM procrastinate_jobs WHERE status <> 'todo'")
            return _charge(step, ledger, self.overhead, runs)

    def idle(self, count: int, seconds: float, settle: float) -> Step:
        with tempfile.TemporaryDirectory(prefix="xcron-bench-procrastinate-") as tmp:
            workers, ledger = self._workers(Path(tmp), count, "0 0 1 1 *")  # once a year, 1 January: nothing due
            try:
                step = _idle(self.db, count, seconds, settle)
            finally:
                _stop_all(workers)
                ledger.close()
            self.overhead = _overhead(step, ledger)
            return step
