"""Execution records as the store tests write them: a run just started, with a parameter and a status text."""

from __future__ import annotations

from datetime import datetime

from xcron.server.core.model import ExecutionState, Trigger
from xcron.server.core.ports import ExecutionRecord


def running_record(
    execution_id: str, job_id: str, start: datetime, *, trigger: Trigger = Trigger.MANUAL, request_id: str = ""
) -> ExecutionRecord:
    """A RUNNING execution started at `start` (a scheduled one was due then)."""
    return ExecutionRecord(
        id=execution_id,
        job_id=job_id,
        parameters={"n": 1},
        trigger=trigger,
        state=ExecutionState.RUNNING,
        start_time=start,
        scheduled_time=start if trigger is Trigger.SCHEDULE else None,
        request_id=request_id,
        status_text="starting",
    )
