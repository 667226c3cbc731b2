"""An example job package: how another team adds jobs to xcron.

1. Subclass `xcron.server.Job`, declare id, name, description, parameters, can_cancel.
2. Implement `run(ctx)`: `async def` runs on the server's loop, plain `def` in its thread pool.
3. Register the module under the `xcron.jobs` entry point in pyproject.toml, install the package
   next to xcron-server, restart it: the jobs show up in ListJobs.
"""

from __future__ import annotations

from xcron.server import Job, JobContext, Parameter, ParameterType


class GreetJob(Job):
    """An async job: runs on the event loop, so it must await, never block."""

    id = "example.greet"
    name = "Greet"
    description = "Says hello NAME, TIMES times, one step per DELAY seconds."
    parameters = (
        Parameter("name", ParameterType.STRING, required=True, description="who to greet"),
        Parameter("times", ParameterType.INT, default=3, description="how many greetings"),
        Parameter("shout", ParameterType.BOOL, default=False, description="greet in capitals"),
        Parameter("delay", ParameterType.DOUBLE, default=0.0, description="seconds between greetings"),
    )
    can_cancel = True

    async def run(self, ctx: JobContext) -> None:
        times = ctx.get_int("times")
        greeting = f"hello {ctx.get_str('name')}"
        if ctx.get_bool("shout"):
            greeting = greeting.upper()
        for i in range(times):
            if await ctx.sleep(ctx.get_float("delay")):
                return  # cancelled: returning after a cancel request ends the run CANCELLED
            ctx.report_progress((i + 1) / max(times, 1), f"{greeting} ({i + 1}/{times})")


class CountdownJob(Job):
    """A blocking job: runs in a worker thread and checks for cancellation between steps."""

    id = "example.countdown"
    name = "Countdown"
    description = "Counts down from SECONDS, one step a second; cancellable."
    parameters = (Parameter("seconds", ParameterType.INT, default=10, description="where to start"),)
    can_cancel = True

    def run(self, ctx: JobContext) -> None:
        seconds = ctx.get_int("seconds")
        if seconds < 0:
            raise ValueError("seconds must not be negative")
        for left in range(seconds, 0, -1):
            ctx.report_progress((seconds - left) / seconds, f"{left} s left")
            if ctx.wait(1.0):
                ctx.raise_if_cancelled()
        ctx.report_progress(1.0, "lift-off")
