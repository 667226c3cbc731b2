"""The JSON documents of ``--output json``: part of the command's interface, so their shapes are stable.

Every object always has the same keys (``null`` when a value is absent), timestamps are ISO-8601 in UTC and
durations are seconds (a float).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import IO, TypeAlias

from xcron.client import (
    CalendarSpec,
    CronSpec,
    Execution,
    IntervalSpec,
    Job,
    JobStatus,
    ParameterValue,
    Schedule,
    WatchEvent,
)

from ._text import run_time, schedule_summary

Json: TypeAlias = bool | int | float | str | list["Json"] | dict[str, "Json"] | None


def iso(value: datetime | None) -> str | None:
    """An aware time as ISO-8601 in UTC; None stays None."""
    return None if value is None else value.astimezone(UTC).isoformat()


def seconds(value: timedelta | None) -> float | None:
    """A duration in seconds; None stays None."""
    return None if value is None else value.total_seconds()


def value_json(value: ParameterValue | None) -> Json:
    """A parameter value: times as ISO-8601, durations as seconds, the rest as JSON scalars."""
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, timedelta):
        return seconds(value)
    return value


def parameters_json(parameters: Mapping[str, ParameterValue]) -> dict[str, Json]:
    return {name: value_json(parameters[name]) for name in sorted(parameters)}


def schedule_json(schedule: Schedule) -> dict[str, Json]:
    """One schedule; ``kind`` says which of ``every`` / ``days`` + ``time_of_day`` / ``expression`` is set."""
    spec = schedule.spec
    kind = "interval" if isinstance(spec, IntervalSpec) else "calendar" if isinstance(spec, CalendarSpec) else "cron"
    return {
        "kind": kind,
        "summary": schedule_summary(schedule),
        "every": seconds(spec.every) if isinstance(spec, IntervalSpec) else None,
        "days": [day.name for day in sorted(spec.days)] if isinstance(spec, CalendarSpec) else None,
        "time_of_day": spec.time_of_day.isoformat() if isinstance(spec, CalendarSpec) else None,
        "expression": spec.expression if isinstance(spec, CronSpec) else None,
        "time_zone": schedule.time_zone,
        "start_time": iso(schedule.start_time),
        "end_time": iso(schedule.end_time),
        "parameters": parameters_json(schedule.parameters),
        "misfire_policy": schedule.misfire_policy.name,
        "misfire_grace_period": seconds(schedule.misfire_grace_period),
        "max_catchup_runs": schedule.max_catchup_runs,
        "overlap_policy": schedule.overlap_policy.name,
        "next_fire_times": [iso(t) for t in schedule.next_fire_times],
        "last_fire_time": iso(schedule.last_fire_time),
        "overlap_skipped_count": schedule.overlap_skipped_count,
        "misfire_skipped_count": schedule.misfire_skipped_count,
        "not_started_count": schedule.not_started_count,
    }


def job_json(job: Job) -> dict[str, Json]:
    return {
        "id": job.id,
        "name": job.name,
        "description": job.description,
        "type_name": job.type_name,
        "can_cancel": job.can_cancel,
        "state": job.state.name,
        "progress": job.progress,
        "status_text": job.status_text,
        "last_start_time": iso(job.last_start_time),
        "last_finish_time": iso(job.last_finish_time),
        "execution_id": job.execution_id or None,
        "parameters": [
            {
                "name": p.name,
                "type": p.type.name,
                "required": p.required,
                "default": value_json(p.default_value),
                "description": p.description,
            }
            for p in job.parameters
        ],
        "schedules_paused": job.schedules_paused,
        "schedules": [schedule_json(s) for s in job.schedules],
    }


def execution_json(execution: Execution) -> dict[str, Json]:
    return {
        "id": execution.id,
        "job_id": execution.job_id,
        "state": execution.state.name,
        "trigger": execution.trigger.name,
        "parameters": parameters_json(execution.parameters),
        "start_time": iso(execution.start_time),
        "finish_time": iso(execution.finish_time),
        "duration": seconds(run_time(execution)),
        "progress": execution.progress,
        "status_text": execution.status_text,
        "error": execution.error,
        "scheduled_time": iso(execution.scheduled_time),
        "request_id": execution.request_id,
        "cancel_requested": execution.cancel_requested,
    }


def status_json(status: JobStatus) -> dict[str, Json]:
    return {
        "job_id": status.job_id,
        "state": status.state.name,
        "progress": status.progress,
        "status_text": status.status_text,
        "last_start_time": iso(status.last_start_time),
        "last_finish_time": iso(status.last_finish_time),
        "execution_id": status.execution_id or None,
        "sequence": status.sequence,
    }


def event_json(event: WatchEvent) -> dict[str, Json]:
    return {
        "kind": event.kind.name,
        "sequence": event.sequence,
        "statuses": [status_json(s) for s in event.statuses],
    }


def write_json(document: Json, stream: IO[str], *, one_line: bool = False) -> None:
    """One JSON document (indented) or one line of a JSON-lines stream, flushed so pipes see it at once."""
    text = (
        json.dumps(document, ensure_ascii=False, separators=(",", ":"))
        if one_line
        else json.dumps(document, ensure_ascii=False, indent=2)
    )
    stream.write(text + "\n")
    stream.flush()
