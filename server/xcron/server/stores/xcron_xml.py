"""Reads and writes xcron.xml, SanteDB's schedule file, so both tools can share it.

The file keeps SanteDB's layout (see FORMAT.md). What SanteDB cannot express lives in the
`urn:xcron:schedule:v1` namespace, where SanteDB's XmlSerializer ignores it: zones and policies as
`xc:` attributes on `<add>`, named parameters as `<xc:param>` children, cron schedules as
`<xc:cron>` elements inside `<schedule>`, and a job-level `xc:paused`. SanteDB takes a calendar
schedule's time of day from `start`, so xcron writes its first firing there and, when that differs,
the schedule's own start as `xc:start`. Entries xcron does not change are written back as read.

Reading is strict: the server must not start (or reload) on a file it only partly understands, so
every problem is a ScheduleFileError naming the line and the attribute.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import os
import re
import stat
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any
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
TEMP_PREFIX = ".xcron.xml."
"""Prefix of the temp files of atomic saves (start-up removes stale ones: stores.datadir)."""
_SCHEDULE_ATTRIBUTES = ("start", "timeZone", "misfire", "misfireGrace", "maxCatchup", "overlap")
_POSITIONAL_TAGS = {"int": ParameterType.INT, "string": ParameterType.STRING, "bool": ParameterType.BOOL}
_POSITIONAL_TAGS_READ = {**_POSITIONAL_TAGS, "double": ParameterType.DOUBLE}


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
    element: bytes | None = field(default=None, compare=False, repr=False)
    element_trusted: bool = field(default=False, init=False, compare=False, repr=False)
    """Set by the reader only. dataclasses.replace() resets it, so an edited copy is checked again."""


def _class_path(type_name: str) -> str:
    """The part of a .NET type name before the assembly, without whitespace."""
    return "".join(type_name.split(",", 1)[0].split())


@dataclass(frozen=True)
class ScheduleDocument:
    entries: tuple[ScheduleEntry, ...]

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
                return ScheduleDocument((*self.entries[:index], entry, *self.entries[index + 1 :]))
        return ScheduleDocument((*self.entries, entry))


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
        positional: list[ParameterValue] = []
        for child in _elements(element):
            if child.tag == _S + "schedule":
                schedules.extend(self.schedules(child))
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
            element=_element_bytes(element),
        )
        object.__setattr__(entry, "element_trusted", True)  # it was just read from this very element
        return entry

    def schedules(self, element: etree._Element) -> Iterator[Schedule]:
        for child in _elements(element):
            if child.tag in (_S + "add", _XC + "cron"):
                yield self.schedule(child)
            elif child.tag.startswith(_XC):
                raise self.fail(child, f"unexpected {_describe(child.tag)} in <schedule>; expected <add> or <xc:cron>")

    def schedule(self, element: etree._Element) -> Schedule:
        self.check_xc_attributes(element, _SCHEDULE_ATTRIBUTES)
        zone_name = (element.get(_XC + "timeZone") or "").strip()
        zone: ZoneInfo = self.default_zone
        if zone_name:
            zone = self.attribute(element, _XC + "timeZone", values.load_zone)
        if element.get("start") is None:
            raise self.fail(element, f"{_describe(element.tag)} needs a start attribute (an xs:dateTime)")
        start = self.attribute(element, "start", lambda text: values.parse_datetime(text, zone))
        end = None
        if element.get("stop") is not None:
            end = self.attribute(element, "stop", lambda text: values.parse_datetime(text, zone))
            if end < start:
                stop, begin = element.get("stop"), element.get("start")
                raise self.fail(element, f"{_describe(element.tag)} stop={stop!r} is before start={begin!r}")
        spec = self.spec(element, start.astimezone(zone).time().replace(fold=0))
        if element.get(_XC + "start") is not None:
            start = self.exact_start(element, spec, start, zone)
        return Schedule(
            spec=spec,
            start=start,
            end=end,
            time_zone=zone_name,
            parameters=self.parameters(element),
            **self.policies(element),
        )

    def exact_start(
        self,
        element: etree._Element,
        spec: IntervalSpec | CalendarSpec | CronSpec,
        start: datetime,
        zone: ZoneInfo,
    ) -> datetime:
        """A calendar schedule's own start, kept in xc:start when SanteDB's start is its first firing.

        If start no longer is the first firing after xc:start, start was edited by hand: it wins.
        """
        if not isinstance(spec, CalendarSpec):
            raise self.fail(element, f"xc:start is only used on calendar schedules, not on {_describe(element.tag)}")
        exact: datetime = self.attribute(element, _XC + "start", lambda text: values.parse_datetime(text, zone))
        return exact if values.next_wall_time(exact, spec.time_of_day, zone) == start else start

    def spec(self, element: etree._Element, wall_start: time) -> IntervalSpec | CalendarSpec | CronSpec:
        if element.tag == _XC + "cron":
            return CronSpec(expression=self.attribute(element, "expression", _parse_cron))
        kind = (element.get("type") or "scheduled").strip()
        if kind == "interval":
            if element.get("interval") is None:
                raise self.fail(element, '<add type="interval"> needs an interval attribute (whole seconds)')
            seconds = self.attribute(
                element, "interval", lambda t: values.parse_int(t, minimum=1, maximum=values.INT32_MAX)
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


def parse_schedule_xml(data: bytes, *, source: str, default_zone: str) -> ScheduleDocument:
    """The whole document or a ScheduleFileError; never part of a document."""
    reader = _Reader(source, values.load_zone(default_zone))
    root = _parse_root(data, source)
    return ScheduleDocument(tuple(reader.entry(child) for child in _elements(root)))


def load_schedule_file(path: Path, *, default_zone: str) -> ScheduleDocument:
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
    return parse_schedule_xml(data, source=str(path), default_zone=default_zone)


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


def _add_schedule(parent: etree._Element, schedule: Schedule, default_zone: ZoneInfo) -> None:
    zone = values.load_zone(schedule.time_zone) if schedule.time_zone else default_zone
    spec = schedule.spec
    start = schedule.start
    if isinstance(spec, CalendarSpec):
        # SanteDB takes the time of day from start, so start must be an instant reading that time;
        # xcron's own start goes into xc:start, so the schedule (and its key) reads back unchanged.
        start = values.next_wall_time(start, spec.time_of_day, zone)
    if schedule.end is not None and schedule.end < start:
        raise ValueError(f"schedule ends ({schedule.end.isoformat()}) before it first fires ({start.isoformat()})")
    if isinstance(spec, CronSpec):
        element = etree.SubElement(parent, _XC + "cron", expression=_parse_cron(spec.expression))
    else:
        element = etree.SubElement(parent, _S + "add")
        element.set("type", "interval" if isinstance(spec, IntervalSpec) else "scheduled")
        if isinstance(spec, CalendarSpec) and spec.days:
            element.set("days", values.format_days(spec.days))
    element.set("start", values.format_datetime(start, zone))
    if schedule.end is not None:
        element.set("stop", values.format_datetime(schedule.end, zone))
    if start != schedule.start:  # a calendar start moved to its first firing: keep the real one
        element.set(_XC + "start", values.format_datetime(schedule.start, zone))
    if isinstance(spec, IntervalSpec):
        seconds, rest = divmod(spec.every, timedelta(seconds=1))
        if rest or not 1 <= seconds <= values.INT32_MAX:
            raise ValueError(f"an interval must be a positive whole number of seconds, got {spec.every}")
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
    if entry.positional_parameters:
        parameters = etree.SubElement(job, _S + "parameters", nsmap={None: SANTEDB_NS})  # type: ignore[dict-item]
        for value in entry.positional_parameters:
            kind, text = values.format_parameter(value)
            fits = not isinstance(value, int) or values.INT32_MIN <= value <= values.INT32_MAX
            if not fits:
                raise ValueError(f"positional parameter {value} does not fit SanteDB's 32-bit <int>")
            tag = kind.value if kind in _POSITIONAL_TAGS.values() else "string"
            etree.SubElement(parameters, _S + tag).text = text or None


def _unchanged(entry: ScheduleEntry, default_zone: str) -> bool:
    """Whether the entry's fields are still what its element says (then the element is written).

    Entries change through ScheduleDocument.replace, which drops the element; one still holding
    its element is the one read. Only entries built by hand with an element are checked by
    parsing it again."""
    if entry.element is None:
        return False
    if entry.element_trusted:
        return True
    wrapped = b"<%s%s>%s</%s>" % (_ROOT.encode(), b"".join(_ROOT_DECLARATIONS), entry.element, _ROOT.encode())
    try:
        (original,) = parse_schedule_xml(wrapped, source="<entry>", default_zone=default_zone).entries
    except (ScheduleFileError, ValueError):
        return False
    return original == entry


def render_schedule_xml(
    doc: ScheduleDocument, *, default_zone: str, known: Callable[[str], bool] | None = None
) -> bytes:
    """The file's bytes. Unknown (known() False) and unchanged entries keep their original element.

    `default_zone` is the zone of schedules with time_zone "": their times are written as wall
    times there. ValueError when a value cannot be written in a form that reads back the same.
    """
    zone = values.load_zone(default_zone)
    root = etree.Element(_ROOT, nsmap=_ROOT_NSMAP)
    originals: dict[bytes, bytes] = {}
    for entry in doc.entries:
        unknown = known is not None and not known(entry.type_name)
        if entry.element is not None and (unknown or _unchanged(entry, default_zone)):
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


def save_schedule_file(
    path: Path, doc: ScheduleDocument, *, default_zone: str, known: Callable[[str], bool] | None = None
) -> None:
    """Atomically replaces `path`: temp file, fsync, rename, fsync the folder.

    A crash or a failed write leaves the old file intact (SanteDB truncates and rewrites in
    place). OSError passes through unchanged so callers can report ENOSPC or EACCES.
    """
    data = render_schedule_xml(doc, default_zone=default_zone, known=known)
    parse_schedule_xml(data, source=str(path), default_zone=default_zone)  # never write what we cannot read
    target = Path(os.path.realpath(path))
    try:
        mode = stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        mode = 0o644
    temp = tempfile.NamedTemporaryFile(dir=target.parent, delete=False, prefix=TEMP_PREFIX)  # noqa: SIM115
    try:
        with temp:
            temp.write(data)
            temp.flush()
            os.fchmod(temp.fileno(), mode)
            os.fsync(temp.fileno())
        os.replace(temp.name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp.name)
        raise
    _fsync_directory(target.parent)


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
    "SANTEDB_NS",
    "XC_NS",
    "ScheduleDocument",
    "ScheduleEntry",
    "ScheduleFileError",
    "load_schedule_file",
    "parse_schedule_xml",
    "render_schedule_xml",
    "save_schedule_file",
]
