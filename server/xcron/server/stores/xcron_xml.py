"""Reads and writes xcron.xml, SanteDB's schedule file, so both tools can share it.

The file keeps SanteDB's layout (see FORMAT.md). What SanteDB cannot express lives in the
`urn:xcron:schedule:v1` namespace, where SanteDB's XmlSerializer ignores it: zones and policies as
`xc:` attributes on `<add>`, named parameters as `<xc:param>` children, cron schedules as
`<xc:cron>` elements inside `<schedule>`, and a job-level `xc:paused`.

Values mean what they mean to SanteDB on a host in the schedule's zone (santedb-api's
JobItemSchedule and ExtensionMethods.AppliesTo): `start`/`stop` with an offset are instants, without
one or with "Z" wall times; MinValue and MaxValue are no bounds; a calendar with days never fires on
the date in its `start`. So xcron writes a calendar's `start` as a wall time at its time of day on
the day before the first firing (the date of the firing for a one-shot), and its exact start as
`xc:start`.

Saving splices: a document read from bytes is written as those bytes with only the changed entries
replaced, so SanteDB's text, declaration, BOM and line ends stay.

Reading is strict where SanteDB is: what its serializer cannot read is a ScheduleFileError naming
the line and the attribute (for entries of jobs this server runs). What it accepts but xcron cannot
run (interval="0", a stop not after the start) is a DisabledSchedule, kept as written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import logging
import os
import re
import stat
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from xml.parsers import expat
from zoneinfo import ZoneInfo

from croniter import croniter
from lxml import etree

from xcron.server.core.model import (
    DEFAULT_MAX_CATCHUP_RUNS,
    CalendarSpec,
    CronSpec,
    IntervalSpec,
    MisfirePolicy,
    OverlapPolicy,
    ParameterType,
    ParameterValue,
    Schedule,
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
NO_END_FLOOR = values.NO_END.replace(microsecond=0)  # from 9999-12-31T23:59:59 on: .NET's MaxValue, no end
_POSITIONAL_TAGS_READ = {**_POSITIONAL_TAGS, "double": ParameterType.DOUBLE}


@dataclass(frozen=True, kw_only=True)
class DisabledSchedule:
    """A schedule SanteDB accepts but xcron cannot honour (e.g. interval="0"): not run, kept as written."""

    line: int | None = field(compare=False)  # where it was read; a rewrite may move it
    reason: str
    element: bytes = field(compare=False, repr=False, default=b"")


@dataclass(frozen=True, kw_only=True)
class ScheduleEntry:
    """One JobItemConfiguration. `element` is the entry as read (None for new entries).

    `element` holds the serialized element without the xsi/xsd/xc declarations the root supplies;
    it takes no part in equality, so a document read back equals the one written.
    """

    type_name: str
    start_type: str
    schedules: tuple[Schedule, ...]
    paused: bool = False
    positional_parameters: tuple[ParameterValue, ...] = ()
    disabled: tuple[DisabledSchedule, ...] = ()
    element: bytes | None = field(default=None, compare=False, repr=False)
    span: tuple[int, int] | None = field(default=None, compare=False, repr=False)
    """Where the entry's text lies in the document's original bytes (kept by ScheduleDocument.replace)."""
    line: int | None = field(default=None, compare=False, repr=False)
    santedb_view: tuple[Any, ...] | None = field(default=None, compare=False, repr=False)
    """What SanteDB's classes hold of the entry: equal views survive a SanteDB re-save unchanged."""
    xcron_parts: bool = field(default=False, compare=False, repr=False)
    """Whether the entry has anything in xcron's namespace (what a SanteDB re-save drops)."""
    unreadable: str | None = field(default=None, compare=False, repr=False)
    """For an entry of a job this server does not run: why xcron could not read it (kept as written)."""
    element_trusted: bool = field(default=False, init=False, compare=False, repr=False)
    """Set by the reader only. dataclasses.replace() resets it, so an edited copy is checked again."""


def _class_path(type_name: str) -> str:
    """The part of a .NET type name before the assembly, without whitespace."""
    return "".join(type_name.split(",", 1)[0].split())


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


@dataclass(frozen=True)
class ScheduleDocument:
    entries: tuple[ScheduleEntry, ...]
    original: bytes | None = field(default=None, compare=False, repr=False)
    """The bytes the document was read from; saving splices changed entries into them."""
    layout: _Layout | None = field(default=None, compare=False, repr=False)

    def find(self, type_name: str) -> ScheduleEntry | None:
        """The entry for a type, ignoring the assembly part ("A.B, X" matches "A.B, Y" and "A.B")."""
        wanted = _class_path(type_name)
        return next((e for e in self.entries if _class_path(e.type_name) == wanted), None)

    def replace(self, entry: ScheduleEntry) -> ScheduleDocument:
        """A copy with `entry` in place of the entry find() matches (same position), else appended.

        A replaced entry is written from its fields: the original element it may carry is dropped
        (that is what makes rendering cheap: every entry still holding its element is unchanged).
        """
        if entry.element is not None:
            entry = dataclasses.replace(entry, element=None)
        wanted = _class_path(entry.type_name)
        for index, existing in enumerate(self.entries):
            if _class_path(existing.type_name) == wanted:
                entry = dataclasses.replace(entry, span=existing.span, line=existing.line)
                return self._with((*self.entries[:index], entry, *self.entries[index + 1 :]))
        return self._with((*self.entries, dataclasses.replace(entry, span=None)))

    def remove(self, type_name: str) -> ScheduleDocument:
        """A copy without the entry find() matches (SanteDB's Clear removes the whole entry)."""
        wanted = _class_path(type_name)
        return self._with(tuple(e for e in self.entries if _class_path(e.type_name) != wanted))

    def _with(self, entries: tuple[ScheduleEntry, ...]) -> ScheduleDocument:
        return ScheduleDocument(entries, self.original, self.layout)


class ScheduleWriteError(ValueError):
    """A schedule that cannot be written so that it reads back the same; `field` names the Schedule field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class ScheduleFileError(ValueError):
    """xcron.xml cannot be used as it is; str() is "path:line: reason" for the operator."""

    def __init__(self, path: str, line: int | None, reason: str) -> None:
        self.path = path
        self.line = line
        self.reason = reason
        super().__init__(f"{path}:{line}: {reason}" if line is not None else f"{path}: {reason}")


# -- reading -------------------------------------------------------------------------------------

_PARSER_OPTIONS: dict[str, Any] = {
    "resolve_entities": False,
    "no_network": True,
    "load_dtd": False,
    "dtd_validation": False,
    "huge_tree": False,
    "remove_comments": False,
}


def _parser() -> etree.XMLParser:
    # A fresh parser per call: lxml parsers are not thread-safe and saves run on worker threads.
    return etree.XMLParser(encoding="utf-8", **_PARSER_OPTIONS)


def _elements(parent: etree._Element) -> Iterator[etree._Element]:
    """Child elements only: comments and processing instructions are kept but never interpreted."""
    return (child for child in parent if isinstance(child.tag, str))


def _line(value: object) -> int | None:
    """A line number from lxml (its stubs type these loosely)."""
    return value if isinstance(value, int) else None


def _text(element: etree._Element) -> str:
    """All text inside an element, ignoring comments, as SanteDB's serializer reads it."""
    return "".join(str(part) for part in element.itertext())


def _describe(tag: str) -> str:
    qname = etree.QName(tag)
    prefix = {XC_NS: "xc:"}.get(qname.namespace or "", "")
    return f"<{prefix}{qname.localname}>"


def _parse_root(data: bytes, source: str) -> etree._Element:
    """Parses untrusted bytes: bounded size, UTF-8 only, no DTD of any kind, bounded nesting."""
    if len(data) > MAX_FILE_BYTES:
        raise ScheduleFileError(source, None, f"file is {len(data)} bytes, over the {MAX_FILE_BYTES} byte limit")
    data = data.removeprefix(b"\xef\xbb\xbf")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ScheduleFileError(source, line, f"not valid UTF-8 (byte {error.start}); save it as UTF-8") from None
    if not text.strip():
        raise ScheduleFileError(
            source,
            None,
            "file is empty (a crashed writer may have truncated it); delete it to start without schedules",
        )
    doctype = text.find("<!DOCTYPE")
    if doctype >= 0:
        line = text.count("\n", 0, doctype) + 1
        raise ScheduleFileError(source, line, "DOCTYPE/DTD declarations are not allowed in xcron.xml; remove it")
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as error:
        raise ScheduleFileError(source, _line(error.lineno), f"not well-formed XML: {error.msg}") from None
    # Belt and braces: the text check above already catches every DOCTYPE.
    if getattr(root.getroottree().docinfo, "doctype", ""):
        raise ScheduleFileError(source, 1, "DOCTYPE/DTD declarations are not allowed in xcron.xml; remove it")
    stack = [(root, 1)]
    while stack:
        element, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ScheduleFileError(
                source, _line(element.sourceline), f"elements nested deeper than {MAX_DEPTH} levels"
            )
        stack.extend((child, depth + 1) for child in _elements(element))
    if root.tag != _ROOT:
        raise ScheduleFileError(
            source,
            _line(root.sourceline),
            f"root element must be <{_ROOT}> (no namespace), found {root.tag!r}",
        )
    return root


class _Reader:
    """Maps elements to entries; every failure names the file, the line and the attribute."""

    def __init__(self, source: str, default_zone: ZoneInfo) -> None:
        self.source = source
        self.default_zone = default_zone

    def fail(self, element: etree._Element, reason: str) -> ScheduleFileError:
        return ScheduleFileError(self.source, _line(element.sourceline), reason)

    def attribute(self, element: etree._Element, name: str, parse: Callable[[str], Any]) -> Any:
        """parse(value) of an attribute that is present; ValueError becomes a located error."""
        text = element.get(name)
        try:
            return parse(text if text is not None else "")
        except ValueError as error:
            label = name.replace(_XC, "xc:")
            raise self.fail(element, f"{_describe(element.tag)} {label}={text!r}: {error}") from None

    def check_xc_attributes(self, element: etree._Element, allowed: tuple[str, ...]) -> None:
        for key in map(str, element.attrib):
            name = key.removeprefix(_XC)
            if name != key and name not in allowed:
                expected = ", ".join(f"xc:{known}" for known in allowed)
                raise self.fail(
                    element, f"unknown attribute xc:{name} on {_describe(element.tag)} (allowed: {expected})"
                )

    def entry(self, element: etree._Element) -> ScheduleEntry:
        if element.tag != _JOB:
            raise self.fail(element, f"unexpected element {element.tag!r}; expected <{_JOB}>")
        type_name = (element.get("type") or "").strip()
        if not type_name:
            raise self.fail(element, f"<{_JOB}> needs a type attribute (the job's type name)")
        self.check_xc_attributes(element, ("paused",))
        start_type = (element.get("startType") or "immediate").strip().lower()  # .NET's enum default
        if start_type not in START_TYPES:
            raise self.fail(element, f"<{_JOB}> startType={element.get('startType')!r}: expected one of {START_TYPES}")
        paused = element.get(_XC + "paused") is not None and self.attribute(element, _XC + "paused", values.parse_bool)
        schedules: list[Schedule] = []
        disabled: list[DisabledSchedule] = []
        positional: list[ParameterValue] = []
        for child in _elements(element):
            if child.tag == _S + "schedule":
                for item in self.schedules(child):
                    (disabled if isinstance(item, DisabledSchedule) else schedules).append(item)  # type: ignore[arg-type]
            elif child.tag == _S + "parameters":
                positional.extend(self.positional(child))
            elif child.tag.startswith(_XC):
                raise self.fail(child, f"unexpected {_describe(child.tag)} directly in <{_JOB}>")
            # Anything else (e.g. a <schedule> in no namespace) SanteDB ignores, and so do we.
        entry = ScheduleEntry(
            type_name=type_name,
            start_type=start_type,
            schedules=tuple(schedules),
            paused=paused,
            positional_parameters=tuple(positional),
            disabled=tuple(disabled),
            element=_element_bytes(element),
            line=_line(element.sourceline),
            santedb_view=_santedb_view(element),
            xcron_parts=_has_xcron_parts(element),
        )
        object.__setattr__(entry, "element_trusted", True)  # it was just read from this very element
        return entry

    def opaque(self, element: etree._Element, error: ScheduleFileError) -> ScheduleEntry:
        """An entry of a job this server does not run that xcron cannot read: kept exactly as written."""
        return ScheduleEntry(
            type_name=(element.get("type") or "").strip(),
            start_type=(element.get("startType") or "immediate").strip().lower(),
            schedules=(),
            element=_element_bytes(element),
            line=_line(element.sourceline),
            santedb_view=_santedb_view(element),
            xcron_parts=_has_xcron_parts(element),
            unreadable=str(error.reason),
        )

    def schedules(self, element: etree._Element) -> Iterator[Schedule | DisabledSchedule]:
        for child in _elements(element):
            if child.tag in (_S + "add", _XC + "cron"):
                yield self.schedule(child)
            elif child.tag.startswith(_XC):
                raise self.fail(child, f"unexpected {_describe(child.tag)} in <schedule>; expected <add> or <xc:cron>")

    def disable(self, element: etree._Element, reason: str) -> DisabledSchedule:
        return DisabledSchedule(line=_line(element.sourceline), reason=reason, element=_element_bytes(element))

    def schedule(self, element: etree._Element) -> Schedule | DisabledSchedule:
        """One schedule, read as SanteDB reads it on a host in the schedule's zone.

        What SanteDB's serializer refuses is a ScheduleFileError; what it accepts but xcron cannot run
        (interval="0", a stop not after the start) is a DisabledSchedule.
        """
        self.check_xc_attributes(element, _SCHEDULE_ATTRIBUTES)
        zone_name = (element.get(_XC + "timeZone") or "").strip()
        zone: ZoneInfo = self.default_zone
        if zone_name:
            zone = self.attribute(element, _XC + "timeZone", values.load_zone)
        if element.get("start") is None:
            raise self.fail(element, f"{_describe(element.tag)} needs a start attribute (an xs:dateTime)")
        written: values.XsDateTime = self.attribute(element, "start", values.parse_xs_datetime)
        start = written.instant(zone, santedb=True)
        end = None
        if element.get("stop") is not None:
            stop: values.XsDateTime = self.attribute(element, "stop", values.parse_xs_datetime)
            end = None if stop.is_max_value else stop.instant(zone, santedb=True)
        wall = written.local_wall(zone)
        spec = self.spec(element, wall.time().replace(fold=0))
        if isinstance(spec, IntervalSpec) and spec.every < timedelta(seconds=1):
            return self.disable(
                element,
                f"interval={element.get('interval')!r}: SanteDB accepts it but xcron runs intervals of at least "
                "1 second; this schedule is disabled",
            )
        if isinstance(spec, CalendarSpec):
            start = self.calendar_start(element, spec, written, start, zone)
        elif element.get(_XC + "start") is not None:
            raise self.fail(element, f"xc:start is only used on calendar schedules, not on {_describe(element.tag)}")
        if end is not None and end <= start:
            stop_text, begin = element.get("stop"), element.get("start")
            return self.disable(
                element,
                f"stop={stop_text!r} is not after start={begin!r}, so it never fires (in SanteDB neither); "
                "this schedule is disabled",
            )
        return Schedule(
            spec=spec,
            start=start,
            end=end,
            time_zone=zone_name,
            parameters=self.parameters(element),
            **self.policies(element),
        )

    def calendar_start(
        self,
        element: etree._Element,
        spec: CalendarSpec,
        written: values.XsDateTime,
        start: datetime,
        zone: ZoneInfo,
    ) -> datetime:
        """The first instant a calendar may fire, as SanteDB's AppliesTo decides.

        With days SanteDB never fires on the date written in start (`refDate.Date > StartTime`), so the
        schedule starts at midnight after it. xcron writes the day before the first firing there and
        its own start in xc:start; while start is still what xcron wrote for xc:start, xc:start is the
        start. Otherwise start was edited (by hand or in SanteDB): it wins.
        """
        if element.get(_XC + "start") is not None:
            exact: datetime = self.attribute(element, _XC + "start", lambda text: values.parse_datetime(text, zone))
            try:
                expected = santedb_calendar_start(spec, exact, zone)
            except ValueError:
                expected = None
            if expected == written.local_wall(zone):
                return exact
        if not spec.days or written.is_min_value:
            return start
        next_day = written.local_wall(zone).date() + timedelta(days=1) if written.wall.year < 9999 else None
        if next_day is None:
            return values.NO_END
        return values.XsDateTime(datetime.combine(next_day, time()), "").instant(zone)

    def spec(self, element: etree._Element, wall_start: time) -> IntervalSpec | CalendarSpec | CronSpec:
        if element.tag == _XC + "cron":
            return CronSpec(expression=self.attribute(element, "expression", _parse_cron))
        kind = (element.get("type") or "scheduled").strip()
        if kind == "interval":
            if element.get("interval") is None:
                raise self.fail(element, '<add type="interval"> needs an interval attribute (whole seconds)')
            seconds = self.attribute(
                element, "interval", lambda t: values.parse_int(t, minimum=values.INT32_MIN, maximum=values.INT32_MAX)
            )
            return IntervalSpec(every=timedelta(seconds=seconds))
        if kind == "scheduled":
            days = self.attribute(element, "days", values.parse_days)
            return CalendarSpec(days=days, time_of_day=wall_start)
        raise self.fail(element, f"<add> type={kind!r}: unknown schedule type (expected scheduled or interval)")

    def policies(self, element: etree._Element) -> dict[str, Any]:
        found: dict[str, Any] = {}
        if element.get(_XC + "misfire") is not None:
            found["misfire_policy"] = self.attribute(element, _XC + "misfire", lambda t: _enum(MisfirePolicy, t))
        if element.get(_XC + "misfireGrace") is not None:
            seconds = self.attribute(
                element, _XC + "misfireGrace", lambda t: values.parse_int(t, minimum=0, maximum=10**9)
            )
            found["misfire_grace"] = timedelta(seconds=seconds)
        if element.get(_XC + "maxCatchup") is not None:
            found["max_catchup_runs"] = self.attribute(
                element,
                _XC + "maxCatchup",
                lambda t: values.parse_int(t, minimum=0, maximum=values.INT32_MAX),
            )
        if element.get(_XC + "overlap") is not None:
            found["overlap_policy"] = self.attribute(element, _XC + "overlap", lambda t: _enum(OverlapPolicy, t))
        return found

    def parameters(self, element: etree._Element) -> dict[str, ParameterValue]:
        found: dict[str, ParameterValue] = {}
        for child in _elements(element):
            if child.tag != _XC + "param":
                if child.tag.startswith(_XC):
                    raise self.fail(child, f"unexpected {_describe(child.tag)}; expected <xc:param>")
                continue
            name = child.get("name") or ""
            if not name.strip():
                raise self.fail(child, "<xc:param> needs a name attribute")
            if name in found:
                raise self.fail(child, f"<xc:param> name={name!r} appears twice")
            kind = (child.get("type") or ParameterType.STRING).strip()
            try:
                found[name] = values.parse_parameter(kind, _text(child))
            except ValueError as error:
                raise self.fail(child, f"<xc:param name={name!r} type={kind!r}>: {error}") from None
        return found

    def positional(self, element: etree._Element) -> Iterator[ParameterValue]:
        for child in _elements(element):
            qname = etree.QName(child)
            if qname.namespace != SANTEDB_NS:
                continue  # SanteDB's serializer ignores foreign elements here too
            kind = _POSITIONAL_TAGS_READ.get(qname.localname)
            if kind is None:
                raise self.fail(child, f"<parameters> item <{qname.localname}>: expected <int>, <string> or <bool>")
            text = _text(child)
            try:
                if kind is ParameterType.INT:
                    yield values.parse_int(text, minimum=values.INT32_MIN, maximum=values.INT32_MAX)
                else:
                    yield values.parse_parameter(kind, text)
            except ValueError as error:
                raise self.fail(
                    child, f"<parameters> item <{qname.localname}>{text}</{qname.localname}>: {error}"
                ) from None


def _enum(kind: type[MisfirePolicy] | type[OverlapPolicy], text: str) -> Any:
    try:
        return kind(text.strip())
    except ValueError:
        raise ValueError(f"expected one of {', '.join(member.value for member in kind)}") from None


# What the scheduler accepts besides 5 or 6 fields; random (R) and hashed (H) items it refuses.
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
    try:
        valid = bool(croniter.is_valid(expression))
    except Exception:  # croniter raises assorted errors for odd input
        valid = False
    if not valid:
        raise ValueError("not a valid cron expression (e.g. '0 3 * * *' for 03:00 daily)")
    return expression


def _element_bytes(element: etree._Element) -> bytes:
    """The element as serialized inside an xcron root: the root's own declarations are left out.

    lxml copies every in-scope namespace declaration onto a serialized sub-element; dropping the
    ones the written root declares anyway makes read -> write -> read give identical bytes.
    """
    raw = etree.tostring(element, encoding="utf-8", with_tail=False)
    end = raw.index(b">")  # lxml escapes ">" in attribute values, so this ends the start tag
    head = raw[:end]
    for declaration in _ROOT_DECLARATIONS:
        head = head.replace(declaration, b"", 1)
    return head + raw[end:]


def _santedb_view(element: etree._Element) -> tuple[Any, ...]:
    """The entry as SanteDB's JobItemConfiguration holds it (what survives its re-save), normalised so
    that SanteDB's re-serialisation of the same values compares equal."""

    def moment(text: str | None) -> Any:
        if text is None:
            return None
        try:
            parsed = values.parse_xs_datetime(text)
        except ValueError:
            return text.strip()
        if parsed.offset in ("", "Z") or parsed.is_min_value or parsed.is_max_value:
            return (parsed.offset, parsed.wall)
        return ("instant", parsed.instant(ZoneInfo("UTC")))

    adds: list[tuple[Any, ...]] = []
    parameters: list[tuple[str, str]] = []
    for child in _elements(element):
        if child.tag == _S + "schedule":
            for add in _elements(child):
                if add.tag != _S + "add":
                    continue
                days = add.get("days")
                adds.append(
                    (
                        (add.get("type") or "scheduled").strip(),
                        None if days is None else frozenset(day.lower() for day in days.split()),
                        moment(add.get("start")),
                        moment(add.get("stop")),
                        (add.get("interval") or "").strip() or None,
                    )
                )
        elif child.tag == _S + "parameters":
            parameters.extend(
                (etree.QName(item).localname, _text(item).strip())
                for item in _elements(child)
                if etree.QName(item).namespace == SANTEDB_NS
            )
    return (
        (element.get("type") or "").strip(),
        (element.get("startType") or "immediate").strip().lower(),
        tuple(adds),
        tuple(parameters),
    )


def _has_xcron_parts(element: etree._Element) -> bool:
    return any(
        (isinstance(node.tag, str) and node.tag.startswith(_XC)) or any(str(key).startswith(_XC) for key in node.attrib)
        for node in element.iter()
    )


def _scan_layout(data: bytes) -> _Layout:
    """Byte offsets of the root's children, found with expat (lxml gives lines, not offsets)."""
    bom = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    parser = expat.ParserCreate()
    spans: list[tuple[int, int]] = []
    depth = 0
    opened = 0
    close_at = -1
    self_closing = False

    def tag_end(at: int) -> int:
        """The offset just past the tag starting at `at` (quotes skipped)."""
        quote = b""
        for index in range(at, len(data)):
            char = data[index : index + 1]
            if quote:
                if char == quote:
                    quote = b""
            elif char in (b'"', b"'"):
                quote = char
            elif char == b">":
                return index + 1
        raise ValueError("unterminated tag")

    root_opened = 0

    def start(_name: str, _attributes: dict[str, str]) -> None:
        nonlocal depth, opened, root_opened
        depth += 1
        if depth == 1:
            root_opened = parser.CurrentByteIndex + bom
        elif depth == 2:
            opened = parser.CurrentByteIndex + bom

    def end(_name: str) -> None:
        nonlocal depth, close_at, self_closing
        at = parser.CurrentByteIndex + bom
        began = opened if depth == 2 else root_opened
        head = tag_end(began)
        empty = at == head and data[head - 2 : head] == b"/>"  # expat reports an empty element after it
        if depth == 2:
            spans.append((began, at if empty else tag_end(at)))
        elif depth == 1:
            close_at, self_closing = (head - 2, True) if empty else (at, False)
        depth -= 1

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.Parse(data[bom:], True)
    indent = b"  "
    if spans:
        line_start = data.rfind(b"\n", 0, spans[0][0]) + 1
        candidate = data[line_start : spans[0][0]]
        if candidate and not candidate.strip(b" \t"):
            indent = candidate
    head_end = data.find(b">", data.find(b"<" + _ROOT.encode()))
    return _Layout(
        spans=tuple(spans),
        close_at=close_at,
        self_closing=self_closing,
        newline=b"\r\n" if b"\r\n" in data else b"\n",
        indent=indent,
        declares_xc=f'xmlns:xc="{XC_NS}"'.encode() in data[:head_end],
        spaced_empty=b" />" in data,
    )


def parse_schedule_xml(
    data: bytes, *, source: str, default_zone: str, known: Callable[[str], bool] | None = None
) -> ScheduleDocument:
    """The whole document or a ScheduleFileError; never part of a document.

    With `known`, an entry whose type known() rejects (a job this server does not run) is never a
    reason to refuse the file: what xcron cannot read of it is kept exactly as written.
    """
    reader = _Reader(source, values.load_zone(default_zone))
    root = _parse_root(data, source)
    entries = []
    for child in _elements(root):
        try:
            entries.append(reader.entry(child))
        except ScheduleFileError as error:
            type_name = (child.get("type") or "").strip() if child.tag == _JOB else ""
            if known is None or not type_name or known(type_name):
                raise
            entries.append(reader.opaque(child, error))
    layout = _scan_layout(data)
    placed = tuple(dataclasses.replace(e, span=span) for e, span in zip(entries, layout.spans, strict=True))
    for entry in placed:
        object.__setattr__(entry, "element_trusted", entry.unreadable is None)
    return ScheduleDocument(placed, data, layout)


def load_schedule_file(
    path: Path, *, default_zone: str, known: Callable[[str], bool] | None = None
) -> ScheduleDocument:
    """The document in `path`; a missing file is an empty document (no schedules yet)."""
    try:
        file = path.open("rb")
    except FileNotFoundError:
        return ScheduleDocument(())
    with file:
        size = os.fstat(file.fileno()).st_size
        if size > MAX_FILE_BYTES:
            raise ScheduleFileError(str(path), None, f"file is {size} bytes, over the {MAX_FILE_BYTES} byte limit")
        data = file.read(MAX_FILE_BYTES + 1)
    return parse_schedule_xml(data, source=str(path), default_zone=default_zone, known=known)


# -- writing -------------------------------------------------------------------------------------


def _set_policies(element: etree._Element, schedule: Schedule) -> None:
    """The xc: attributes, only where they differ from the defaults, so plain files stay plain."""
    if schedule.time_zone:
        element.set(_XC + "timeZone", schedule.time_zone)
    if schedule.misfire_policy is not MisfirePolicy.RUN_ONCE:
        element.set(_XC + "misfire", MisfirePolicy(schedule.misfire_policy).value)
    if schedule.misfire_grace is not None:
        if schedule.misfire_grace % timedelta(seconds=1) or schedule.misfire_grace < timedelta():
            raise ValueError(f"misfire grace must be whole non-negative seconds, got {schedule.misfire_grace}")
        element.set(_XC + "misfireGrace", str(schedule.misfire_grace // timedelta(seconds=1)))
    if schedule.max_catchup_runs != DEFAULT_MAX_CATCHUP_RUNS:
        element.set(_XC + "maxCatchup", str(schedule.max_catchup_runs))
    if schedule.overlap_policy is not OverlapPolicy.SKIP:
        element.set(_XC + "overlap", OverlapPolicy(schedule.overlap_policy).value)
    for name, value in schedule.parameters.items():
        kind, text = values.format_parameter(value)
        param = etree.SubElement(element, _XC + "param", name=name, type=kind.value)
        param.text = text or None  # <x/> as lxml re-serializes "", so kept entries match


def _wall_instant(day: date, time_of_day: time, zone: ZoneInfo) -> datetime:
    """When the clock in `zone` shows `time_of_day` on `day`, as xcron's triggers fire it: the first
    pass of a repeated time; a skipped time at the end of the gap (UTC, aware)."""
    local = datetime.combine(day, time_of_day.replace(tzinfo=None, fold=0), tzinfo=zone)
    instant = local.astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) == local.replace(tzinfo=None):
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
    if start < _EARLIEST:
        return date.min, None
    try:
        day = start.astimezone(zone).date()
        for _ in range(10):
            if not spec.days or day.isoweekday() in spec.days:
                instant = _wall_instant(day, spec.time_of_day, zone)
                if instant >= start:
                    return day, instant
            day += timedelta(days=1)
    except OverflowError:
        pass
    raise ScheduleWriteError("start_time", "the calendar never fires before the end of time (9999-12-31)")


def santedb_calendar_start(spec: CalendarSpec, start: datetime, zone: ZoneInfo) -> datetime:
    """The wall time xcron writes in a calendar's start (no offset: SanteDB takes it as written, in
    any host zone, where "Z" would be compared as a local time and an offset converted).

    SanteDB takes the time of day from it. With days, SanteDB fires only on dates after the one in
    start, so it is the day before the first firing; without days, the date of the one firing."""
    day, _ = _first_calendar_firing(spec, start, zone)
    if spec.days and day > date.min:
        day -= timedelta(days=1)
    return datetime.combine(day, spec.time_of_day.replace(tzinfo=None, fold=0))


def _add_schedule(parent: etree._Element, schedule: Schedule, default_zone: ZoneInfo) -> None:
    zone = values.load_zone(schedule.time_zone) if schedule.time_zone else default_zone
    spec = schedule.spec
    if isinstance(spec, CronSpec):
        element = etree.SubElement(parent, _XC + "cron", expression=_parse_cron(spec.expression))
    else:
        element = etree.SubElement(parent, _S + "add")
        element.set("type", "interval" if isinstance(spec, IntervalSpec) else "scheduled")
        if isinstance(spec, CalendarSpec) and spec.days:
            element.set("days", values.format_days(spec.days))
    if isinstance(spec, CalendarSpec):
        _, first = _first_calendar_firing(spec, schedule.start, zone)
        if schedule.end is not None and first is not None and schedule.end < first:
            raise ScheduleWriteError(
                "end_time", f"schedule ends ({schedule.end.isoformat()}) before it first fires ({first.isoformat()})"
            )
        element.set("start", values.format_wall(santedb_calendar_start(spec, schedule.start, zone)))
    else:
        element.set("start", values.format_datetime(schedule.start, zone, santedb=True))
    if schedule.end is not None:
        element.set("stop", values.format_datetime(schedule.end, zone, santedb=True))
    if isinstance(spec, CalendarSpec):  # xcron's own start, exact; SanteDB's start is derived from it
        element.set(_XC + "start", values.format_datetime(schedule.start, zone))
    if isinstance(spec, IntervalSpec):
        seconds, rest = divmod(spec.every, timedelta(seconds=1))
        if rest or not 1 <= seconds <= values.INT32_MAX:
            raise ScheduleWriteError(
                "interval.interval", f"an interval must be a positive whole number of seconds, got {spec.every}"
            )
        element.set("interval", str(seconds))
    _set_policies(element, schedule)


def _add_entry(root: etree._Element, entry: ScheduleEntry, default_zone: ZoneInfo) -> None:
    if not entry.type_name.strip():
        raise ValueError("a schedule entry needs a type name")
    if entry.start_type not in START_TYPES:
        raise ValueError(f"startType {entry.start_type!r} is not one of {START_TYPES}")
    job = etree.SubElement(root, _JOB, type=entry.type_name, startType=entry.start_type)
    if entry.paused:
        job.set(_XC + "paused", "true")
    schedule = etree.SubElement(job, _S + "schedule", nsmap={None: SANTEDB_NS})  # type: ignore[dict-item]
    for item in entry.schedules:
        _add_schedule(schedule, item, default_zone)
    for disabled in entry.disabled:  # kept as written: SanteDB may still run it
        if disabled.element:
            schedule.append(etree.fromstring(_wrap(disabled.element), _parser())[0])
    if entry.positional_parameters:
        parameters = etree.SubElement(job, _S + "parameters", nsmap={None: SANTEDB_NS})  # type: ignore[dict-item]
        for value in entry.positional_parameters:
            kind, text = values.format_parameter(value)
            fits = not isinstance(value, int) or values.INT32_MIN <= value <= values.INT32_MAX
            if not fits:
                raise ValueError(f"positional parameter {value} does not fit SanteDB's 32-bit <int>")
            tag = kind.value if kind in _POSITIONAL_TAGS.values() else "string"
            etree.SubElement(parameters, _S + tag).text = text or None


def check_writable(schedule: Schedule, *, default_zone: str) -> None:
    """ScheduleWriteError (naming the field) when `schedule` cannot be written to xcron.xml as it is."""
    entry = ScheduleEntry(type_name="Check", start_type="schedule", schedules=(schedule,))
    try:
        data = render_schedule_xml(ScheduleDocument((entry,)), default_zone=default_zone)
        (back,) = parse_schedule_xml(data, source="<check>", default_zone=default_zone).entries
    except ScheduleWriteError:
        raise
    except (ValueError, OverflowError) as exc:
        raise ScheduleWriteError("start_time", f"cannot be written to xcron.xml: {exc}") from None
    if back.schedules != (schedule,):
        raise ScheduleWriteError("start_time", "does not read back from xcron.xml as given (out of range)")


def _wrap(element: bytes) -> bytes:
    """An element serialized by _element_bytes inside a root that declares what it leaves out."""
    return b"<%s%s>%s</%s>" % (_ROOT.encode(), b"".join(_ROOT_DECLARATIONS), element, _ROOT.encode())


def _unchanged(entry: ScheduleEntry, default_zone: str) -> bool:
    """Whether the entry's fields are still what its element says (then the element is written).

    Entries change through ScheduleDocument.replace, which drops the element; one still holding
    its element is the one read. Only entries built by hand with an element are checked by
    parsing it again."""
    if entry.element is None:
        return False
    if entry.element_trusted:
        return True
    wrapped = _wrap(entry.element)
    try:
        (original,) = parse_schedule_xml(wrapped, source="<entry>", default_zone=default_zone).entries
    except (ScheduleFileError, ValueError):
        return False
    return original == entry


def render_schedule_xml(
    doc: ScheduleDocument, *, default_zone: str, known: Callable[[str], bool] | None = None
) -> bytes:
    """The file's bytes. Unknown (known() False) and unchanged entries keep their original text.

    A document read from a file is saved as that file with only the changed entries rewritten: every
    other byte (declaration, BOM, line ends, comments, SanteDB's spacing and attribute order) stays.
    `default_zone` is the zone of schedules with time_zone "": their times are written as wall
    times there. ValueError when a value cannot be written in a form that reads back the same.
    """
    zone = values.load_zone(default_zone)

    def keeps_text(entry: ScheduleEntry) -> bool:
        unknown = known is not None and not known(entry.type_name)
        return entry.element is not None and (unknown or _unchanged(entry, default_zone))

    if doc.original is not None and doc.layout is not None:
        return _splice(doc, doc.original, doc.layout, zone, keeps_text)
    root = etree.Element(_ROOT, nsmap=_ROOT_NSMAP)
    originals: dict[bytes, bytes] = {}
    for entry in doc.entries:
        if entry.element is not None and keeps_text(entry):
            placeholder = f"xcron-original-{len(originals)}"
            root.append(etree.Comment(placeholder))
            originals[f"<!--{placeholder}-->".encode()] = entry.element
        else:
            _add_entry(root, entry, zone)
    etree.indent(root, space="  ")
    body = etree.tostring(root, encoding="utf-8", xml_declaration=False)
    # Placeholders are the only comments xcron writes, and text never contains a raw "<!--".
    body = re.sub(rb"<!--xcron-original-\d+-->", lambda match: originals[match.group(0)], body)
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + body + b"\n"


def _fragment(entry: ScheduleEntry, zone: ZoneInfo, layout: _Layout) -> bytes:
    """One entry's text for a spliced file: its indentation, line ends and empty-element style."""
    root = etree.Element(_ROOT, nsmap={"xc": XC_NS})
    _add_entry(root, entry, zone)
    etree.indent(root, space=layout.indent.decode())
    text = etree.tostring(root[0], encoding="utf-8", with_tail=False)
    if layout.declares_xc:
        end = text.index(b">")
        text = text[:end].replace(f' xmlns:xc="{XC_NS}"'.encode(), b"", 1) + text[end:]
    if layout.spaced_empty:
        text = re.sub(rb"(?<! )/>", b" />", text)
    return text.replace(b"\n", layout.newline)


def _blank_before(data: bytes, at: int) -> int:
    """Where the run of blanks (spaces, tabs, line ends) just before `at` begins."""
    while at > 0 and data[at - 1 : at] in (b" ", b"\t", b"\r", b"\n"):
        at -= 1
    return at


def _splice(
    doc: ScheduleDocument,
    original: bytes,
    layout: _Layout,
    zone: ZoneInfo,
    keeps_text: Callable[[ScheduleEntry], bool],
) -> bytes:
    by_span = {entry.span: entry for entry in doc.entries if entry.span is not None}
    out = bytearray()
    position = 0
    for span in layout.spans:
        entry = by_span.get(span)
        if entry is None:  # removed: its line goes with it
            out += original[position : _blank_before(original, span[0])]
        else:
            out += original[position : span[0]]
            out += original[span[0] : span[1]] if keeps_text(entry) else _fragment(entry, zone, layout)
        position = span[1]
    added = [entry for entry in doc.entries if entry.span is None or entry.span not in layout.spans]
    if added:
        texts = b"".join(layout.newline + layout.indent + _fragment(entry, zone, layout) for entry in added)
        if layout.self_closing:
            out += original[position : _blank_before(original, layout.close_at)]
            out += b">" + texts + layout.newline + f"</{_ROOT}>".encode()
            position = layout.close_at + 2
        else:
            cut = max(position, _blank_before(original, layout.close_at))
            out += original[position:cut] + texts
            position = cut
    out += original[position:]
    return bytes(out)


def save_schedule_file(
    path: Path, doc: ScheduleDocument, *, default_zone: str, known: Callable[[str], bool] | None = None
) -> ScheduleDocument:
    """Atomically replaces `path` (temp file, fsync, rename, fsync the folder); returns the document as
    now written (its original bytes are the file's).

    A crash or a failed write leaves the old file intact (SanteDB truncates and rewrites in
    place). The new file keeps the old one's mode, owner and group, so SanteDB's service account can
    still read it. OSError passes through unchanged so callers can report ENOSPC or EACCES.
    """
    data = render_schedule_xml(doc, default_zone=default_zone, known=known)
    # Never write what we cannot read.
    written = parse_schedule_xml(data, source=str(path), default_zone=default_zone, known=known)
    write_atomically(path, data)
    return written


def temp_prefix(target: Path) -> str:
    """Prefix of the temp files of atomic saves of `target` (start-up removes stale ones: stores.datadir)."""
    return f".{target.name}."


def write_atomically(path: Path, data: bytes) -> None:
    target = Path(os.path.realpath(path))
    try:
        status: os.stat_result | None = target.stat()
    except FileNotFoundError:
        status = None
    temp = tempfile.NamedTemporaryFile(dir=target.parent, delete=False, prefix=temp_prefix(target))  # noqa: SIM115
    try:
        with temp:
            temp.write(data)
            temp.flush()
            if status is not None:
                _keep_owner(temp.fileno(), status, target)
            os.fchmod(temp.fileno(), stat.S_IMODE(status.st_mode) if status is not None else 0o644)
            os.fsync(temp.fileno())
        os.replace(temp.name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp.name)
        raise
    _fsync_directory(target.parent)


def _keep_owner(descriptor: int, status: os.stat_result, target: Path) -> None:
    """Gives the new file the old one's owner and group; without the right to, keeps what it can."""
    if (status.st_uid, status.st_gid) == (os.geteuid(), os.getegid()):
        return
    try:
        os.fchown(descriptor, status.st_uid, status.st_gid)
        return
    except PermissionError:
        pass
    with contextlib.suppress(PermissionError):
        os.fchown(descriptor, -1, status.st_gid)  # a member of the group may still set the group
    logging.getLogger(__name__).warning(
        "%s belonged to uid %d gid %d; this process may not give the new file that owner",
        target,
        status.st_uid,
        status.st_gid,
    )


def _fsync_directory(folder: Path) -> None:
    """Makes the rename durable; filesystems that cannot fsync a directory are tolerated."""
    descriptor = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(descriptor)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(descriptor)


__all__ = [
    "MAX_FILE_BYTES",
    "NO_END_FLOOR",
    "SANTEDB_NS",
    "XC_NS",
    "ScheduleDocument",
    "ScheduleEntry",
    "ScheduleFileError",
    "ScheduleWriteError",
    "check_writable",
    "load_schedule_file",
    "parse_schedule_xml",
    "render_schedule_xml",
    "save_schedule_file",
]
