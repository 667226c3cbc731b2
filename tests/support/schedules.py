"""Comparing schedules as set, apart from what the server fills in as time passes."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from xcron.client import Schedule


def as_set(schedules: Iterable[Schedule]) -> tuple[Schedule, ...]:
    """The schedules without their output-only fields (next and last fire times, counters), which move on
    every occurrence: a replica that sees a 1-second schedule a second late still has the same schedule."""
    return tuple(
        dataclasses.replace(
            schedule,
            next_fire_times=(),
            last_fire_time=None,
            overlap_skipped_count=0,
            misfire_skipped_count=0,
            not_started_count=0,
        )
        for schedule in schedules
    )
