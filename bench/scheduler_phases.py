"""One scheduler measurement per fresh process (started by bench.scheduler through Workers): xcron's
whole server in-process, or APScheduler 3's AsyncIOScheduler, with the same interval schedules.

The schedules: `count` interval schedules of `count / rate` seconds, phases spread evenly
(schedule i starts at anchor + i * interval / count), so `rate` of them come due every second. With
the anchor in the past they fire steadily from the moment the scheduler starts (neither xcron nor
APScheduler back-fills a new schedule); with the anchor a day ahead nothing is due (idle).
xcron gets them through xcron.xml, `per_job` schedules on each of count / per_job jobs (a job runs
at most once at a time; its schedules are interval / per_job apart). Lateness is the moment the job's
code runs minus the occurrence it runs for (ctx.scheduled_time; for APScheduler, computed from the
schedule's start and interval).

xcron runs on uvloop, as the server does by default (XCRON_BENCH_EVENT_LOOP=asyncio: asyncio's own
loop); APScheduler on asyncio's own loop, as it is usually run.

XCRON_BENCH_PATCH names a module the xcron phases import first (one that patches a proposed change
in), to measure a change before and after in the same way.
"""

from __future__ import annotations

import asyncio
import cProfile
import importlib
import logging
import math
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psutil

from xcron.server.core.jobs import Job, JobContext
from xcron.server.core.model import IntervalSpec, Schedule
from xcron.server.stores.xcron_xml import ScheduleDocument, ScheduleEntry, save_schedule_file

# (due time, lateness), both in seconds, appended by the jobs as they run.
RECORDS: list[tuple[float, float]] = []


@dataclass(frozen=True)
class Plan:
    count: int
    rate: float
    per_job: int
    anchor: float  # epoch seconds of schedule 0's start
    warmup: float = 2.0
    measure: float = 10.0
    idle: float = 0.0  # > 0: measure CPU this long instead of lateness (the anchor lies ahead)
    settle: float = 1.0  # before measuring idle CPU; after the lateness window, for the last runs
    profile: str = ""

    @property
    def interval(self) -> float:
        return self.count / self.rate

    @property
    def spacing(self) -> float:
        return self.interval / self.count

    def start(self, i: int) -> datetime:
        return datetime.fromtimestamp(self.anchor, UTC) + timedelta(seconds=i * self.spacing)

    def due_between(self, lo: float, hi: float) -> int:
        """Occurrences in [lo, hi]: the grid anchor + m * spacing, m >= 0."""
        first = max(0, math.ceil((lo - self.anchor) / self.spacing - 1e-9))
        last = math.floor((hi - self.anchor) / self.spacing + 1e-9)
        return max(0, last - first + 1)


class LatenessJob(Job):
    """No-op apart from noting how late it started."""

    description = "Scheduler benchmark: records its own lateness."

    async def run(self, ctx: JobContext) -> None:
        if ctx.scheduled_time is not None:
            due = ctx.scheduled_time.timestamp()
            RECORDS.append((due, time.time() - due))


def lateness_jobs(count: int) -> list[type[LatenessJob]]:
    return [
        type(
            f"LatenessJob{j:04d}",
            (LatenessJob,),
            {"id": f"bench.sched-{j:04d}", "name": f"Scheduled {j:04d}", "type_name": f"Bench.Sched{j:04d}, bench"},
        )
        for j in range(count)
    ]


def write_xcron_xml(path: Path, plan: Plan, jobs: list[type[LatenessJob]]) -> None:
    every = timedelta(seconds=plan.interval)
    per_job: list[list[Schedule]] = [[] for _ in jobs]
    for i in range(plan.count):
        per_job[i % len(jobs)].append(Schedule(spec=IntervalSpec(every=every), start=plan.start(i)))
    entries = tuple(
        ScheduleEntry(type_name=job.type_name, start_type="schedule", schedules=tuple(schedules))
        for job, schedules in zip(jobs, per_job, strict=True)
    )
    save_schedule_file(path, ScheduleDocument(entries), default_zone="UTC")


class _LogCounter(logging.Handler):
    """Counts the warnings and errors logged in the phase (by message template) instead of printing them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[f"{record.name}: {record.msg}"] += 1


def _count_logs() -> _LogCounter:
    counter = _LogCounter()
    root = logging.getLogger()
    root.addHandler(counter)
    root.setLevel(logging.WARNING)
    return counter


def _cpu() -> float:
    times = psutil.Process().cpu_times()
    return float(times.user + times.system)


async def _observe(plan: Plan, started: float) -> dict[str, Any]:
    """Idle CPU, or lateness over the measurement window, once the scheduler under test runs."""
    result: dict[str, Any] = {"rss": psutil.Process().memory_info().rss}
    profiler = cProfile.Profile() if plan.profile else None
    if plan.idle:
        await asyncio.sleep(plan.settle)
        wall, cpu = time.time(), _cpu()
        if profiler:
            profiler.enable()
        await asyncio.sleep(plan.idle)
        if profiler:
            profiler.disable()
        result["cpu_share"] = (_cpu() - cpu) / (time.time() - wall)
    else:
        lo = started + plan.warmup
        hi = lo + plan.measure
        await asyncio.sleep(max(0.0, lo - time.time()))
        if profiler:
            profiler.enable()
        cpu = _cpu()
        await asyncio.sleep(max(0.0, hi - time.time()))
        result["cpu_share"] = (_cpu() - cpu) / plan.measure
        if profiler:
            profiler.disable()
        await asyncio.sleep(plan.settle)  # the last ones start
        result["lateness"] = [late for due, late in RECORDS if lo <= due <= hi]
        result["expected"] = plan.due_between(lo, hi)
    if profiler:
        profiler.dump_stats(plan.profile)
    return result


def xcron_phase(conn: Connection, plan: Plan) -> None:
    patch = os.environ.get("XCRON_BENCH_PATCH")
    if patch:  # a module patching a proposed change in, to measure it the same way
        importlib.import_module(patch)
    logs = _count_logs()
    # The loop the server runs on by default (uvloop); XCRON_BENCH_EVENT_LOOP=asyncio for asyncio's own.
    if os.environ.get("XCRON_BENCH_EVENT_LOOP", "uvloop") == "uvloop":
        import uvloop

        result = uvloop.run(_xcron_phase(plan))
    else:
        result = asyncio.run(_xcron_phase(plan))
    result["logs"] = dict(logs.counts)
    conn.send(result)
    conn.recv()


async def _xcron_phase(plan: Plan) -> dict[str, Any]:
    from xcron.server.app import ServerConfig, XcronServer

    with tempfile.TemporaryDirectory(prefix="xcron-bench-scheduler-") as tmp:
        folder = Path(tmp)
        jobs = lateness_jobs(max(1, plan.count // plan.per_job))
        write_xcron_xml(folder / "xcron.xml", plan, jobs)
        server = XcronServer(
            ServerConfig(
                listen="127.0.0.1:0",
                schedule_file=folder / "xcron.xml",
                data_dir=folder / "data",
                load_entry_points=False,
                time_zone="UTC",
            )
        )
        for job in jobs:
            server.registry.register(job)
        began = time.perf_counter()
        await server.start()
        startup = time.perf_counter() - began
        try:
            result = await _observe(plan, time.time())
        finally:
            await server.stop()
        result["startup"] = startup
        return result


async def _aps_noop(first_due: float, interval: float) -> None:
    now = time.time()
    due = first_due + math.floor((now - first_due) / interval + 1e-9) * interval
    RECORDS.append((due, now - due))


def apscheduler_phase(conn: Connection, plan: Plan) -> None:
    logs = _count_logs()
    result = asyncio.run(_apscheduler_phase(plan))
    result["logs"] = dict(logs.counts)
    conn.send(result)
    conn.recv()


async def _apscheduler_phase(plan: Plan) -> dict[str, Any]:
    from apscheduler.schedulers.asyncio import AsyncIOScheduler  # type: ignore[import-untyped]
    from apscheduler.triggers.interval import IntervalTrigger  # type: ignore[import-untyped]

    scheduler = AsyncIOScheduler(
        timezone=UTC, job_defaults={"misfire_grace_time": None, "coalesce": False, "max_instances": 1}
    )
    began = time.perf_counter()
    for i in range(plan.count):
        start = plan.start(i)
        trigger = IntervalTrigger(seconds=plan.interval, start_date=start, timezone=UTC)
        scheduler.add_job(_aps_noop, trigger, args=(start.timestamp(), plan.interval), id=f"s{i}")
    scheduler.start()
    startup = time.perf_counter() - began
    try:
        result = await _observe(plan, time.time())
    finally:
        scheduler.pause()
        await asyncio.sleep(0.2)  # let the runs it already started end, rather than cancel them
        scheduler.shutdown(wait=False)
    result["startup"] = startup
    return result
