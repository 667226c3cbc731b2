"""Rows <-> records, and the texts a replica leaves in the rows it aborts."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from psycopg.types.json import Json

from xcron.server.core.model import ExecutionState, Trigger
from xcron.server.core.ports import ExecutionRecord, JobRecord
from xcron.server.stores._codec import decode_parameters, encode_parameters


def default_replica_id() -> str:
    """Unique per process start: host, pid and a random suffix (pids repeat across containers)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def replica_stopped(replica_id: str) -> str:
    return f"interrupted: replica {replica_id} stopped"


def lease_lost(replica_id: str) -> str:
    return f"interrupted: replica {replica_id} lost its lease (no heartbeat reached the database in time)"


def _utc(value: datetime | None) -> datetime | None:
    # Naive values are local time, as in the SQLite store; everything is stored and returned in UTC.
    return value.astimezone(UTC) if value is not None else None


def _execution(row: Mapping[str, Any]) -> ExecutionRecord:
    return ExecutionRecord(
        id=row["id"],
        job_id=row["job_id"],
        parameters=decode_parameters(row["parameters"]),
        trigger=Trigger(row["trigger"]),
        state=ExecutionState(row["state"]),
        start_time=row["start_time"].astimezone(UTC),
        finish_time=_utc(row["finish_time"]),
        error=row["error"],
        progress=row["progress"],
        status_text=row["status_text"],
        scheduled_time=_utc(row["scheduled_time"]),
        request_id=row["request_id"],
        cancel_requested=row["cancel_requested"],
    )


def _execution_params(record: ExecutionRecord, owner: str, epoch: int) -> dict[str, Any]:
    return {
        "id": record.id,
        "job_id": record.job_id,
        "parameters": Json(encode_parameters(record.parameters)),
        "trigger": record.trigger.value,
        "state": record.state.value,
        "start_time": _utc(record.start_time),
        "finish_time": _utc(record.finish_time),
        "error": record.error,
        "progress": record.progress,
        "status_text": record.status_text,
        "scheduled_time": _utc(record.scheduled_time),
        "request_id": record.request_id,
        "cancel_requested": record.cancel_requested,
        "owner": owner,
        "epoch": epoch,
    }


def _job_params(record: JobRecord) -> tuple[Any, ...]:
    return (
        record.job_id,
        record.state.value,
        record.progress,
        record.status_text,
        _utc(record.last_start),
        _utc(record.last_finish),
        record.execution_id,
    )


def _execution_json(record: ExecutionRecord, owner: str, epoch: int) -> dict[str, Any]:
    """An executions row as JSON, for json_populate_recordset (several rows in one parameter)."""

    def iso(value: datetime | None) -> str | None:
        return value.astimezone(UTC).isoformat() if value is not None else None

    return {
        "id": record.id,
        "job_id": record.job_id,
        "parameters": encode_parameters(record.parameters),
        "trigger": record.trigger.value,
        "state": record.state.value,
        "start_time": iso(record.start_time),
        "finish_time": iso(record.finish_time),
        "error": record.error,
        "progress": record.progress,
        "status_text": record.status_text,
        "scheduled_time": iso(record.scheduled_time),
        "request_id": record.request_id,
        "cancel_requested": record.cancel_requested,
        "owner": owner,
        "epoch": epoch,
    }
