"""Plain-text formatting shared by the tables and the JSON: durations, times, days and schedule summaries."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from xcron.client import CalendarSpec, DayOfWeek, Execution, IntervalSpec, ParameterValue, Schedule


def run_time(execution: Execution) -> timedelta | None:
    """How long a finished execution took; None while it runs."""
    if execution.start_time is None or execution.finish_time is None:
        return None
    return execution.finish_time - execution.start_time


def format_duration(value: timedelta) -> str:
    """``1h30m``, ``15m``, ``90s`` as ``1m30s``, ``0.25s``: compact, exact to the millisecond."""
    total = value.total_seconds()
    sign = "-" if total < 0 else ""
    total = abs(total)
    whole = int(total)
    fraction = round(total - whole, 3)
    if fraction >= 1:
        whole, fraction = whole + 1, 0.0
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole >= size:
            parts.append(f"{whole // size}{unit}")
            whole %= size
    if whole or fraction or not parts:
        secs = f"{whole + fraction:.3f}".rstrip("0").rstrip(".")
        parts.append(f"{secs}s")
    return sign + "".join(parts)


def zone_named(name: str) -> tzinfo | None:
    """The zone to show a schedule's times in; None (this machine's) for an empty or unknown name."""
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def format_time(value: datetime | None, zone: tzinfo | None = None, *, with_zone: bool = True) -> str:
    """A time for people: in ``zone`` (default: this machine's), with the zone's abbreviation unless a
    listing names the zone once in its caption."""
    if value is None:
        return "-"
    local = value.astimezone(zone) if zone is not None else value.astimezone()
    text = f"{local:%Y-%m-%d %H:%M:%S}"
    return f"{text} {local.tzname() or local.strftime('%z')}" if with_zone else text


def local_zone_caption() -> str:
    """Listings show times without a zone each; their caption names it once."""
    now = datetime.now().astimezone()
    return f"times in {now.tzname() or now.strftime('%z')}"


_DAY_ABBR = {day: day.name[:3].title() for day in DayOfWeek}


def format_days(days: Iterable[DayOfWeek]) -> str:
    """``Mon,Fri``; a run of three or more days as a range (``Mon-Fri``); all seven as ``daily``."""
    ordered = sorted(set(days))
    if len(ordered) == 7:
        return "daily"
    groups: list[list[DayOfWeek]] = []
    for day in ordered:
        if groups and groups[-1][-1].value + 1 == day.value:
            groups[-1].append(day)
        else:
            groups.append([day])
    parts = []
    for group in groups:
        if len(group) >= 3:
            parts.append(f"{_DAY_ABBR[group[0]]}-{_DAY_ABBR[group[-1]]}")
        else:
            parts.extend(_DAY_ABBR[day] for day in group)
    return ",".join(parts)


def schedule_summary(schedule: Schedule) -> str:
    """One line for a schedule.

    ``every 15m``, ``Mon,Fri 23:00 Europe/Paris``, ``once 2026-05-01 09:00``, ``cron 0 3 * * * (America/New_York)``.
    """
    spec = schedule.spec
    zone = schedule.time_zone
    if isinstance(spec, IntervalSpec):
        return f"every {format_duration(spec.every)}"
    if isinstance(spec, CalendarSpec):
        at = spec.time_of_day.strftime("%H:%M:%S" if spec.time_of_day.second else "%H:%M")
        if spec.days:
            text = f"{format_days(spec.days)} {at}"
        elif schedule.start_time is not None:
            start = schedule.start_time.astimezone(zone_named(zone) or UTC) if zone else schedule.start_time
            text = f"once {start:%Y-%m-%d} {at}"
        else:
            text = f"once {at}"
        return f"{text} {zone}" if zone else text
    text = f"cron {spec.expression}"
    return f"{text} ({zone})" if zone else text


def percent(progress: float) -> str:
    """0..1 as a whole percentage (clamped: the server clamps too, but old records may not be)."""
    return f"{max(0.0, min(1.0, progress)) * 100:.0f}%"


def value_text(value: ParameterValue | None) -> str:
    """A parameter value as it would be typed after ``--param name=``."""
    if value is None:
        return "-"
    if isinstance(value, str) and (not value or any(c.isspace() for c in value)):
        return json.dumps(value, ensure_ascii=False)  # quoted, so that `name=a b` reads as one value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return format_duration(value)
    return str(value)


def parameters_text(parameters: Mapping[str, ParameterValue]) -> str:
    """``name=value`` pairs sorted by name, as ``--param`` takes them."""
    return " ".join(f"{name}={value_text(parameters[name])}" for name in sorted(parameters)) or "-"
