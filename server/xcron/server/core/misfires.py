"""Misfire policies: which of a schedule's occurrences since its last handled one (`last_fire`) run now.

On start, and whenever the scheduler wakes late (machine asleep), the occurrences between `last_fire`
and now are the missed ones, and the schedule's misfire policy decides:

- RUN_ONCE (default): one run now, for the latest missed occurrence (Quartz's "fire once now").
- SKIP: none; they are counted as misfire-skipped.
- RUN_ALL: each of them (the newest `max_catchup_runs`), one after another.

Missed occurrences older than `misfire_grace` are dropped and counted. An occurrence less than the
misfire threshold late is on time, not missed (Quartz's misfireThreshold).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from xcron.server.core.model import MisfirePolicy, Schedule
from xcron.server.core.triggers import occurrences_between


@dataclass(frozen=True)
class Due:
    newest: datetime
    """The newest occurrence due: occurrences up to here are handled once this is decided."""
    chosen: list[datetime]
    """The ones to run, oldest first."""
    late: int
    """How many were missed (not on time), counting those beyond `max_catchup_runs`."""
    run_late: int
    """How many of the missed ones run."""

    @property
    def dropped(self) -> int:
        return self.late - self.run_late


def due_occurrences(
    schedule: Schedule, last: datetime, now: datetime, *, threshold: timedelta, default_zone: str
) -> Due | None:
    """The occurrences after `last` up to `now` and what the misfire policy runs of them; None if none."""
    limit = max(1, schedule.max_catchup_runs) if schedule.misfire_policy is MisfirePolicy.RUN_ALL else 1
    missed, total = occurrences_between(schedule, last, now, default_zone=default_zone, limit=limit)
    if not missed:
        return None
    newest = missed[-1]
    # Only the newest occurrence can be on time; anything before it was missed.
    on_time = [newest] if now - newest <= threshold else []
    late = missed[:-1] if on_time else missed
    if schedule.misfire_grace:
        late = [t for t in late if now - t <= schedule.misfire_grace]
    if schedule.misfire_policy is MisfirePolicy.SKIP:
        run_late: list[datetime] = []
    elif schedule.misfire_policy is MisfirePolicy.RUN_ONCE:
        run_late = late[-1:] if not on_time else []
    else:
        run_late = late
    return Due(newest=newest, chosen=run_late + on_time, late=total - len(on_time), run_late=len(run_late))
