"""Text forms of the values in xcron.xml: xs:dateTime, xs:boolean, day names, zones, parameters.

Kept apart from the element mapping so each rule (what SanteDB writes, what xcron writes) is in
one place. Parsers raise ValueError with a reason meant for a person; the caller adds the file,
the line and the attribute name.
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal, InvalidOperation
from typing import NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from xcron.server.core.model import ParameterType, ParameterValue

INT32_MAX = 2**31 - 1
INT32_MIN = -(2**31)

# xs:dateTime as .NET writes it: fractions of any length (.NET uses up to 7 digits), optional zone.
_DATETIME = re.compile(
    r"(?P<year>\d{4})-(?P<month>\d\d)-(?P<day>\d\d)T(?P<hour>\d\d):(?P<minute>\d\d):(?P<second>\d\d)"
    r"(?:\.(?P<fraction>\d+))?(?P<zone>Z|[+-]\d\d:\d\d)?",
    re.ASCII,
)
# Its most common form, whose offset needs no range check (hours 00..14 as .NET writes them).
_PLAIN_DATETIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:Z|[+-](?:0\d|1[0-4]):[0-5]\d)?", re.ASCII)
_INTEGER = re.compile(r"[+-]?\d+", re.ASCII)
_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)", re.ASCII)

# .NET DayOfWeek names -> ISO weekday numbers; written Monday first.
DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_DAY_NUMBERS = {name.lower(): number for number, name in enumerate(DAY_NAMES, start=1)}
_ISO_DAYS = frozenset(_DAY_NUMBERS.values())

_TRUE = frozenset({"true", "1"})
_FALSE = frozenset({"false", "0"})


def load_zone(name: str) -> ZoneInfo:
    """An IANA zone by name; ValueError (not KeyError or OSError) when there is no such zone."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown IANA time zone {name!r} (expected a name such as 'Europe/Paris')") from None


# .NET's DateTime.MinValue and MaxValue: SanteDB writes them for "no start" and "no stop".
NO_START = datetime.min.replace(tzinfo=UTC)
NO_END = datetime.max.replace(tzinfo=UTC)
MIN_VALUE_TEXT = "0001-01-01T00:00:00"
MAX_VALUE_TEXT = "9999-12-31T23:59:59.9999999"
_LAST_SECOND = NO_END.replace(microsecond=0)
_ZERO = timedelta()
_MINUTE = timedelta(minutes=1)
_MIN_WALL = datetime.min
UTC_ZONE = ZoneInfo("UTC")
"""ZoneInfo("UTC") (the cached one): compared by identity on the hot paths."""
MAX_WALL = datetime.max.replace(microsecond=0)
"""The last wall time below DateTime.MaxValue's fraction: at or after it, a value is MaxValue."""
_UTC_ZONE, _MAX_WALL = UTC_ZONE, MAX_WALL


class XsDateTime(NamedTuple):
    """An xs:dateTime as written: `wall` is the date and time digits, `offset` "", "Z" or "+hh:mm".
    (A named tuple: a file holds thousands, and a frozen dataclass takes four times as long to make.)"""

    wall: datetime
    offset: str

    @property
    def is_min_value(self) -> bool:
        return self.wall == _MIN_WALL

    @property
    def is_max_value(self) -> bool:
        return self.wall >= _MAX_WALL

    def instant(self, zone: ZoneInfo, *, santedb: bool = False) -> datetime:
        """The instant as aware UTC; without an offset the wall time is read in `zone` (fold=0).

        `santedb`: read as SanteDB reads it on a host in `zone`. A value with "Z" becomes a UTC DateTime
        that SanteDB compares tick for tick with local times, so its digits are a wall time too.
        DateTime.MinValue and MaxValue mean no bound; other values beyond the representable range are
        clamped to it (they lie before or after every time xcron can schedule).
        """
        wall, offset = self.wall, self.offset
        if wall == _MIN_WALL:
            return NO_START
        if wall >= _MAX_WALL:
            return NO_END
        # The wall time in a zone is that zone's epoch plus the wall's distance from the naive epoch
        # (aware arithmetic is wall-clock arithmetic, fold 0): a tenth of datetime.replace's cost.
        try:
            if not offset or (santedb and offset == "Z"):
                if zone is _UTC_ZONE:  # the same instant, without asking the zone for its offset
                    return _UTC_EPOCH + (wall - _NAIVE_EPOCH)
                return (_epoch_in(zone) + (wall - _NAIVE_EPOCH)).astimezone(UTC)
            if offset == "Z":
                return _UTC_EPOCH + (wall - _NAIVE_EPOCH)
            return (_epoch_in(_fixed_offset(offset)) + (wall - _NAIVE_EPOCH)).astimezone(UTC)
        except (OverflowError, ValueError):
            return NO_START if wall.year < 5000 else NO_END

    def local_wall(self, zone: ZoneInfo) -> datetime:
        """The wall time SanteDB's DateTime carries on a host in `zone` (offsets converted, else as written)."""
        if self.offset in ("", "Z") or self.is_min_value or self.is_max_value:
            return self.wall
        instant = self.instant(zone)
        try:
            return instant.astimezone(zone).replace(tzinfo=None, fold=0)
        except OverflowError:
            return self.wall


_NAIVE_EPOCH = datetime(1970, 1, 1)
_UTC_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCHS: dict[tzinfo, datetime] = {}


def _epoch_in(zone: tzinfo) -> datetime:
    """1970-01-01 00:00 on the clock of `zone` (a process reads a few zones: kept for good)."""
    epoch = _EPOCHS.get(zone)
    if epoch is None:
        epoch = _EPOCHS[zone] = datetime(1970, 1, 1, tzinfo=zone)
    return epoch


@functools.lru_cache(maxsize=4096)  # a file holds a few; there are at most 2,879 valid ones anyway
def _fixed_offset(offset: str) -> tzinfo:
    """The tzinfo of "+hh:mm" (ValueError out of range), as datetime.fromisoformat makes it."""
    parsed = datetime.fromisoformat("2000-01-01T00:00:00" + offset).tzinfo
    assert parsed is not None
    return parsed


def parse_xs_datetime(text: str) -> XsDateTime:
    """An xs:dateTime's digits and offset. Fractions beyond microseconds are truncated, so .NET's 7-digit
    ticks never round up a second."""
    if _PLAIN_DATETIME.fullmatch(text):  # the usual form, without fraction or spaces: datetime's own parser
        try:
            return XsDateTime(datetime.fromisoformat(text[:19]), text[19:])
        except ValueError:
            pass  # out of range: the general path below says why, in its words
    match = _DATETIME.fullmatch(text.strip())
    if match is None:
        raise ValueError("expected an xs:dateTime such as 2026-03-01T09:00:00+01:00")
    fraction = (match["fraction"] or "")[:6].ljust(6, "0")
    try:
        wall = datetime(
            int(match["year"]),
            int(match["month"]),
            int(match["day"]),
            int(match["hour"]),
            int(match["minute"]),
            int(match["second"]),
            int(fraction),
        )
        offset = match["zone"] or ""
        if offset not in ("", "Z"):
            datetime.fromisoformat("2000-01-01T00:00:00" + offset)  # checks the offset's range
    except (ValueError, OverflowError) as error:
        raise ValueError(f"not a valid date and time ({error})") from None
    return XsDateTime(wall, offset)


def parse_datetime(text: str, zone: ZoneInfo, *, santedb: bool = False) -> datetime:
    """An xs:dateTime as an aware UTC datetime; without an offset it is wall time in `zone` (fold=0).
    MinValue and MaxValue (and anything beyond the representable range) become NO_START / NO_END."""
    return parse_xs_datetime(text).instant(zone, santedb=santedb)


def format_wall(wall: datetime) -> str:
    """A wall time without offset, as SanteDB writes an unspecified DateTime (SanteDB takes it as written)."""
    return wall.replace(tzinfo=None, fold=0).isoformat(timespec="microseconds" if wall.microsecond else "seconds")


def parse_timestamp(text: str) -> datetime:
    """An instant that must carry its offset, so it never depends on a zone."""
    stripped = text.strip()
    if not (stripped.endswith("Z") or re.search(r"[+-]\d\d:\d\d$", stripped, re.ASCII)):
        raise ValueError("a timestamp needs an offset or Z, e.g. 2026-03-01T09:00:00Z")
    return parse_datetime(stripped, ZoneInfo("UTC"))


def format_datetime(instant: datetime, zone: ZoneInfo, *, santedb: bool = False) -> str:
    """Wall time in `zone` with that zone's offset at `instant`; Z for a zero offset.

    Old local-mean-time offsets with seconds cannot be written as xs:dateTime, so those instants
    are written in UTC instead (same instant, so reading back gives the same value).
    """
    if not 1 < instant.year < 9999 or instant.tzinfo is None:  # the year test spares two slow comparisons
        if instant <= NO_START:
            return MIN_VALUE_TEXT
        if instant >= _LAST_SECOND:
            return MAX_VALUE_TEXT
    elif zone is _UTC_ZONE and instant.tzinfo is UTC:  # the digits are the instant's own (most files)
        return iso_digits(instant) + "Z"
    try:
        local = instant.astimezone(zone)
    except OverflowError:  # within a day of the edges of the range: UTC is exact
        text = instant.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds")
        return text + ("+00:00" if santedb else "Z")  # SanteDB reads "Z" as a wall time, "+00:00" as UTC
    offset = local.utcoffset() or _ZERO
    if offset.microseconds or offset.seconds % 60:  # not whole minutes (as offset % 1 minute, faster)
        if santedb:  # SanteDB reads "Z" as a wall time: write the wall time, which it reads the same way
            return format_wall(local)
        local, offset = instant.astimezone(UTC), timedelta()
    return iso_digits(local) + (offset_text(offset) if offset else "Z")


_TWO_DIGITS = tuple(f"{n:02d}" for n in range(60))


def iso_digits(moment: datetime) -> str:
    """isoformat() without the offset (microseconds only when there are some), twice as fast: a file
    holds thousands of these."""
    two = _TWO_DIGITS
    year, micro = moment.year, moment.microsecond
    text = (
        f"{year if year > 999 else f'{year:04d}'}-{two[moment.month]}-{two[moment.day]}"
        f"T{two[moment.hour]}:{two[moment.minute]}:{two[moment.second]}"
    )
    return f"{text}.{micro:06d}" if micro else text


@functools.lru_cache(maxsize=256)
def offset_text(offset: timedelta) -> str:
    """A whole-minute offset as isoformat() writes it: "+hh:mm" or "-hh:mm"."""
    sign = "-" if offset < _ZERO else "+"
    minutes = abs(offset) // _MINUTE
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def format_timestamp(instant: datetime) -> str:
    if instant.tzinfo is None:
        raise ValueError("timestamp parameters must be timezone-aware")
    return format_datetime(instant, ZoneInfo("UTC"))


def parse_bool(text: str) -> bool:
    value = text.strip()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError("expected true or false")


def format_bool(value: bool) -> str:
    return "true" if value else "false"


def parse_int(text: str, *, minimum: int, maximum: int) -> int:
    value = text.strip()
    if not _INTEGER.fullmatch(value):
        raise ValueError("expected a whole number")
    number = int(value)
    if not minimum <= number <= maximum:
        raise ValueError(f"must be between {minimum} and {maximum}")
    return number


def parse_days(text: str) -> frozenset[int]:
    """Space-separated .NET DayOfWeek names (case-insensitive) as ISO weekday numbers."""
    days = set()
    for name in text.split():
        number = _DAY_NUMBERS.get(name.lower())
        if number is None:
            raise ValueError(f"unknown day {name!r} (expected day names such as {' '.join(DAY_NAMES[:3])})")
        days.add(number)
    return frozenset(days)


def format_days(days: frozenset[int]) -> str:
    if not days <= _ISO_DAYS:
        raise ValueError(f"calendar days must be ISO weekdays 1..7, got {sorted(days)}")
    return " ".join(DAY_NAMES[day - 1] for day in sorted(days))


def parse_seconds(text: str) -> timedelta:
    """Whole or fractional seconds, exact to the microsecond (Decimal, not float)."""
    value = text.strip()
    if not _DECIMAL.fullmatch(value):
        raise ValueError("expected a number of seconds such as 90 or 1.5")
    try:
        micros = int(Decimal(value).scaleb(6).to_integral_value(rounding="ROUND_DOWN"))
        return timedelta(microseconds=micros)
    except (InvalidOperation, OverflowError):
        raise ValueError("duration out of range") from None


def format_seconds(duration: timedelta) -> str:
    micros = duration // timedelta(microseconds=1)
    sign = "-" if micros < 0 else ""
    whole, fraction = divmod(abs(micros), 1_000_000)
    return f"{sign}{whole}" + (f".{fraction:06d}".rstrip("0") if fraction else "")


def parse_parameter(kind: str, text: str) -> ParameterValue:
    """The value of an <xc:param type=kind> or a SanteDB positional item; strings keep whitespace."""
    if kind == ParameterType.STRING:
        return text
    if kind == ParameterType.INT:
        return parse_int(text, minimum=-(2**63), maximum=2**63 - 1)
    if kind == ParameterType.BOOL:
        return parse_bool(text)
    if kind == ParameterType.DOUBLE:
        value = text.strip()
        if "_" in value:
            raise ValueError("expected a number such as 1.5")
        try:
            return float(value)
        except ValueError:
            raise ValueError("expected a number such as 1.5") from None
    if kind == ParameterType.TIMESTAMP:
        return parse_timestamp(text)
    if kind == ParameterType.DURATION:
        return parse_seconds(text)
    choices = ", ".join(t.value for t in ParameterType)
    raise ValueError(f"unknown parameter type {kind!r} (expected one of {choices})")


def format_parameter(value: ParameterValue) -> tuple[ParameterType, str]:
    """The type name and text for a parameter value (bool before int: bool is an int in Python)."""
    if isinstance(value, bool):
        return ParameterType.BOOL, format_bool(value)
    if isinstance(value, int):
        return ParameterType.INT, str(value)
    if isinstance(value, float):
        return ParameterType.DOUBLE, repr(value)
    if isinstance(value, datetime):
        return ParameterType.TIMESTAMP, format_timestamp(value)
    if isinstance(value, timedelta):
        return ParameterType.DURATION, format_seconds(value)
    if isinstance(value, str):
        return ParameterType.STRING, value
    raise ValueError(f"unsupported parameter value {value!r}")
