"""The progress-storm job of the watch bench (`--jobs bench.storm_jobs`): bursts of COUNT progress
reports in a tight loop, yielding to the loop every 100 reports (what tests/support's test.spam does),
one burst after another until cancelled (or BURSTS bursts)."""

from __future__ import annotations

import asyncio

from xcron.server.core.jobs import Job, JobContext, Parameter, ParameterType

STORM_JOB = "bench.storm"


class StormJob(Job):
    id = STORM_JOB
    name = "Progress storm"
    description = "Reports progress COUNT times as fast as it can."
    parameters = (
        Parameter("count", ParameterType.INT, default=20_000),
        Parameter("bursts", ParameterType.INT, default=1),
    )
    can_cancel = True

    async def run(self, ctx: JobContext) -> None:
        count = ctx.get_int("count")
        for burst in range(ctx.get_int("bursts")):
            for i in range(count):
                ctx.report_progress((i + 1) / count, f"burst {burst + 1} step {i + 1}")
                if i % 100 == 0:
                    await asyncio.sleep(0)
            if ctx.cancel_requested:
                return
