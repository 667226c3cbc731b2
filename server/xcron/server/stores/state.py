"""The state store interface: job state, execution history, per-schedule fire times.

xcron.xml stays the human-edited schedule file; everything the server learns while running lives
behind this interface (SQLite by default; a PostgreSQL store can implement the same protocol).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from xcron.server.core.model import ExecutionState, JobState, ParameterValue, Trigger

INTERRUPTED = "interrupted: server stopped"


@dataclass(frozen=True, kw_only=True)
class JobRecord:
    job_id: str
    state: JobState = JobState.NOT_YET_RUN
    progress: float = 0.0
    status_text: str = ""
    last_start: datetime | None = None
    last_finish: datetime | None = None
    execution_id: str = ""


@dataclass(frozen=True, kw_only=True)
class ExecutionRecord:
    id: str
    job_id: str
    parameters: Mapping[str, ParameterValue]
    trigger: Trigger
    state: ExecutionState
    start_time: datetime
    finish_time: datetime | None = None
    error: str = ""
    progress: float = 0.0
    status_text: str = ""
    scheduled_time: datetime | None = None
    request_id: str = ""
    cancel_requested: bool = False


@dataclass(frozen=True, kw_only=True)
class ScheduleRecord:
    """What the scheduler must remember about one schedule across restarts."""

    job_id: str
    schedule_key: str
    last_fire: datetime | None = None
    """Occurrences up to here are handled (run, buffered or skipped); a new schedule starts at 'now'."""
    last_run: datetime | None = None
    """The last occurrence that led to a run (what GetJob shows as last_fire_time)."""
    overlap_skipped: int = 0
    misfire_skipped: int = 0


@dataclass(frozen=True)
class ExecutionCursor:
    """Position in a job's history (newest first): strictly older than this start time and id."""

    start_time: datetime
    execution_id: str


class StateStore(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...

    async def load_jobs(self) -> dict[str, JobRecord]: ...
    async def save_job(self, record: JobRecord) -> None: ...

    async def save_execution(self, record: ExecutionRecord) -> None:
        """Inserts or replaces by id."""
        ...

    async def get_execution(self, execution_id: str) -> ExecutionRecord | None: ...
    async def find_by_request_id(self, job_id: str, request_id: str) -> ExecutionRecord | None:
        """The first execution started with this request id; None for an empty request id."""
        ...

    async def list_executions(
        self, job_id: str, *, limit: int, before: ExecutionCursor | None = None
    ) -> list[ExecutionRecord]: ...

    async def abort_interrupted(self, now: datetime) -> list[ExecutionRecord]:
        """Marks every RUNNING execution and job ABORTED (the process that ran them is gone); returns those
        executions as now stored. A clustered store only touches runs whose replica is gone."""
        ...

    async def purge_executions(self, *, older_than: datetime | None, keep_last: int | None) -> int:
        """Deletes finished executions older than a time and/or beyond the newest N per job."""
        ...

    async def load_schedule_records(self) -> dict[tuple[str, str], ScheduleRecord]: ...
    async def save_schedule_records(self, records: Sequence[ScheduleRecord]) -> None: ...
    async def delete_schedule_records(self, job_id: str, schedule_keys: Sequence[str]) -> None:
        """Forgets removed schedules, so one put back later starts afresh."""
        ...


class RunFenced(Exception):
    """The end of a run could not be recorded because the store holds another outcome for it: another
    replica recorded it ABORTED after this one lost its lease. `stored` is what the store has; it wins."""

    def __init__(self, stored: ExecutionRecord) -> None:
        super().__init__(f"execution {stored.id} is {stored.state.value} in the store: {stored.error}")
        self.stored = stored
