"""Purges execution history beyond the retention limits (by age and by count per job)."""

from __future__ import annotations

from datetime import timedelta

from xcron.server.core.clock import Clock
from xcron.server.core.jobs import Job, JobContext, Parameter, ParameterType
from xcron.server.core.ports import StateStore


class PurgeHistoryJob(Job):
    id = "xcron.purge-history"
    type_name = "xcron.server.jobs.PurgeHistoryJob, xcron-server"
    name = "Purge execution history"
    description = (
        "Deletes finished executions older than N days and, per job, all but the newest K. "
        "Defaults come from the server's retention settings."
    )
    parameters = (
        Parameter("older_than_days", ParameterType.INT, description="delete runs that started more than N days ago"),
        Parameter("keep_last", ParameterType.INT, description="keep at most this many runs per job"),
        Parameter("dry_run", ParameterType.BOOL, default=False, description="only report what would go"),
    )
    can_cancel = True

    async def run(self, ctx: JobContext) -> None:
        store: StateStore = ctx.services["store"]
        days = ctx.parameters.get("older_than_days", ctx.services.get("history_max_age_days"))
        keep = ctx.parameters.get("keep_last", ctx.services.get("history_keep_last"))
        if (isinstance(days, int) and days < 0) or (isinstance(keep, int) and keep < 0):
            raise ValueError("older_than_days and keep_last must not be negative")
        if ctx.parameters.get("dry_run"):
            ctx.report_progress(1.0, f"dry run: would purge runs older than {days} days, keeping {keep} per job")
            return
        clock: Clock = ctx.services["clock"]
        cutoff = clock.now() - timedelta(days=days) if isinstance(days, int) else None
        ctx.report_progress(0.0, f"purging runs older than {days} days")
        by_age = await store.purge_executions(older_than=cutoff, keep_last=None) if cutoff else 0
        ctx.raise_if_cancelled()
        ctx.report_progress(0.5, f"purged {by_age} by age; trimming to {keep} per job")
        by_count = await store.purge_executions(older_than=None, keep_last=keep) if isinstance(keep, int) else 0
        ctx.report_progress(1.0, f"purged {by_age + by_count} executions ({by_age} by age, {by_count} by count)")
