"""Jobs the end-to-end tests load with `--jobs xcron_test_jobs`. They wait on files the test
creates, so the tests synchronise on events, not on sleeps."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from pathlib import Path

from xcron.server.core.jobs import Job, JobContext, Parameter, ParameterType


class BlockJob(Job):
    id = "test.block"
    name = "Block"
    description = "Waits until cancelled or until RELEASE exists."
    parameters = (
        Parameter("release", ParameterType.STRING, default="", description="a file whose creation ends the run"),
        Parameter("timeout", ParameterType.DOUBLE, default=60.0),
    )
    can_cancel = True

    def run(self, ctx: JobContext) -> None:
        ctx.report_progress(0.5, "waiting")
        release = Path(ctx.get_str("release")) if ctx.get_str("release") else None
        deadline = time.monotonic() + ctx.get_float("timeout")
        while time.monotonic() < deadline:
            if release is not None and release.exists():
                ctx.report_progress(1.0, "released")
                return
            if ctx.wait(0.02):
                ctx.raise_if_cancelled()
        raise TimeoutError("never released")


class StubbornJob(BlockJob):
    id = "test.stubborn"
    name = "Stubborn"
    description = "Like test.block but cannot be cancelled: it never looks at cancel requests."
    can_cancel = False

    def run(self, ctx: JobContext) -> None:
        ctx.report_progress(0.5, "waiting")
        release = Path(ctx.get_str("release")) if ctx.get_str("release") else None
        deadline = time.monotonic() + ctx.get_float("timeout")
        while time.monotonic() < deadline and not (release is not None and release.exists()):
            time.sleep(0.02)


class FailJob(Job):
    id = "test.fail"
    name = "Fail"
    description = "Raises an error with MESSAGE."
    parameters = (Parameter("message", ParameterType.STRING, default="boom"),)

    def run(self, ctx: JobContext) -> None:
        raise RuntimeError(str(ctx.parameters["message"]))


class TypesJob(Job):
    id = "test.types"
    name = "Types"
    description = "Takes one parameter of every type and reports them."
    parameters = (
        Parameter("s", ParameterType.STRING, required=True),
        Parameter("i", ParameterType.INT, required=True),
        Parameter("b", ParameterType.BOOL, default=False),
        Parameter("d", ParameterType.DOUBLE, default=1.5),
        Parameter("t", ParameterType.TIMESTAMP),
        Parameter("u", ParameterType.DURATION),
    )

    async def run(self, ctx: JobContext) -> None:
        ctx.report_progress(1.0, " ".join(f"{k}={v!r}" for k, v in sorted(ctx.parameters.items())))


class TickJob(Job):
    id = "test.tick"
    name = "Tick"
    description = "Does nothing, quickly; for schedules."
    parameters = (Parameter("label", ParameterType.STRING, default=""),)

    async def run(self, ctx: JobContext) -> None:
        due = ctx.scheduled_time.isoformat() if ctx.scheduled_time else "manual"
        ctx.report_progress(1.0, f"tick {ctx.parameters['label']} for {due}")


class WildJob(Job):
    id = "test.wild"
    name = "Wild"
    description = "Reports progress outside 0..1 and NaN, then leaves with SystemExit from its thread."

    def run(self, ctx: JobContext) -> None:
        for value in (5.0, -1.0, float("nan"), float("inf")):
            ctx.report_progress(value, f"progress {value}")
        raise SystemExit(3)


class SpamJob(Job):
    id = "test.spam"
    name = "Spam"
    description = "Reports progress COUNT times as fast as it can, the last one 1.0."
    parameters = (Parameter("count", ParameterType.INT, default=1000),)

    async def run(self, ctx: JobContext) -> None:
        count = ctx.get_int("count")
        for i in range(count):
            ctx.report_progress((i + 1) / count, f"step {i + 1}")
            if i % 100 == 0:
                await asyncio.sleep(0)


class RecordJob(Job):
    id = "test.record"
    name = "Record"
    description = (
        "Appends a start line and an end line (JSON: execution, scheduled time, wall time, pid) to HISTORY; "
        "runs HOLD seconds, or until RELEASE exists, or until cancelled. For the history checker of the "
        "cluster fault tests."
    )
    parameters = (
        Parameter("history", ParameterType.STRING, required=True, description="file the lines are appended to"),
        Parameter("hold", ParameterType.DOUBLE, default=60.0),
        Parameter("release", ParameterType.STRING, default=""),
    )
    can_cancel = True

    def run(self, ctx: JobContext) -> None:
        history = Path(ctx.get_str("history"))
        release = Path(ctx.get_str("release")) if ctx.get_str("release") else None
        scheduled = ctx.scheduled_time.isoformat() if ctx.scheduled_time else None

        def record(event: str, how: str = "") -> None:
            line = {"event": event, "execution_id": ctx.execution_id, "job_id": ctx.job_id, "scheduled": scheduled,
                    "t": time.time(), "pid": os.getpid(), "how": how}  # fmt: skip
            with history.open("a") as out:  # one write per line, O_APPEND: lines never interleave
                out.write(json.dumps(line) + "\n")

        record("start")
        ctx.report_progress(0.5, "holding")
        deadline = time.monotonic() + ctx.get_float("hold")
        how = "held"
        while time.monotonic() < deadline:
            if release is not None and release.exists():
                how = "released"
                break
            if ctx.wait(0.02):
                how = "cancelled"
                break
        record("end", how)
        ctx.raise_if_cancelled()
        ctx.report_progress(1.0, how)


class SwallowJob(Job):
    id = "test.swallow"
    name = "Swallow"
    description = "An async job that swallows cancellation and ends by itself after TIMEOUT seconds."
    parameters = (Parameter("timeout", ParameterType.DOUBLE, default=600.0),)
    can_cancel = True

    async def run(self, ctx: JobContext) -> None:
        ctx.report_progress(0.5, "swallowing cancellation")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ctx.get_float("timeout")
        while loop.time() < deadline:
            with contextlib.suppress(asyncio.CancelledError):  # the misbehaviour under test
                await asyncio.sleep(0.05)
