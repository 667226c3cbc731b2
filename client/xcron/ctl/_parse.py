"""Text from the command line turned into the client's values: durations, days, times and typed parameters.

Everything here is pure (no I/O, no gRPC) so that a bad value is reported, with exit code 2, before any call
that would change something on the server is sent.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from datetime import datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from xcron.client import DayOfWeek, ParameterDeclaration, ParameterType, ParameterValue

__all__ = [
    "UsageError",
    "parse_assignments",
    "parse_bool",
    "parse_days",
    "parse_duration",
    "parse_parameters",
    "parse_time_of_day",
    "parse_timestamp",
    "parse_value",
    "parse_zone",
]


class UsageError(ValueError):
    """A bad command line: reported as ``xcronctl: <message>`` with exit code 2, before anything is sent."""


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|d|h|m|s)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``2h``, ``1h30m``, ``1d`` or a plain number of seconds (``90``, ``1.5``)."""
    value = text.strip().lower()
    if not value:
        raise ValueError("empty duration")
    try:
        seconds = float(value)
    except ValueError:
        pos = 0
        seconds = 0.0
        for match in _DURATION_PART.finditer(value):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
            pos = match.end()
        if pos != len(value) or pos == 0:
            raise ValueError(f"invalid duration {text!r} (use e.g. 90s, 15m, 2h, 1h30m or seconds)") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"invalid duration {text!r}: must be a finite, non-negative number of seconds")
    return timedelta(seconds=seconds)


_TRUE = frozenset({"true", "yes", "y", "on", "1"})
_FALSE = frozenset({"false", "no", "n", "off", "0"})


def parse_bool(text: str) -> bool:
    """true/false, yes/no, on/off or 1/0 (any case)."""
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"invalid bool {text!r} (use true/false, yes/no or 1/0)")


def parse_timestamp(text: str, default_zone: tzinfo | None = None) -> datetime:
    """An ISO-8601 time; it needs an offset (``+02:00`` or ``Z``) unless ``default_zone`` says where it is."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"invalid timestamp {text!r} (use ISO-8601, e.g. 2026-01-01T09:00:00+01:00)") from None
    if value.utcoffset() is None:
        if default_zone is None:
            raise ValueError(f"timestamp {text!r} needs an offset, e.g. {text.strip()}+00:00")
        value = value.replace(tzinfo=default_zone)
    return value


def parse_zone(name: str) -> ZoneInfo:
    """An IANA zone, checked locally so that a typo is a usage error rather than a server round trip."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (use an IANA name such as Europe/Paris)") from None


def _int64(text: str) -> int:
    try:
        value = int(text.strip(), 10)
    except ValueError:
        raise ValueError(f"invalid int {text!r}") from None
    if not -(2**63) <= value < 2**63:
        raise ValueError(f"int {text!r} does not fit in 64 bits")
    return value


def _double(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError(f"invalid double {text!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"double {text!r} must be finite")
    return value


def parse_value(kind: ParameterType, text: str) -> ParameterValue:
    """``text`` converted to the Python value the client sends for a parameter declared as ``kind``."""
    if kind is ParameterType.STRING:
        return text
    if kind is ParameterType.INT:
        return _int64(text)
    if kind is ParameterType.BOOL:
        return parse_bool(text)
    if kind is ParameterType.DOUBLE:
        return _double(text)
    if kind is ParameterType.TIMESTAMP:
        return parse_timestamp(text)
    if kind is ParameterType.DURATION:
        return parse_duration(text)
    raise ValueError(f"the server declares an unknown type for it ({kind.name})")


def parse_assignments(items: Iterable[str], option: str = "--param") -> list[tuple[str, str]]:
    """``name=value`` pairs, in order; the value may itself contain ``=``."""
    pairs: list[tuple[str, str]] = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"{option} {item!r}: expected NAME=VALUE")
        pairs.append((name.strip(), value))
    return pairs


def parse_parameters(
    job_id: str, declarations: Iterable[ParameterDeclaration], items: Iterable[str]
) -> dict[str, ParameterValue]:
    """``--param name=value`` items typed by the job's declarations; UsageError naming the parameter otherwise."""
    declared: Mapping[str, ParameterDeclaration] = {d.name: d for d in declarations}
    result: dict[str, ParameterValue] = {}
    for name, text in parse_assignments(items):
        declaration = declared.get(name)
        if declaration is None:
            known = ", ".join(declared) or "none"
            raise UsageError(f"parameter {name!r}: {job_id} has no such parameter (it takes: {known})")
        if name in result:
            raise UsageError(f"parameter {name!r}: given more than once")
        try:
            result[name] = parse_value(declaration.type, text)
        except ValueError as error:
            raise UsageError(f"parameter {name!r} ({declaration.type.name.lower()}): {error}") from None
    return result


_DAY_NAMES: dict[str, DayOfWeek] = {
    name: day for day in DayOfWeek for name in (day.name.lower(), day.name.lower()[:3], day.name.lower()[:2])
}
_DAY_NAMES.update({"tues": DayOfWeek.TUESDAY, "thur": DayOfWeek.THURSDAY, "thurs": DayOfWeek.THURSDAY})


def _one_day(text: str) -> DayOfWeek:
    value = text.strip().lower()
    if value.isdigit() and 1 <= int(value) <= 7:
        return DayOfWeek(int(value))
    try:
        return _DAY_NAMES[value]
    except KeyError:
        raise ValueError(f"unknown day {text.strip()!r} (use mon, tue, wed, thu, fri, sat, sun)") from None


def parse_days(text: str) -> frozenset[DayOfWeek]:
    """``mon,fri``, ranges like ``mon-fri`` (wrapping: ``fri-mon``), ``weekdays``, ``weekends`` or ``daily``."""
    days: set[DayOfWeek] = set()
    for raw in text.split(","):
        part = raw.strip().lower()
        if not part:
            continue
        if part in ("weekdays", "workdays"):
            days.update(DayOfWeek(n) for n in range(1, 6))
        elif part == "weekends":
            days.update((DayOfWeek.SATURDAY, DayOfWeek.SUNDAY))
        elif part in ("daily", "all", "*"):
            days.update(DayOfWeek)
        elif "-" in part:
            first, _, last = part.partition("-")
            start, end = _one_day(first), _one_day(last)
            n = start.value
            while True:
                days.add(DayOfWeek(n))
                if n == end.value:
                    break
                n = n % 7 + 1
        else:
            days.add(_one_day(part))
    if not days:
        raise ValueError(f"no days in {text!r}")
    return frozenset(days)


def parse_time_of_day(text: str) -> time:
    """``23:00``, ``23:00:30`` or ``7`` (hours): a naive wall-clock time in whole seconds."""
    value = text.strip()
    try:
        if value.isdigit():
            return time(int(value))
        parsed = time.fromisoformat(value)
    except ValueError:
        raise ValueError(f"invalid time of day {text!r} (use HH:MM or HH:MM:SS)") from None
    if parsed.tzinfo is not None:
        raise ValueError(f"time of day {text!r} must not carry an offset: use --tz for the zone")
    if parsed.microsecond:
        raise ValueError(f"time of day {text!r} must be whole seconds")
    return parsed
