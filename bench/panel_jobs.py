"""The jobs of the panel benchmark (`--jobs bench.panel_jobs`): 1,000 async jobs. A run reports progress
UPDATES times, one every 1 / RATE seconds; each status text is "<k> <time.time_ns() when published>", so
the page (same machine, same clock) can tell how long a change took to be painted."""

from __future__ import annotations

import time

from xcron.server.core.jobs import Job, JobContext, Parameter, ParameterType

JOB_COUNT = 1000


def job_id(index: int) -> str:
    return f"bench.panel-{index:04d}"


class _Ticker(Job):
    parameters = (
        Parameter("updates", ParameterType.INT, default=100),
        Parameter("rate", ParameterType.DOUBLE, default=10.0),
    )
    can_cancel = True

    async def run(self, ctx: JobContext) -> None:
        updates = ctx.get_int("updates")
        period = 1.0 / ctx.get_float("rate")
        start = time.monotonic()
        for k in range(1, updates + 1):
            delay = start + k * period - time.monotonic()
            if delay > 0 and await ctx.sleep(delay):
                return
            ctx.report_progress(k / updates, f"{k} {time.time_ns()}")


for _i in range(JOB_COUNT):
    _cls = type(
        f"PanelJob{_i:04d}",
        (_Ticker,),
        {"id": job_id(_i), "name": f"Panel job {_i}", "description": "Reports progress on a fixed cadence."},
    )
    globals()[_cls.__name__] = _cls
