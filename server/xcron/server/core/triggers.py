"""When schedules fire: pure functions over `Schedule`, shared by the scheduler and the API.

Rules
-----
* Interval: occurrences are ``start + k * every`` for k >= 0, in absolute time; DST never moves them.
* Calendar: on the listed ISO weekdays (1 = Monday … 7 = Sunday) at ``time_of_day``, wall clock in the
  schedule's zone, at or after ``start`` (``start`` itself counts when it is an occurrence). No days:
  exactly one occurrence, the first instant at or after ``start`` whose wall time is ``time_of_day``.
* Cron: a croniter expression read in the zone, five fields or six with seconds last (croniter's
  default). The ``@hourly``/``@daily``/… aliases are accepted; croniter's random (``R``) and hashed
  (``H``) forms are not, because they would fire at different times after a restart. Quartz and
  Cronos put the seconds first, so what is pasted from them is refused, never silently misread: seven
  fields (Quartz's year), ``?`` in six fields, weekday syntax in the seconds field, and a seconds
  field of ``*`` or a small unstepped range/list (a weekday like ``1-5``) under a fixed minute. The
  message gives the seconds-last spelling (`_quartz_order`).
* Every kind: nothing before ``start``, nothing after ``end`` (inclusive). Results are aware UTC.

DST (calendar and cron; Cronos' and Hangfire's rule, see API-CONVENTIONS.md)
* A *fixed* wall time inside a skipped hour runs once, at the first instant after the gap (02:30 on
  New York's 2026-03-08 runs at 03:00 EDT).
* A *fixed* wall time inside a repeated hour runs once, on the first pass.
* A cron expression with a wildcard, range or step in its second, minute or hour field follows
  absolute time: it fires in both passes of a repeated hour and never inside a skipped one.
* "Fixed" means the second, minute and hour fields are single values or lists of them
  (``0 1,2 * * *``); calendar times are always fixed.
* The one-shot calendar (no days) takes the first instant literally: inside a repeated hour that can be
  the second pass, when ``start`` is already past the first one. A skipped time still shifts past the gap.

How: croniter only validates and expands the fields. Occurrences are computed here, over wall-clock
times, one UTC-offset segment (the span between two offset transitions) at a time: inside a segment
wall time and UTC differ by a constant, so the next/previous occurrence and the number of occurrences
in a span come from arithmetic on the sorted hour/minute/second lists, and only the segment edges need
the gap/fold rules. croniter's own DST handling is not used: it fires a fixed time twice in a repeated
hour and has changed between versions.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from xcron.server.core.model import CalendarSpec, IntervalSpec, Schedule
from xcron.server.core.plans import DAY, MAX_HOPS, US, Plan, ScheduleValueError, cron_plan, plan_of
from xcron.server.core.zones import (
    first_transition,
    last_transition,
    resolve_zone,
    transitions,
    utc_offset,
    zone_named,
)

__all__ = [
    "ScheduleValueError",
    "fire_times",
    "next_fire_time",
    "occurrences_between",
    "resolve_zone",
    "validate_schedule",
]

MAX_INTERVAL = timedelta(seconds=2**31 - 1)
"""The longest interval: SanteDB's xcron.xml keeps it in a 32-bit number of seconds."""
MAX_MISFIRE_GRACE = timedelta(seconds=10**9)
"""The longest misfire grace period (about 31 years); xc:misfireGrace is read back up to this."""


# --------------------------------------------------------------------------------------------------
# Searches over instants (naive UTC datetimes)


def _next(plan: Plan, zone: ZoneInfo, u: datetime) -> datetime | None:
    """The first occurrence at or after instant u, ignoring start, end and one_shot."""
    for _ in range(MAX_HOPS):
        off = utc_offset(zone, u)
        wall = u + off
        last = last_transition(zone, u - DAY, u)
        if last is not None:
            floor = last.at + plan.segment_floor(last)
            if last.back and wall < floor:
                wall = floor  # skip the second pass of the repeated wall times
            elif last.forward and u == last.at:
                wall = min(wall, floor)  # the gap's wall times fire at u itself
        found = plan.wall_next(wall)
        if found is None:
            return None
        cand = found - off
        if last is not None and last.forward and cand < last.at:
            cand = last.at
        hop = first_transition(zone, u, cand)
        if hop is None:
            return cand
        u = hop.at  # the match lies beyond the segment: redo the search from the next one
    return None


def _prev(plan: Plan, zone: ZoneInfo, u: datetime) -> datetime | None:
    """The last occurrence at or before instant u, ignoring start, end and one_shot."""
    for _ in range(MAX_HOPS):
        off = utc_offset(zone, u)
        found = plan.wall_prev(u + off)
        if found is None:
            return None
        cand = found - off
        last = last_transition(zone, cand - DAY, u)
        if last is None:
            return cand
        if found >= last.at + plan.segment_floor(last):
            return max(cand, last.at)
        u = last.at - US  # the match lies before the segment: redo the search from the previous one
    return None


def _count(plan: Plan, zone: ZoneInfo, a: datetime, b: datetime) -> int:
    """Occurrences in [a, b], ignoring start, end and one_shot; one segment at a time."""
    if b < a:
        return 0
    total = 0
    x = a
    last = last_transition(zone, a - DAY, a)
    for hop in [*transitions(zone, a, b), None]:
        y = hop.at if hop is not None else b + US
        off = utc_offset(zone, x)
        lo, hi = x + off, y + off
        if last is not None:
            floor = last.at + plan.segment_floor(last)
            if last.back and lo < floor:
                lo = floor
            elif last.forward and x == last.at and floor < lo:
                # The gap's wall times and the first one after it all fire once, at x.
                total += min(1, plan.count_walls(floor, lo + US))
                lo += US
        total += plan.count_walls(lo, hi)
        if hop is not None:
            x, last = hop.at, hop
    return total


# --------------------------------------------------------------------------------------------------
# Public API


def validate_schedule(schedule: Schedule) -> None:
    """Refuses what would never fire sensibly, naming the proto field for a BadRequest."""
    spec = schedule.spec
    if isinstance(spec, IntervalSpec):
        if spec.every < timedelta(seconds=1):
            raise ScheduleValueError("interval.interval", "interval must be at least 1 second")
        if spec.every % timedelta(seconds=1):
            raise ScheduleValueError("interval.interval", "interval must be a whole number of seconds")
        if spec.every > MAX_INTERVAL:
            raise ScheduleValueError(
                "interval.interval",
                f"interval must be at most {MAX_INTERVAL // timedelta(seconds=1):,} seconds (about 68 years; "
                f"SanteDB keeps it as a 32-bit number), got {spec.every // timedelta(seconds=1):,}",
            )
    elif isinstance(spec, CalendarSpec):
        bad = sorted(d for d in spec.days if not 1 <= d <= 7)
        if bad:
            raise ScheduleValueError("calendar.days", f"days must be ISO weekdays 1 (Monday) … 7 (Sunday), got {bad}")
    else:
        try:
            plan = cron_plan(spec.expression)
        except ValueError as exc:
            raise ScheduleValueError("cron.expression", str(exc)) from None
        if plan.days.next_day(date(2000, 1, 1)) is None:
            raise ScheduleValueError("cron.expression", f"cron expression {spec.expression!r} matches no date")
    if schedule.end is not None and schedule.end <= schedule.start:
        raise ScheduleValueError("end_time", "end_time must be after start_time")
    if schedule.time_zone:
        try:
            zone_named(schedule.time_zone)
        except ValueError as exc:
            raise ScheduleValueError("time_zone", str(exc)) from None
    if schedule.max_catchup_runs < 0:
        raise ScheduleValueError("max_catchup_runs", "max_catchup_runs must not be negative")
    if schedule.misfire_grace is not None:
        grace = schedule.misfire_grace
        if grace < timedelta(0):
            raise ScheduleValueError("misfire_grace_period", "misfire_grace_period must not be negative")
        if grace % timedelta(seconds=1):
            raise ScheduleValueError("misfire_grace_period", "misfire_grace_period must be a whole number of seconds")
        if grace > MAX_MISFIRE_GRACE:
            raise ScheduleValueError(
                "misfire_grace_period",
                f"misfire_grace_period must be at most {MAX_MISFIRE_GRACE // timedelta(seconds=1):,} seconds, "
                f"got {grace // timedelta(seconds=1):,}",
            )


def _naive_utc(dt: datetime) -> datetime:
    return dt.astimezone(UTC).replace(tzinfo=None)


def _aware(u: datetime) -> datetime:
    return u.replace(tzinfo=UTC)


def _interval_range(schedule: Schedule, every: timedelta, lo: datetime, hi: datetime) -> tuple[int, int]:
    """The first and last k with start + k * every in [lo, hi] and before end; last < first if none."""
    start = schedule.start
    if schedule.end is not None:
        hi = min(hi, schedule.end)
    first = 0 if lo <= start else -((start - lo) // every)
    last = (hi - start) // every if hi >= start else -1
    return first, last


def next_fire_time(schedule: Schedule, after: datetime, *, default_zone: str) -> datetime | None:
    """The first occurrence strictly after `after` (aware), within start … end; None when none is left."""
    spec = schedule.spec
    try:
        if isinstance(spec, IntervalSpec):
            k = 0 if after < schedule.start else (after - schedule.start) // spec.every + 1
            t = schedule.start + k * spec.every
            return None if schedule.end is not None and t > schedule.end else t.astimezone(UTC)
        plan = plan_of(spec)
        zone = resolve_zone(schedule.time_zone, default_zone)
        start = _naive_utc(schedule.start)
        lo = max(_naive_utc(after) + US, start)
        if plan.one_shot:
            found = _next(plan, zone, start)
            if found is not None and found < lo:
                return None
        else:
            found = _next(plan, zone, lo)
    except OverflowError:
        return None
    if found is None or (schedule.end is not None and found > _naive_utc(schedule.end)):
        return None
    return _aware(found)


def fire_times(schedule: Schedule, after: datetime, count: int, *, default_zone: str) -> list[datetime]:
    """The next `count` occurrences strictly after `after` (fewer when the schedule ends)."""
    result: list[datetime] = []
    t = after
    while len(result) < count:
        nxt = next_fire_time(schedule, t, default_zone=default_zone)
        if nxt is None:
            break
        result.append(nxt)
        t = nxt
    return result


def occurrences_between(
    schedule: Schedule, after: datetime, until: datetime, *, default_zone: str, limit: int
) -> tuple[list[datetime], int]:
    """The last `limit` occurrences with after < t <= until, oldest first, and how many there are in all.

    Counting is arithmetic (per offset segment for calendar and cron), so a per-second schedule
    missed for a year costs no more than a daily one.
    """
    limit = max(0, limit)
    spec = schedule.spec
    if isinstance(spec, IntervalSpec):
        first, last = _interval_range(schedule, spec.every, after + US, until)
        total = max(0, last - first + 1)
        ks = range(max(first, last - limit + 1), last + 1)
        return [(schedule.start + k * spec.every).astimezone(UTC) for k in ks], total
    plan = plan_of(spec)
    zone = resolve_zone(schedule.time_zone, default_zone)
    try:
        start = _naive_utc(schedule.start)
        lo = max(_naive_utc(after) + US, start)
        hi = _naive_utc(until)
        if schedule.end is not None:
            hi = min(hi, _naive_utc(schedule.end))
        if hi < lo:
            return [], 0
        if plan.one_shot:
            found = _next(plan, zone, start)
            if found is None or not lo <= found <= hi:
                return [], 0
            return ([_aware(found)] if limit else []), 1
        total = _count(plan, zone, lo, hi)
        recent: list[datetime] = []
        u: datetime | None = hi
        while u is not None and len(recent) < min(limit, total):
            u = _prev(plan, zone, u)
            if u is None or u < lo:
                break
            recent.append(_aware(u))
            u -= US
    except OverflowError:
        return [], 0
    recent.reverse()
    return recent, total
