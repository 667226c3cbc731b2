"""The cluster's rules for changes learnt from other replicas or re-read from the database: never move a
job back (to RUNNING for a run that ended, or to an older run). The fault tests exercise them end to end."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from xcron.server.core.cluster import Cluster
from xcron.server.core.errors import NotFound
from xcron.server.core.events import JobStatus
from xcron.server.core.model import ExecutionState, JobState, Trigger
from xcron.server.core.ports import ExecutionRecord, JobRecord

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


class _Store:
    replica_id = "me"
    epoch = 1


class _Executor:
    def __init__(self, record: JobRecord) -> None:
        self.record = record
        self.applied: list[JobStatus] = []

    def apply_remote(self, status: JobStatus) -> None:
        self.applied.append(status)

    def job_record(self, job_id: str) -> JobRecord:
        if job_id != self.record.job_id:
            raise NotFound(job_id)
        return self.record


def _cluster(current: JobRecord) -> Cluster:
    cluster = Cluster(cast(Any, _Store()), lease=timedelta(seconds=3))
    cluster._executor = cast(Any, _Executor(current))
    return cluster


def _status(execution_id: str, state: JobState, start: datetime, job_id: str = "j") -> JobStatus:
    record = JobRecord(job_id=job_id, state=state, execution_id=execution_id, last_start=start)
    return JobStatus(record, origin="other")


@pytest.mark.parametrize(
    ("current", "incoming", "stale"),
    [
        # The same run: it may end, never start again.
        ((JobState.COMPLETED, "e1", T0), ("e1", JobState.RUNNING, T0), True),
        ((JobState.ABORTED, "e1", T0), ("e1", JobState.RUNNING, T0), True),
        ((JobState.RUNNING, "e1", T0), ("e1", JobState.ABORTED, T0), False),
        ((JobState.ABORTED, "e1", T0), ("e1", JobState.COMPLETED, T0), False),  # the database decides that one
        # Another run: only a newer one may take the job's place.
        ((JobState.RUNNING, "e2", T0 + timedelta(seconds=5)), ("e1", JobState.ABORTED, T0), True),
        ((JobState.ABORTED, "e1", T0), ("e2", JobState.RUNNING, T0 + timedelta(seconds=5)), False),
        ((JobState.NOT_YET_RUN, "", None), ("e1", JobState.RUNNING, T0), False),
    ],
)
def test_changes_never_move_a_job_back(
    current: tuple[JobState, str, datetime | None], incoming: tuple[str, JobState, datetime], stale: bool
) -> None:
    state, execution_id, start = current
    cluster = _cluster(JobRecord(job_id="j", state=state, execution_id=execution_id, last_start=start))
    assert cluster._stale(_status(*incoming)) is stale


def test_changes_of_unknown_jobs_are_ignored() -> None:
    cluster = _cluster(JobRecord(job_id="j"))
    assert cluster._stale(_status("e1", JobState.RUNNING, T0, job_id="other"))


def _aborted(execution_id: str, start: datetime) -> ExecutionRecord:
    return ExecutionRecord(
        id=execution_id,
        job_id="j",
        parameters={},
        trigger=Trigger.MANUAL,
        state=ExecutionState.ABORTED,
        start_time=start,
        finish_time=start + timedelta(seconds=4),
        error="interrupted: replica b stopped",
    )


@pytest.mark.parametrize(
    ("current", "applied"),
    [
        (JobRecord(job_id="j", state=JobState.RUNNING, execution_id="e1", last_start=T0), True),  # the run it shows
        # A run this replica never heard start (its replica stopped first): the abort is all it learns of it.
        (
            JobRecord(job_id="j", state=JobState.COMPLETED, execution_id="e0", last_start=T0 - timedelta(minutes=1)),
            True,
        ),
        (JobRecord(job_id="j"), True),
        # A newer run took the job's place meanwhile: the abort of an older one does not move it back.
        (JobRecord(job_id="j", state=JobState.RUNNING, execution_id="e2", last_start=T0 + timedelta(seconds=5)), False),
    ],
)
def test_an_abort_decided_in_the_database_reaches_memory_unless_a_newer_run_shows(
    current: JobRecord, applied: bool
) -> None:
    cluster = _cluster(current)
    cluster._adopt(_aborted("e1", T0))
    executor = cast(_Executor, cluster._executor)
    assert [s.record.execution_id for s in executor.applied] == (["e1"] if applied else [])
    if applied:
        assert executor.applied[0].record.state is JobState.ABORTED
