"""The jobs of the benchmark's xcron server (`--jobs bench.jobs`): 50 async jobs that return at once by
default (RunJob throughput, GetJob/ListJobs payloads) or report progress on a fixed cadence (WatchJobs).

The cadence is shared with the bare baseline server and the watch clients (`Cadence`): a global tick
every `1 / rate` seconds, tick n going to job n % J as that job's update k = n // J + 1. Each update's
status text is "<k> <time.time_ns() when published>", so a client on the same machine computes the
delivery latency.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from xcron.server.core.jobs import Job, JobContext, Parameter, ParameterType

JOB_COUNT = 50


def job_id(index: int) -> str:
    return f"bench.job-{index:02d}"


def job_index(job: str) -> int:
    return int(job.rsplit("-", 1)[1])


@dataclass(frozen=True)
class Cadence:
    """When update k (1-based) of job j is due: start + ((k - 1) * jobs + j) * tick."""

    start_ns: int
    tick_ns: int
    jobs: int = JOB_COUNT

    @property
    def period_ns(self) -> int:
        return self.tick_ns * self.jobs

    def due_ns(self, job: int, k: int) -> int:
        return self.start_ns + ((k - 1) * self.jobs + job) * self.tick_ns

    def last_k_before(self, job: int, t_ns: int) -> int:
        """The highest k due at or before t_ns (0 if none)."""
        if t_ns < self.due_ns(job, 1):
            return 0
        return (t_ns - self.start_ns - job * self.tick_ns) // self.period_ns + 1


class BenchJob(Job):
    """Returns at once (updates=0), or reports `updates` progress steps, one every `period` seconds from
    `start_ns + offset`, with the publish time in the status text."""

    description = "Benchmark job: no-op, or progress on a fixed cadence with the publish time in the status text."
    parameters = (
        Parameter("updates", ParameterType.INT, default=0, description="progress reports to send (0: no-op)"),
        Parameter("period", ParameterType.DOUBLE, default=1.0, description="seconds between two reports"),
        Parameter("start_ns", ParameterType.INT, default=0, description="epoch ns of the cadence's start"),
        Parameter("offset", ParameterType.DOUBLE, default=0.0, description="this job's first report after start"),
    )
    can_cancel = True

    async def run(self, ctx: JobContext) -> None:
        updates = ctx.get_int("updates")
        if updates <= 0:
            return
        period_ns = round(ctx.get_float("period") * 1e9)
        first_ns = ctx.get_int("start_ns") + round(ctx.get_float("offset") * 1e9)
        for k in range(1, updates + 1):
            delay = (first_ns + (k - 1) * period_ns - time.time_ns()) / 1e9
            if delay > 0 and await ctx.sleep(delay):
                return  # cancelled
            ctx.report_progress(k / updates, f"{k} {time.time_ns()}")


def _make(index: int) -> type[BenchJob]:
    name = f"BenchJob{index:02d}"
    return type(name, (BenchJob,), {"id": job_id(index), "name": f"Bench job {index:02d}", "__qualname__": name})


JOBS: tuple[type[BenchJob], ...] = tuple(_make(i) for i in range(JOB_COUNT))
# The registry collects the Job classes a module exports by name.
globals().update({job.__name__: job for job in JOBS})
