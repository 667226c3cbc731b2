"""Waiting on a job's watch stream: the event itself, not a poll."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from xcron.client import Client


def follow(client: Client, job_id: str, until: Callable[[Any], bool]) -> Any:
    """Reads the watch stream until a status satisfies `until`; returns that status."""
    stream = client.watch_jobs([job_id])
    try:
        for event in stream:
            for status in event.statuses:
                if until(status):
                    return status
    finally:
        stream.close()
    raise AssertionError("stream ended")
