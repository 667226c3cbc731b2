"""Calendar and cron specs compiled into plans: which days and which times of day match. croniter only
validates and expands the fields (see triggers.py for the rules)."""

from __future__ import annotations

import calendar
import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache

from croniter import CroniterError, croniter

from xcron.server.core.model import CalendarSpec, CronSpec
from xcron.server.core.zones import Transition

US = timedelta(microseconds=1)
DAY = timedelta(days=1)
_US_PER_DAY = 86_400_000_000
# Searches give up after this long without a matching day (valid expressions repeat within 8 years).
_HORIZON_MONTHS = 100 * 12
# Bounds segment hops in one search; each hop crosses one offset transition (about two a year).
MAX_HOPS = 10_000
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
            return d + DAY if d < date.max else None
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
            return d - DAY if d > date.min else None
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
class Plan:
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
        total = self.days.count_days(d0 + DAY, d1) * self.times.per_day
        if self.days.matches(d0):
            total += self.times.per_day - before_lo
        if self.days.matches(d1):
            total += before_hi
        return total

    def segment_floor(self, t: Transition) -> timedelta:
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
def cron_plan(expression: str) -> Plan:
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
    return Plan(days, times, both_passes=not fixed, shift_gap=fixed)


@lru_cache(maxsize=4096)
def _calendar_plan(spec: CalendarSpec) -> Plan:
    t = spec.time_of_day
    times = _Times((t.hour,), (t.minute,), (t.second,), t.microsecond)
    if not spec.days:
        return Plan(_DayRule(), times, both_passes=True, shift_gap=True, one_shot=True)
    days = _DayRule() if len(spec.days) == 7 else _DayRule(dows=frozenset(spec.days))
    return Plan(days, times, both_passes=False, shift_gap=True)


def plan_of(spec: CalendarSpec | CronSpec) -> Plan:
    if isinstance(spec, CronSpec):
        return cron_plan(spec.expression)
    return _calendar_plan(spec)
