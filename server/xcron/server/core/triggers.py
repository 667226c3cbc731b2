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

import calendar
import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from croniter import CroniterError, croniter

from xcron.server.core.model import CalendarSpec, CronSpec, IntervalSpec, Schedule

__all__ = [
    "ScheduleValueError",
    "fire_times",
    "next_fire_time",
    "occurrences_between",
    "resolve_zone",
    "validate_schedule",
]

_US = timedelta(microseconds=1)
_DAY = timedelta(days=1)
_US_PER_DAY = 86_400_000_000
# Searches give up after this long without a matching day (valid expressions repeat within 8 years).
_HORIZON_MONTHS = 100 * 12
# Bounds segment hops in one search; each hop crosses one offset transition (about two a year).
_MAX_HOPS = 10_000
_EPOCH = datetime(1970, 1, 1)

_CRON_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# croniter's random (R) and hashed (H) items; month and day names never have a lone R or H.
_RANDOM_OR_HASHED = re.compile(r"(?<![a-z])[hr](?![a-z])", re.IGNORECASE)
_NOT_FIXED = re.compile(r"[*/?-]")


class ScheduleValueError(ValueError):
    """A schedule the service refuses; `field` is the proto field path, for a BadRequest violation."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


# --------------------------------------------------------------------------------------------------
# Zones


MAX_INTERVAL = timedelta(seconds=2**31 - 1)
"""The longest interval: SanteDB's xcron.xml keeps it in a 32-bit number of seconds."""
MAX_MISFIRE_GRACE = timedelta(seconds=10**9)
"""The longest misfire grace period (about 31 years); xc:misfireGrace is read back up to this."""
_NOT_IANA = frozenset({"localtime", "posixrules", "Factory"})


@lru_cache(maxsize=1)
def _iana_zone_names() -> frozenset[str]:
    return frozenset(available_timezones()) - _NOT_IANA


def is_iana_zone(name: str) -> bool:
    """Whether `name` is an IANA time zone (or link) name such as 'Europe/Paris' or 'UTC'; not a
    file of the zone folder that is no zone ('localtime', 'posixrules', 'Factory', 'posix/…')."""
    if name in _NOT_IANA or name.startswith(("posix/", "right/")):
        return False
    return name in _iana_zone_names()


@lru_cache(maxsize=512)
def _zone(name: str) -> ZoneInfo:
    if not is_iana_zone(name):
        raise ValueError(f"unknown time zone {name!r}: use an IANA name such as 'Europe/Paris' or 'UTC'")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {name!r}: use an IANA name such as 'Europe/Paris' or 'UTC'") from None


def resolve_zone(name: str, default_zone: str) -> ZoneInfo:
    """The schedule's zone; "" means the server's. Unknown names raise ValueError naming the zone."""
    return _zone(name or default_zone)


class _Transition(NamedTuple):
    """A change of UTC offset: from `at` (naive UTC) on, the offset is `after` instead of `before`."""

    at: datetime
    before: timedelta
    after: timedelta

    @property
    def forward(self) -> bool:
        """Spring forward: the wall times [at + before, at + after) do not exist."""
        return self.after > self.before

    @property
    def back(self) -> bool:
        """Fall back: the wall times [at + after, at + before) happen twice."""
        return self.after < self.before


def _offset(zone: ZoneInfo, u: datetime) -> timedelta:
    offset = zone.fromutc(u.replace(tzinfo=zone)).utcoffset()
    assert offset is not None
    return offset


@lru_cache(maxsize=4096)
def _year_transitions(zone: ZoneInfo, year: int) -> tuple[_Transition, ...]:
    """Offset changes with `at` in the UTC year, found by probing daily and bisecting to the second.

    zoneinfo does not expose its transition table; probing is cheap and cached. Two changes within
    one day that cancel out would be missed; tzdata has none that matter for scheduling.
    """
    first = datetime(year, 1, 1)
    last = datetime(year + 1, 1, 1) if year < 9999 else datetime(9999, 12, 31)
    found: list[_Transition] = []
    if year > 1:
        prev, prev_off = first - timedelta(seconds=1), _offset(zone, first - timedelta(seconds=1))
    else:
        prev, prev_off = first, _offset(zone, first)
    probe = first
    while True:
        off = _offset(zone, probe)
        if off != prev_off:
            lo, hi = int((prev - _EPOCH).total_seconds()), int((probe - _EPOCH).total_seconds())
            while hi - lo > 1:  # invariant: offset at lo is prev_off, at hi is off
                mid = (lo + hi) // 2
                if _offset(zone, _EPOCH + timedelta(seconds=mid)) == off:
                    hi = mid
                else:
                    lo = mid
            at = _EPOCH + timedelta(seconds=hi)
            if at.year == year:
                found.append(_Transition(at, prev_off, off))
        if probe >= last:
            return tuple(found)
        prev, prev_off = probe, off
        probe = min(probe + _DAY, last)


def _transitions(zone: ZoneInfo, a: datetime, b: datetime) -> list[_Transition]:
    """The transitions with a < at <= b (naive UTC)."""
    result: list[_Transition] = []
    for year in range(a.year, b.year + 1):
        result.extend(t for t in _year_transitions(zone, year) if a < t.at <= b)
    return result


def _first_transition(zone: ZoneInfo, a: datetime, b: datetime) -> _Transition | None:
    for year in range(a.year, b.year + 1):
        for t in _year_transitions(zone, year):
            if a < t.at <= b:
                return t
    return None


def _last_transition(zone: ZoneInfo, a: datetime, b: datetime) -> _Transition | None:
    found = _transitions(zone, a, b)
    return found[-1] if found else None


# --------------------------------------------------------------------------------------------------
# Which days match


@dataclass(frozen=True)
class _DayRule:
    """The day part of a schedule. None means any; `croniter_expr` handles L, W and # via croniter."""

    months: frozenset[int] | None = None
    doms: frozenset[int] | None = None
    dows: frozenset[int] | None = None  # ISO weekdays
    day_or: bool = False  # cron: restricted day-of-month and day-of-week are a union
    croniter_expr: str | None = None

    @property
    def every_day(self) -> bool:
        return self.months is None and self.doms is None and self.dows is None and not self.croniter_expr

    def matches(self, d: date) -> bool:
        return self.every_day or d.day in _month_days(self, d.year, d.month)

    def next_day(self, d: date) -> date | None:
        """The first matching day after `d`."""
        if self.every_day:
            return d + _DAY if d < date.max else None
        if self.croniter_expr is not None:
            return _croniter_day(self.croniter_expr, d, forward=True)
        days = _month_days(self, d.year, d.month)
        i = bisect_right(days, d.day)
        if i < len(days):
            return d.replace(day=days[i])
        y, m = d.year, d.month
        for _ in range(_HORIZON_MONTHS):
            y, m = (y, m + 1) if m < 12 else (y + 1, 1)
            if y > 9999:
                return None
            days = _month_days(self, y, m)
            if days:
                return date(y, m, days[0])
        return None

    def prev_day(self, d: date) -> date | None:
        """The last matching day before `d`."""
        if self.every_day:
            return d - _DAY if d > date.min else None
        if self.croniter_expr is not None:
            return _croniter_day(self.croniter_expr, d, forward=False)
        days = _month_days(self, d.year, d.month)
        i = bisect_left(days, d.day)
        if i > 0:
            return d.replace(day=days[i - 1])
        y, m = d.year, d.month
        for _ in range(_HORIZON_MONTHS):
            y, m = (y, m - 1) if m > 1 else (y - 1, 12)
            if y < 1:
                return None
            days = _month_days(self, y, m)
            if days:
                return date(y, m, days[-1])
        return None

    def count_days(self, d0: date, d1: date) -> int:
        """Matching days in [d0, d1)."""
        if d1 <= d0:
            return 0
        if self.every_day:
            return (d1 - d0).days
        total = 0
        y, m = d0.year, d0.month
        while (y, m) <= (d1.year, d1.month):
            days = _month_days(self, y, m)
            lo = bisect_left(days, d0.day) if (y, m) == (d0.year, d0.month) else 0
            hi = bisect_left(days, d1.day) if (y, m) == (d1.year, d1.month) else len(days)
            total += max(0, hi - lo)
            y, m = (y, m + 1) if m < 12 else (y + 1, 1)
        return total


@lru_cache(maxsize=16384)
def _croniter_day(expr: str, d: date, *, forward: bool) -> date | None:
    """The next (previous) day croniter matches; one call, where scanning months could take seconds."""
    it = croniter(expr, datetime.combine(d, time()))
    try:
        found: datetime = it.get_next(datetime) if forward else it.get_prev(datetime)
    except (CroniterError, OverflowError, ValueError):
        return None
    return found.date()


@lru_cache(maxsize=16384)
def _month_days(rule: _DayRule, year: int, month: int) -> tuple[int, ...]:
    """The matching days of one month, sorted."""
    if rule.croniter_expr is not None:
        days: list[int] = []
        try:
            it = croniter(rule.croniter_expr, datetime(year, month, 1) - timedelta(seconds=1))
            while True:
                nxt: datetime = it.get_next(datetime)
                if (nxt.year, nxt.month) != (year, month):
                    break
                days.append(nxt.day)
        except (CroniterError, OverflowError, ValueError):
            pass
        return tuple(days)
    if rule.months is not None and month not in rule.months:
        return ()
    first_iso, ndays = calendar.monthrange(year, month)  # Monday = 0
    result = []
    for day in range(1, ndays + 1):
        dom_ok = rule.doms is None or day in rule.doms
        dow_ok = rule.dows is None or (first_iso + day - 1) % 7 + 1 in rule.dows
        if (dom_ok or dow_ok) if rule.day_or else (dom_ok and dow_ok):
            result.append(day)
    return tuple(result)


# --------------------------------------------------------------------------------------------------
# Which times of day match


@dataclass(frozen=True)
class _Times:
    """Times of day: every (hour, minute, second) combination, plus `micro` microseconds."""

    hours: tuple[int, ...]
    minutes: tuple[int, ...]
    seconds: tuple[int, ...]
    micro: int = 0

    @property
    def per_day(self) -> int:
        return len(self.hours) * len(self.minutes) * len(self.seconds)

    def count_before(self, us_of_day: int) -> int:
        """How many of the day's times are earlier than `us_of_day` (0 … 86400 s in microseconds)."""
        bound = -((self.micro - us_of_day) // 1_000_000)  # times with whole second < bound
        if bound <= 0:
            return 0
        if bound >= 86_400:
            return self.per_day
        h, rest = divmod(bound, 3600)
        m, s = divmod(rest, 60)
        n_m, n_s = len(self.minutes), len(self.seconds)
        i = bisect_left(self.hours, h)
        count = i * n_m * n_s
        if i < len(self.hours) and self.hours[i] == h:
            j = bisect_left(self.minutes, m)
            count += j * n_s
            if j < n_m and self.minutes[j] == m:
                count += bisect_left(self.seconds, s)
        return count

    def nth(self, i: int) -> time:
        n_m, n_s = len(self.minutes), len(self.seconds)
        return time(self.hours[i // (n_m * n_s)], self.minutes[(i // n_s) % n_m], self.seconds[i % n_s], self.micro)


def _us_of_day(w: datetime) -> int:
    return ((w.hour * 60 + w.minute) * 60 + w.second) * 1_000_000 + w.microsecond


@dataclass(frozen=True)
class _Plan:
    """A calendar or cron spec compiled for the searches below.

    `both_passes`: a repeated wall time fires in both passes (else the first only). `shift_gap`: a
    skipped wall time fires at the end of the gap (else not at all). `one_shot`: only the first counts.
    """

    days: _DayRule
    times: _Times
    both_passes: bool
    shift_gap: bool
    one_shot: bool = False

    def wall_next(self, w: datetime) -> datetime | None:
        """The first matching wall time at or after `w`."""
        d = w.date()
        if self.days.matches(d):
            i = self.times.count_before(_us_of_day(w))
            if i < self.times.per_day:
                return datetime.combine(d, self.times.nth(i))
        nd = self.days.next_day(d)
        return None if nd is None else datetime.combine(nd, self.times.nth(0))

    def wall_prev(self, w: datetime) -> datetime | None:
        """The last matching wall time at or before `w`."""
        d = w.date()
        if self.days.matches(d):
            i = self.times.count_before(_us_of_day(w) + 1)
            if i > 0:
                return datetime.combine(d, self.times.nth(i - 1))
        pd = self.days.prev_day(d)
        return None if pd is None else datetime.combine(pd, self.times.nth(self.times.per_day - 1))

    def count_walls(self, lo: datetime, hi: datetime) -> int:
        """Matching wall times in [lo, hi)."""
        if hi <= lo:
            return 0
        d0, d1 = lo.date(), hi.date()
        before_hi = self.times.count_before(_us_of_day(hi))
        before_lo = self.times.count_before(_us_of_day(lo))
        if d0 == d1:
            return before_hi - before_lo if self.days.matches(d0) else 0
        total = self.days.count_days(d0 + _DAY, d1) * self.times.per_day
        if self.days.matches(d0):
            total += self.times.per_day - before_lo
        if self.days.matches(d1):
            total += before_hi
        return total

    def segment_floor(self, t: _Transition) -> timedelta:
        """Where, after transition t, this plan's wall times begin (relative to t.at)."""
        if t.forward and self.shift_gap:
            return t.before  # the gap's wall times are kept (they map to t.at)
        if t.back and not self.both_passes:
            return t.before  # the repeated wall times were already used by the first pass
        return t.after


# --------------------------------------------------------------------------------------------------
# Compiling specs


_FIELD_ORDER = (
    "5 fields (minute hour day month weekday) or 6 with the seconds last (minute hour day month weekday second)"
)
_WEEKDAY_SYNTAX = re.compile(r"[a-z#?]", re.IGNORECASE)  # names (MON), L, #, ?: never in a seconds field
_SMALL_UNSTEPPED = re.compile(r"[0-7](?:[-,][0-7])+")  # 1-5, 0,6: a weekday range, odd as seconds


def _quartz_order(fields: list[str]) -> str | None:
    """Why a six-field expression reads as Quartz/Cronos order (seconds first), or None."""
    minute, seconds = fields[0], fields[5]
    if "?" in fields:
        return "'?' is Quartz syntax"
    if _WEEKDAY_SYNTAX.search(seconds):
        return f"the last field {seconds!r} is a weekday"
    if seconds == "*" and minute != "*":
        return f"read seconds last, it fires every second of minute {minute!r} (write the seconds as 0-59 for that)"
    if _SMALL_UNSTEPPED.fullmatch(seconds) and fields[4] == "*":
        return f"the last field {seconds!r} looks like a weekday (for those seconds, write {seconds + '/1'!r})"
    return None


def _seconds_last(fields: list[str]) -> str:
    """A seconds-first (Quartz/Cronos) expression in xcron's order: the seconds moved last, '?' as '*'."""
    return " ".join(f.replace("?", "*") for f in [*fields[1:6], fields[0]])


def _weekday_note(fields: list[str]) -> str:
    if not re.search(r"\d", fields[5]):
        return ""
    return " (weekdays: 0 or 7 = Sunday; Quartz numbers them 1 = Sunday, so names like MON-FRI are safest)"


def _parse_cron(expression: str) -> tuple[list[str], croniter]:
    """The fields (aliases expanded) and croniter's parse; ValueError with a user-facing message."""
    text = " ".join(expression.split())
    text = _CRON_ALIASES.get(text.lower(), text)
    fields = text.split(" ") if text else []
    if len(fields) == 7:
        year = "" if fields[6] in ("*", "?") else ", without the year (years are not supported)"
        raise ValueError(
            f"cron expression {expression!r} has 7 fields, as Quartz writes them (seconds first, year last); "
            f"xcron takes {_FIELD_ORDER}. For this schedule write {_seconds_last(fields)!r}{year}"
            f"{_weekday_note(fields)}"
        )
    if len(fields) not in (5, 6):
        raise ValueError(f"cron expression {expression!r} has {len(fields)} fields; expected {_FIELD_ORDER}")
    if len(fields) == 6 and (why := _quartz_order(fields)) is not None:
        raise ValueError(
            f"cron expression {expression!r} is ambiguous: {why}. xcron takes {_FIELD_ORDER}; Quartz and "
            f"Cronos put the seconds first, and for that reading write {_seconds_last(fields)!r}{_weekday_note(fields)}"
        )
    if any(_RANDOM_OR_HASHED.search(f) for f in fields):
        raise ValueError(f"cron expression {expression!r}: random (R) and hashed (H) values are not supported")
    if not croniter.is_valid(text):
        raise ValueError(f"cron expression {expression!r} is not valid")
    try:
        return fields, croniter(text)
    except CroniterError as exc:
        raise ValueError(f"cron expression {expression!r} is not valid: {exc}") from None


def _values(expanded: list[int | str], full: range) -> tuple[int, ...]:
    if expanded == ["*"]:
        return tuple(full)
    return tuple(sorted({int(v) for v in expanded}))


def _restricted(expanded: list[int | str], convert: Callable[[int], int]) -> frozenset[int] | None:
    if expanded == ["*"]:
        return None
    return frozenset(convert(int(v)) for v in expanded)


@lru_cache(maxsize=4096)
def _cron_plan(expression: str) -> _Plan:
    fields, parsed = _parse_cron(expression)
    expanded: list[list[int | str]] = parsed.expanded
    seconds = _values(expanded[5], range(60)) if len(fields) == 6 else (0,)
    times = _Times(_values(expanded[1], range(24)), _values(expanded[0], range(60)), seconds)
    dom, dow = expanded[2], expanded[4]
    special = (
        "l" in dom
        or "l" in dow
        or bool(getattr(parsed, "nth_weekday_of_month", None))
        or bool(getattr(parsed, "nearest_weekday", None))
    )
    if special:
        days = _DayRule(croniter_expr=f"0 0 {fields[2]} {fields[3]} {fields[4]}")
    else:
        doms = _restricted(dom, int)
        dows = _restricted(dow, lambda v: 7 if v == 0 else v)
        days = _DayRule(
            months=_restricted(expanded[3], int),
            doms=doms,
            dows=dows,
            day_or=doms is not None and dows is not None,
        )
    time_fields = fields[:2] + fields[5:]
    fixed = not any(_NOT_FIXED.search(f) for f in time_fields)
    return _Plan(days, times, both_passes=not fixed, shift_gap=fixed)


@lru_cache(maxsize=4096)
def _calendar_plan(spec: CalendarSpec) -> _Plan:
    t = spec.time_of_day
    times = _Times((t.hour,), (t.minute,), (t.second,), t.microsecond)
    if not spec.days:
        return _Plan(_DayRule(), times, both_passes=True, shift_gap=True, one_shot=True)
    days = _DayRule() if len(spec.days) == 7 else _DayRule(dows=frozenset(spec.days))
    return _Plan(days, times, both_passes=False, shift_gap=True)


def _plan(spec: CalendarSpec | CronSpec) -> _Plan:
    if isinstance(spec, CronSpec):
        return _cron_plan(spec.expression)
    return _calendar_plan(spec)


# --------------------------------------------------------------------------------------------------
# Searches over instants (naive UTC datetimes)


def _next(plan: _Plan, zone: ZoneInfo, u: datetime) -> datetime | None:
    """The first occurrence at or after instant u, ignoring start, end and one_shot."""
    for _ in range(_MAX_HOPS):
        off = _offset(zone, u)
        wall = u + off
        last = _last_transition(zone, u - _DAY, u)
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
        hop = _first_transition(zone, u, cand)
        if hop is None:
            return cand
        u = hop.at  # the match lies beyond the segment: redo the search from the next one
    return None


def _prev(plan: _Plan, zone: ZoneInfo, u: datetime) -> datetime | None:
    """The last occurrence at or before instant u, ignoring start, end and one_shot."""
    for _ in range(_MAX_HOPS):
        off = _offset(zone, u)
        found = plan.wall_prev(u + off)
        if found is None:
            return None
        cand = found - off
        last = _last_transition(zone, cand - _DAY, u)
        if last is None:
            return cand
        if found >= last.at + plan.segment_floor(last):
            return max(cand, last.at)
        u = last.at - _US  # the match lies before the segment: redo the search from the previous one
    return None


def _count(plan: _Plan, zone: ZoneInfo, a: datetime, b: datetime) -> int:
    """Occurrences in [a, b], ignoring start, end and one_shot; one segment at a time."""
    if b < a:
        return 0
    total = 0
    x = a
    last = _last_transition(zone, a - _DAY, a)
    for hop in [*_transitions(zone, a, b), None]:
        y = hop.at if hop is not None else b + _US
        off = _offset(zone, x)
        lo, hi = x + off, y + off
        if last is not None:
            floor = last.at + plan.segment_floor(last)
            if last.back and lo < floor:
                lo = floor
            elif last.forward and x == last.at and floor < lo:
                # The gap's wall times and the first one after it all fire once, at x.
                total += min(1, plan.count_walls(floor, lo + _US))
                lo += _US
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
            plan = _cron_plan(spec.expression)
        except ValueError as exc:
            raise ScheduleValueError("cron.expression", str(exc)) from None
        if plan.days.next_day(date(2000, 1, 1)) is None:
            raise ScheduleValueError("cron.expression", f"cron expression {spec.expression!r} matches no date")
    if schedule.end is not None and schedule.end <= schedule.start:
        raise ScheduleValueError("end_time", "end_time must be after start_time")
    if schedule.time_zone:
        try:
            _zone(schedule.time_zone)
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
        plan = _plan(spec)
        zone = resolve_zone(schedule.time_zone, default_zone)
        start = _naive_utc(schedule.start)
        lo = max(_naive_utc(after) + _US, start)
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
        first, last = _interval_range(schedule, spec.every, after + _US, until)
        total = max(0, last - first + 1)
        ks = range(max(first, last - limit + 1), last + 1)
        return [(schedule.start + k * spec.every).astimezone(UTC) for k in ks], total
    plan = _plan(spec)
    zone = resolve_zone(schedule.time_zone, default_zone)
    try:
        start = _naive_utc(schedule.start)
        lo = max(_naive_utc(after) + _US, start)
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
            u -= _US
    except OverflowError:
        return [], 0
    recent.reverse()
    return recent, total
