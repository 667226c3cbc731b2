"""Time zones for schedules: IANA names, and the UTC-offset transitions the searches step over."""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import lru_cache
from typing import NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

_DAY = timedelta(days=1)
_EPOCH = datetime(1970, 1, 1)


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
def zone_named(name: str) -> ZoneInfo:
    if not is_iana_zone(name):
        raise ValueError(f"unknown time zone {name!r}: use an IANA name such as 'Europe/Paris' or 'UTC'")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {name!r}: use an IANA name such as 'Europe/Paris' or 'UTC'") from None


def resolve_zone(name: str, default_zone: str) -> ZoneInfo:
    """The schedule's zone; "" means the server's. Unknown names raise ValueError naming the zone."""
    return zone_named(name or default_zone)


class Transition(NamedTuple):
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


def utc_offset(zone: ZoneInfo, u: datetime) -> timedelta:
    offset = zone.fromutc(u.replace(tzinfo=zone)).utcoffset()
    assert offset is not None
    return offset


@lru_cache(maxsize=4096)
def _year_transitions(zone: ZoneInfo, year: int) -> tuple[Transition, ...]:
    """Offset changes with `at` in the UTC year, found by probing daily and bisecting to the second.

    zoneinfo does not expose its transition table; probing is cheap and cached. Two changes within
    one day that cancel out would be missed; tzdata has none that matter for scheduling.
    """
    first = datetime(year, 1, 1)
    last = datetime(year + 1, 1, 1) if year < 9999 else datetime(9999, 12, 31)
    found: list[Transition] = []
    if year > 1:
        prev, prev_off = first - timedelta(seconds=1), utc_offset(zone, first - timedelta(seconds=1))
    else:
        prev, prev_off = first, utc_offset(zone, first)
    probe = first
    while True:
        off = utc_offset(zone, probe)
        if off != prev_off:
            lo, hi = int((prev - _EPOCH).total_seconds()), int((probe - _EPOCH).total_seconds())
            while hi - lo > 1:  # invariant: offset at lo is prev_off, at hi is off
                mid = (lo + hi) // 2
                if utc_offset(zone, _EPOCH + timedelta(seconds=mid)) == off:
                    hi = mid
                else:
                    lo = mid
            at = _EPOCH + timedelta(seconds=hi)
            if at.year == year:
                found.append(Transition(at, prev_off, off))
        if probe >= last:
            return tuple(found)
        prev, prev_off = probe, off
        probe = min(probe + _DAY, last)


def transitions(zone: ZoneInfo, a: datetime, b: datetime) -> list[Transition]:
    """The transitions with a < at <= b (naive UTC)."""
    result: list[Transition] = []
    for year in range(a.year, b.year + 1):
        result.extend(t for t in _year_transitions(zone, year) if a < t.at <= b)
    return result


def first_transition(zone: ZoneInfo, a: datetime, b: datetime) -> Transition | None:
    for year in range(a.year, b.year + 1):
        for t in _year_transitions(zone, year):
            if a < t.at <= b:
                return t
    return None


def last_transition(zone: ZoneInfo, a: datetime, b: datetime) -> Transition | None:
    found = transitions(zone, a, b)
    return found[-1] if found else None
