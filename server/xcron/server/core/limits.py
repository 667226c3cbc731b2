"""Limits that keep one client from exhausting the server; each is a flag with a sane default."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Limits:
    max_request_bytes: int = 4 * 1024 * 1024
    """Larger requests are refused by grpc with RESOURCE_EXHAUSTED."""
    max_parameters: int = 64
    """Parameters in one run or schedule (INVALID_ARGUMENT beyond)."""
    max_parameter_bytes: int = 64 * 1024
    """Size of one string parameter, in UTF-8 bytes (INVALID_ARGUMENT beyond)."""
    max_schedules_per_job: int = 100
    max_running: int = 1000
    """Executions running at once across all jobs (RESOURCE_EXHAUSTED beyond)."""
    max_watchers: int = 10_000
    """Concurrent WatchJobs streams (RESOURCE_EXHAUSTED beyond)."""
