"""Shared by the reader and the writer: names, namespaces and limits, lxml parsing helpers, the cron check, and
SanteDB's calendar start (the wall time a calendar's `start` attribute holds)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, TypeVar, cast
from zoneinfo import ZoneInfo

from croniter import croniter
from lxml import etree

from xcron.server.core.model import (
    CalendarSpec,
    ParameterType,
)
from xcron.server.core.ports import (
    ScheduleFileError,
    ScheduleWriteError,
)
from xcron.server.stores import _xml_values as values

SANTEDB_NS = "http://santedb.org/configuration"
XC_NS = "urn:xcron:schedule:v1"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
XSD_NS = "http://www.w3.org/2001/XMLSchema"

MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 32
START_TYPES = ("immediate", "delay", "schedule", "never")

_ROOT = "ArrayOfJobItemConfiguration"
_JOB = "JobItemConfiguration"
_S = f"{{{SANTEDB_NS}}}"
_XC = f"{{{XC_NS}}}"
# The declarations every file xcron writes carries on its root, in this order.
_ROOT_NSMAP = {"xsi": XSI_NS, "xsd": XSD_NS, "xc": XC_NS}
_ROOT_DECLARATIONS = tuple(f' xmlns:{prefix}="{uri}"'.encode() for prefix, uri in _ROOT_NSMAP.items())
_SCHEDULE_ATTRIBUTES = ("start", "timeZone", "misfire", "misfireGrace", "maxCatchup", "overlap")
_POSITIONAL_TAGS = {"int": ParameterType.INT, "string": ParameterType.STRING, "bool": ParameterType.BOOL}
_EARLIEST = datetime(1, 1, 3, tzinfo=UTC)  # before this, local dates may not be representable
_UTC_ZONE = values.UTC_ZONE
_ONE_DAY = timedelta(days=1)
_POSITIONAL_TAGS_READ = {**_POSITIONAL_TAGS, "double": ParameterType.DOUBLE}


@dataclass(frozen=True)
class _Layout:
    """How the original file is laid out, so a save changes only the entries it must."""

    spans: tuple[tuple[int, int], ...]
    close_at: int  # offset of the root's end tag, or of "/>" when the root is an empty element
    self_closing: bool
    newline: bytes
    indent: bytes
    declares_xc: bool
    spaced_empty: bool  # SanteDB's "<add ... />"


_PARSER_OPTIONS: dict[str, Any] = {
    "resolve_entities": False,
    "no_network": True,
    "load_dtd": False,
    "dtd_validation": False,
    "huge_tree": False,
    "remove_comments": False,
    # xml:id values are never looked up; collecting them (with the encoding given) makes libxml2 parse
    # xcron.xml about 1.6 times slower.
    "collect_ids": False,
}


T = TypeVar("T")


@functools.cache
def _field_defaults(cls: Any) -> tuple[dict[str, Any], tuple[tuple[str, Callable[[], Any]], ...]]:
    fields = dataclasses.fields(cls)
    plain = {f.name: f.default for f in fields if f.default is not dataclasses.MISSING}
    made = tuple((f.name, f.default_factory) for f in fields if f.default_factory is not dataclasses.MISSING)
    return plain, made


def _built(cls: type[T], **given: Any) -> T:
    """cls(**given) for a frozen dataclass, at a third of the cost: its __init__ sets each field through
    object.__setattr__, and a file holds thousands. No __post_init__: only for values the caller made
    valid. Fields not given take their defaults, as __init__ gives them (init=False ones included)."""
    plain, made = _field_defaults(cast(Any, cls))  # a class is hashable; the stubs say type[T] may not be
    built = object.__new__(cls)
    fields = built.__dict__
    fields.update(plain)
    for name, factory in made:
        if name not in given:
            fields[name] = factory()
    fields.update(given)
    return built


@contextlib.contextmanager
def _without_gc() -> Iterator[None]:
    """Suspends the cycle collector while a file's entries are built: they form no cycles, and at
    10,000 schedules its passes over the growing heap cost a third of the read. The switch is
    process-wide, so only for that long; the state found is restored (if another thread suspended
    it meanwhile, the collector resumes when the first of the two finishes)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _find(data: bytes, needle: bytes, rare: bytes, start: int = 0) -> int:
    """data.find(needle, start), settled at once when `rare` is absent: one byte of the needle that XML text
    seldom holds ("!", "?", CR). A search for one byte is ~70 times faster than for two whose first is
    common ("<"), and a large file seldom holds the rare one at all."""
    return data.find(needle, start) if data.find(rare, start) >= 0 else -1


# What str.strip() takes away from a file's text (Unicode's white space, in UTF-8): nothing else means empty.
# Possessive (*+): the alternatives never overlap, and a plain * keeps a backtracking point per byte
# (~120 bytes of memory for each byte of a blank file).
_BLANK = re.compile(
    rb"(?:[\s\x1c-\x1f]|\xc2[\x85\xa0]|\xe1\x9a\x80|\xe2\x80[\x80-\x8a\xa8\xa9\xaf]|\xe2\x81\x9f|\xe3\x80\x80)*+"
)


def _parser() -> etree.XMLParser:
    # A fresh parser per call: lxml parsers are not thread-safe and saves run on worker threads.
    return etree.XMLParser(encoding="utf-8", **_PARSER_OPTIONS)


def _parse_root(data: bytes, source: str) -> etree._Element:
    """Parses untrusted bytes: bounded size, UTF-8 only, no DTD of any kind, bounded nesting."""
    if len(data) > MAX_FILE_BYTES:
        raise ScheduleFileError(source, None, f"file is {len(data)} bytes, over the {MAX_FILE_BYTES} byte limit")
    data = data.removeprefix(b"\xef\xbb\xbf")
    # The checks read the bytes: a decoded copy of a large file costs more than the rest of them (its
    # pages are new memory), and ASCII, as most files are, is valid UTF-8 as it stands.
    if not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as error:
            line = data.count(b"\n", 0, error.start) + 1
            raise ScheduleFileError(source, line, f"not valid UTF-8 (byte {error.start}); save it as UTF-8") from None
    if _BLANK.fullmatch(data):
        raise ScheduleFileError(
            source,
            None,
            "file is empty (a crashed writer may have truncated it); delete it to start without schedules",
        )
    doctype = _find(data, b"<!DOCTYPE", b"!")
    if doctype >= 0:
        line = data.count(b"\n", 0, doctype) + 1
        raise ScheduleFileError(source, line, "DOCTYPE/DTD declarations are not allowed in xcron.xml; remove it")
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as error:
        raise ScheduleFileError(source, _line(error.lineno), f"not well-formed XML: {error.msg}") from None
    # Belt and braces: the text check above already catches every DOCTYPE.
    if getattr(root.getroottree().docinfo, "doctype", ""):
        raise ScheduleFileError(source, 1, "DOCTYPE/DTD declarations are not allowed in xcron.xml; remove it")
    if root.xpath(_TOO_DEEP):  # then the walk below finds the element to name
        _check_depth(root, source)
    if root.tag != _ROOT:
        raise ScheduleFileError(
            source,
            _line(root.sourceline),
            f"root element must be <{_ROOT}> (no namespace), found {root.tag!r}",
        )
    return root


# Whether any element lies deeper than MAX_DEPTH (libxml2 walks the tree; a Python walk is ten times slower).
# A string, not a compiled etree.XPath: saves parse on worker threads, and lxml's evaluators are per thread.
_TOO_DEEP = "boolean(" + "/*" * (MAX_DEPTH + 1) + ")"


def _check_depth(root: etree._Element, source: str) -> None:
    stack = [(root, 1)]
    while stack:
        element, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ScheduleFileError(
                source, _line(element.sourceline), f"elements nested deeper than {MAX_DEPTH} levels"
            )
        stack.extend((child, depth + 1) for child in _elements(element))


def _elements(parent: etree._Element) -> Iterator[etree._Element]:
    """Child elements only: comments and processing instructions are kept but never interpreted."""
    return parent.iterchildren(tag=etree.Element)  # lxml's filter, in C


def _line(value: object) -> int | None:
    """A line number from lxml (its stubs type these loosely)."""
    return value if isinstance(value, int) else None


def _text(element: etree._Element) -> str:
    """All text inside an element, ignoring comments, as SanteDB's serializer reads it."""
    if not len(element):  # no children: only its own text
        return str(element.text or "")
    return "".join(str(part) for part in element.itertext())


_CRON_ALIASES = frozenset({"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"})


_CRON_RANDOM_OR_HASHED = re.compile(r"(?<![a-z])[hr](?![a-z])", re.IGNORECASE)


def _parse_cron(text: str) -> str:
    return _checked_cron(" ".join(text.split()))


@functools.lru_cache(maxsize=4096)
def _checked_cron(expression: str) -> str:
    """croniter's check is slow and files repeat a few expressions many times: check each once."""
    if expression.lower() in _CRON_ALIASES:
        return expression
    if len(expression.split()) not in (5, 6):
        raise ValueError("a cron expression has 5 fields (minute hour day month weekday) or 6 (seconds last)")
    if _CRON_RANDOM_OR_HASHED.search(expression):
        raise ValueError("random (R) and hashed (H) cron values are not supported")
    if _plainly_valid_cron(expression):  # croniter would say so, a hundred times slower
        return expression
    try:
        valid = bool(croniter.is_valid(expression))
    except Exception:  # croniter raises assorted errors for odd input
        valid = False
    if not valid:
        raise ValueError("not a valid cron expression (e.g. '0 3 * * *' for 03:00 daily)")
    return expression


# The plainest cron items: "*", a number or an ascending range of numbers, each optionally with a step.
_CRON_ITEM = re.compile(r"(?:\*|(\d{1,2})(?:-(\d{1,2}))?)(?:/(\d{1,2}))?", re.ASCII)
# Each field's values (minute, hour, day of month, month, day of week, second), a subset of croniter's.
_CRON_BOUNDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6), (0, 59))


def _plainly_valid_cron(expression: str) -> bool:
    """Whether the fields (space-separated) hold only lists of plain items within their bounds, with steps
    from 1 to the field's largest value: then croniter accepts the expression (tests check it); for
    anything else (names, L, W, #, ?, out of range, a number with a step) croniter is asked."""
    fields = expression.split(" ")
    if len(fields) not in (5, 6):
        return False
    for field, (low, high) in zip(fields, _CRON_BOUNDS, strict=False):
        for item in field.split(","):
            match = _CRON_ITEM.fullmatch(item)
            if match is None:
                return False
            first, last, step = match.groups()
            if first is not None:
                if last is None and step is not None:  # "5/15": croniter's own reading, left to it
                    return False
                start = int(first)
                if not low <= start <= (start if last is None else int(last)) <= high:
                    return False
            if step is not None and not 1 <= int(step) <= high:
                return False
    return True


def _naive(time_of_day: time) -> time:
    """The time without zone or fold (as it usually is already: time.replace costs half a microsecond)."""
    if time_of_day.tzinfo is None and not time_of_day.fold:
        return time_of_day
    return time_of_day.replace(tzinfo=None, fold=0)


def _wall_instant(day: date, time_of_day: time, zone: ZoneInfo) -> datetime:
    """When the clock in `zone` shows `time_of_day` on `day`, as xcron's triggers fire it: the first
    pass of a repeated time; a skipped time at the end of the gap (UTC, aware)."""
    if zone is _UTC_ZONE:  # no gaps or repeats (and most files' zone)
        return datetime.combine(day, _naive(time_of_day), tzinfo=UTC)
    local = datetime.combine(day, _naive(time_of_day), tzinfo=zone)
    instant = local.astimezone(UTC)
    if instant.astimezone(zone) == local:  # the same tzinfo: compares the wall times (fold ignored)
        return instant
    lo = local.replace(fold=1).astimezone(UTC)  # in the gap: the offset after it gives an earlier instant
    hi = instant
    while hi - lo > timedelta(seconds=1):  # the transition lies in (lo, hi]
        mid = lo + (hi - lo) / 2
        if mid.astimezone(zone).utcoffset() == lo.astimezone(zone).utcoffset():
            lo = mid
        else:
            hi = mid
    return hi.replace(microsecond=0) if hi.microsecond else hi


def _first_calendar_firing(spec: CalendarSpec, start: datetime, zone: ZoneInfo) -> tuple[date, datetime | None]:
    """The local date and instant of the first firing at or after `start` (instant None near year 1)."""
    if start.year < 2 and start < _EARLIEST:
        return date.min, None
    days, time_of_day = spec.days, spec.time_of_day
    try:
        day = (start if zone is _UTC_ZONE and start.tzinfo is UTC else start.astimezone(zone)).date()
        for _ in range(10):
            if not days or day.isoweekday() in days:
                instant = _wall_instant(day, time_of_day, zone)
                if instant >= start:
                    return day, instant
            day += _ONE_DAY
    except OverflowError:
        pass
    raise ScheduleWriteError("start_time", "the calendar never fires before the end of time (9999-12-31)")


def santedb_calendar_start(spec: CalendarSpec, start: datetime, zone: ZoneInfo) -> datetime:
    """The wall time xcron writes in a calendar's start (no offset: SanteDB takes it as written, in
    any host zone, where "Z" would be compared as a local time and an offset converted).

    SanteDB takes the time of day from it. With days, SanteDB fires only on dates after the one in
    start, so it is the day before the first firing; without days, the date of the one firing."""
    day, _ = _first_calendar_firing(spec, start, zone)
    return _santedb_calendar_wall(spec, day)


def _santedb_calendar_wall(spec: CalendarSpec, first_day: date) -> datetime:
    """santedb_calendar_start for a calendar that first fires on `first_day`."""
    day = first_day - _ONE_DAY if spec.days and first_day > date.min else first_day
    return datetime.combine(day, _naive(spec.time_of_day))
