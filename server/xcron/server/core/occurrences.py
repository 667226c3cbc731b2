"""What the scheduler does with an occurrence besides starting its run: the entry that holds a schedule's
pending occurrences, why one did not start, and, in a cluster, counting the ones skipped or missed
exactly once (every replica sees them; the one that claims an occurrence counts it, the others learn
the totals through Scheduler.adjust_counters)."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from xcron.server.core.errors import FailedPrecondition, InvalidArgument, LimitExceeded
from xcron.server.core.executor import ClusterHooks, Executor
from xcron.server.core.model import Schedule
from xcron.server.core.ports import ScheduleRecord

log = logging.getLogger("xcron.server.core.scheduler")  # the scheduler's log: operators follow schedules there


@dataclass(eq=False)
class Entry:
    """One schedule of a job as the scheduler plans it."""

    job_id: str
    schedule: Schedule
    record: ScheduleRecord
    next_due: datetime | None = None
    pending: deque[datetime] = field(default_factory=deque)
    version: int = 0


def not_started_reason(exc: Exception) -> str:
    """The reason label of xcron_occurrences_not_started for a start that raised `exc`."""
    if isinstance(exc, LimitExceeded):
        return "max_running"
    if isinstance(exc, InvalidArgument):
        return "invalid_parameters"
    if isinstance(exc, FailedPrecondition) and exc.reason == "SHUTTING_DOWN":
        return "shutting_down"
    return "error"


def log_skip(executor: Executor, job_id: str, due: datetime) -> None:
    if executor.running(job_id) is not None:
        log.info("job %s is still running: occurrence %s skipped", job_id, due.isoformat())
    else:  # the previous occurrence's start still waits on the store (a claim, or the run's record)
        log.info("job %s is still being started (waiting on the store): occurrence %s skipped", job_id,
                 due.isoformat())  # fmt: skip


Bump = Callable[..., None]
"""Scheduler._bump(job_id, schedule_key, overlap=n, misfire=n): adds to a schedule's counters and saves them."""


class ClusterCounts:
    def __init__(self, cluster: ClusterHooks, executor: Executor, bump: Bump) -> None:
        self._cluster = cluster
        self._executor = executor
        self._bump = bump

    async def skip_if_claimed(self, entry: Entry, due: datetime) -> None:
        try:
            if not await self._cluster.claim(entry.job_id, entry.schedule.key, due, run=False):
                return  # another replica handles (runs or counts) this occurrence
        except Exception as exc:
            log.warning("job %s: occurrence %s neither run nor counted: %s", entry.job_id, due.isoformat(), exc)
            return
        self._bump(entry.job_id, entry.schedule.key, overlap=1)
        self._executor.observer.overlap_skipped(entry.job_id, entry.schedule.overlap_policy.value)
        log_skip(self._executor, entry.job_id, due)

    async def count_missed_if_claimed(self, job_id: str, schedule: Schedule, newest: datetime, count: int) -> None:
        try:
            if not await self._cluster.claim(job_id, schedule.key + "#missed", newest, run=False):
                return
        except Exception as exc:
            log.warning("job %s: %d missed occurrence(s) not counted: %s", job_id, count, exc)
            return
        self._bump(job_id, schedule.key, misfire=count)
        self._executor.observer.misfired(job_id, schedule.misfire_policy.value, count)
