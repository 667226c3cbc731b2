"""What both state stores share: parameter values kept as [type, text] (so a value reads back with its
type), and a job's row read back as a JobRecord."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from xcron.server.core.model import JobState, ParameterType, ParameterValue
from xcron.server.core.params import format_text, parse_text, type_of
from xcron.server.core.ports import JobRecord


def encode_parameters(values: Mapping[str, ParameterValue]) -> dict[str, list[str]]:
    """A JSON-safe, type-tagged form for the state store."""
    return {name: [type_of(v).value, format_text(v)] for name, v in values.items()}


def decode_parameters(data: Mapping[str, Sequence[str]]) -> dict[str, ParameterValue]:
    return {name: parse_text(ParameterType(kind), text, name) for name, (kind, text) in data.items()}


def job_from_row(row: Mapping[str, Any], to_time: Callable[[Any], datetime | None]) -> JobRecord:
    """A `jobs` row (same columns in both stores); `to_time` reads the store's own timestamp form."""
    return JobRecord(
        job_id=row["job_id"],
        state=JobState(row["state"]),
        progress=row["progress"],
        status_text=row["status_text"],
        last_start=to_time(row["last_start"]),
        last_finish=to_time(row["last_finish"]),
        execution_id=row["execution_id"],
    )
