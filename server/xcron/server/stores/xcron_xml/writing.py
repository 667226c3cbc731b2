"""Writing xcron.xml: entries to text, spliced into the original bytes where there are some.

Entries are written as text directly (building lxml elements and serializing them cost most of a save).
The text is exactly what lxml gave for those elements before (tests compare the two): the attribute
order below, the indentation of etree.indent, `<x/>` for empty elements, lxml's escaping.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

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
from xcron.server.core.ports import (
    ScheduleDocument,
    ScheduleEntry,
    ScheduleFileError,
    ScheduleWriteError,
)
from xcron.server.stores import _xml_values as values
from xcron.server.stores.xcron_xml.common import (
    _JOB,
    _POSITIONAL_TAGS,
    _ROOT,
    _ROOT_DECLARATIONS,
    _ROOT_NSMAP,
    _S,
    SANTEDB_NS,
    START_TYPES,
    XC_NS,
    _first_calendar_firing,
    _Layout,
    _parse_cron,
    _parser,
    _santedb_calendar_wall,
)
from xcron.server.stores.xcron_xml.layout import _day_set, _written_moment
from xcron.server.stores.xcron_xml.reading import parse_schedule_xml

_DECLARATION = '<?xml version="1.0" encoding="utf-8"?>\n'
_ROOT_START = "<" + _ROOT + b"".join(_ROOT_DECLARATIONS).decode()
_XC_DECLARATION = f' xmlns:xc="{XC_NS}"'
_SCHEDULE = f'<schedule xmlns="{SANTEDB_NS}"'
_PARAMETERS = f'<parameters xmlns="{SANTEDB_NS}">'
_POSITIONAL_KINDS = frozenset(_POSITIONAL_TAGS.values())
_KIND_NAMES = {kind: kind.value for kind in ParameterType}  # an enum's .value is slow to get
_RUN_ONCE, _SKIP = MisfirePolicy.RUN_ONCE, OverlapPolicy.SKIP  # and so is a member of its class

# What lxml refuses in a string (it checks every value set on an element), and what it escapes.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_NOT_XML_MESSAGE = "All strings must be XML compatible: Unicode or ASCII, no NULL bytes or control characters"
_SPECIAL = re.compile('[\x00-\x1f&<>"\ud800-\udfff\ufffe\uffff]')
_ATTRIBUTE_ESCAPES = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\t": "&#9;", "\n": "&#10;", "\r": "&#13;"}
)
_TEXT_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})


def _escaped(value: str, escapes: dict[int, str]) -> str:
    """`value` as lxml serializes it (ValueError, as lxml raises, for what XML cannot hold)."""
    if _SPECIAL.search(value) is None:
        return value
    if _NOT_XML.search(value):
        value.encode()  # a lone surrogate: lxml's UnicodeEncodeError
        raise ValueError(_NOT_XML_MESSAGE)
    return value.translate(escapes)


def _attribute(value: str) -> str:
    return _escaped(value, _ATTRIBUTE_ESCAPES)


def _text(value: str) -> str:
    return _escaped(value, _TEXT_ESCAPES)


@dataclass(frozen=True)
class _Rendered:
    """What a save needs to know of an entry it wrote from its fields (instead of reading it back)."""

    schedule_elements: int  # <add> and <xc:cron> in its <schedule>
    positional: tuple[ParameterValue, ...]  # as the reader gives them back (<string> for what has no tag)
    santedb_view: tuple[Any, ...]
    xcron_parts: bool
    element: bytes | None  # as the reader serializes it; None when spliced (the file's layout decides)


class _Writer:
    """Entries to text at one indentation; remembers what a file repeats (zones, policies, days)."""

    def __init__(self, default_zone: ZoneInfo, indent: str, declare_xc: bool, root_nsmap: dict[str, str]) -> None:
        self.default_zone = default_zone
        self.indent = indent
        self.declare_xc = declare_xc
        self.root_nsmap = root_nsmap
        self.zones: dict[str, ZoneInfo] = {}
        self.policy_texts: dict[tuple[Any, ...], str] = {}
        self.day_texts: dict[frozenset[int], str] = {}
        self.day_sets: dict[str, frozenset[str]] = {}
        self.crons: dict[str, str] = {}
        self.param_heads: dict[str, str] = {}
        self.param_indent = "\n" + indent * 4

    def policies(self, schedule: Schedule) -> str:
        """The xc: attributes, only where they differ from the defaults, so plain files stay plain."""
        if (
            not schedule.time_zone
            and schedule.misfire_policy is _RUN_ONCE
            and schedule.misfire_grace is None
            and schedule.max_catchup_runs == DEFAULT_MAX_CATCHUP_RUNS
            and schedule.overlap_policy is _SKIP
        ):
            return ""  # the defaults, as most schedules have them: no key to build and look up
        key = (
            schedule.time_zone,
            schedule.misfire_policy,
            schedule.misfire_grace,
            schedule.max_catchup_runs,
            schedule.overlap_policy,
        )
        text = self.policy_texts.get(key)
        if text is not None:
            return text
        parts = []
        if schedule.time_zone:
            parts.append(f' xc:timeZone="{_attribute(schedule.time_zone)}"')
        if schedule.misfire_policy is not MisfirePolicy.RUN_ONCE:
            parts.append(f' xc:misfire="{MisfirePolicy(schedule.misfire_policy).value}"')
        if schedule.misfire_grace is not None:
            if schedule.misfire_grace % timedelta(seconds=1) or schedule.misfire_grace < timedelta():
                raise ValueError(f"misfire grace must be whole non-negative seconds, got {schedule.misfire_grace}")
            parts.append(f' xc:misfireGrace="{schedule.misfire_grace // timedelta(seconds=1)}"')
        if schedule.max_catchup_runs != DEFAULT_MAX_CATCHUP_RUNS:
            parts.append(f' xc:maxCatchup="{schedule.max_catchup_runs}"')
        if schedule.overlap_policy is not OverlapPolicy.SKIP:
            parts.append(f' xc:overlap="{OverlapPolicy(schedule.overlap_policy).value}"')
        text = self.policy_texts[key] = "".join(parts)
        return text

    def zone(self, name: str) -> ZoneInfo:
        zone = self.zones.get(name)
        if zone is None:
            zone = self.zones[name] = values.load_zone(name)
        return zone

    def cron(self, expression: str) -> str:
        """The checked expression as an attribute value (files repeat a few expressions many times)."""
        text = self.crons.get(expression)
        if text is None:
            text = self.crons[expression] = _attribute(_parse_cron(expression))
        return text

    def param_head(self, name: str) -> str:
        head = self.param_heads.get(name)
        if head is None:
            head = self.param_heads[name] = f'{self.param_indent}<xc:param name="{_attribute(name)}" type="'
        return head

    def schedule(self, schedule: Schedule, views: list[tuple[Any, ...]]) -> tuple[str, bool]:
        """One <add> or <xc:cron> at level 3, and whether it has xc: parts; its SanteDB view goes to `views`.

        The attributes in the order SanteDB's and xcron's readers expect (and lxml kept). The hot path
        of a save (a file holds thousands): no function layer a dict lookup can replace."""
        name = schedule.time_zone
        zone = (self.zones.get(name) or self.zone(name)) if name else self.default_zone
        spec = schedule.spec
        end = schedule.end
        if isinstance(spec, IntervalSpec):
            start, start_moment = _moment(schedule.start, zone)
            every = spec.every
            seconds = every.days * 86400 + every.seconds  # divmod(every, 1 s), without its cost
            if every.microseconds or not 1 <= seconds <= values.INT32_MAX:
                raise ScheduleWriteError(
                    "interval.interval", f"an interval must be a positive whole number of seconds, got {spec.every}"
                )
            if end is None:
                text = f'<add type="interval" start="{start}" interval="{seconds}"'
                views.append(("interval", None, start_moment, None, str(seconds)))
            else:
                stop, stop_moment = _moment(end, zone)
                text = f'<add type="interval" start="{start}" stop="{stop}" interval="{seconds}"'
                views.append(("interval", None, start_moment, stop_moment, str(seconds)))
            xcron_parts = False
        elif isinstance(spec, CalendarSpec):
            head = '<add type="scheduled"'
            days = None
            if spec.days:
                days = self.day_texts.get(spec.days)
                if days is None:
                    days = self.day_texts[spec.days] = values.format_days(spec.days)
                head = f'{head} days="{days}"'
            day, first = _first_calendar_firing(spec, schedule.start, zone)
            if end is not None and first is not None and end < first:
                raise ScheduleWriteError(
                    "end_time", f"schedule ends ({end.isoformat()}) before it first fires ({first.isoformat()})"
                )
            wall = _santedb_calendar_wall(spec, day)
            start = values.iso_digits(wall)  # values.format_wall: the wall is naive, with fold 0
            # xcron's own start, exact; SanteDB's start is derived from it
            exact = values.format_datetime(schedule.start, zone)
            if end is None:
                text = f'{head} start="{start}" xc:start="{exact}"'
                stop_moment = None
            else:
                stop, stop_moment = _moment(end, zone)
                text = f'{head} start="{start}" stop="{stop}" xc:start="{exact}"'
            days_read = (
                None if days is None else self.day_sets.get(days) or self.day_sets.setdefault(days, _day_set(days))
            )
            views.append(("scheduled", days_read, ("", wall), stop_moment, None))
            xcron_parts = True
        else:
            assert isinstance(spec, CronSpec)
            expression = self.crons.get(spec.expression) or self.cron(spec.expression)
            start = _moment(schedule.start, zone)[0]
            if end is None:
                text = f'<xc:cron expression="{expression}" start="{start}"'
            else:
                text = f'<xc:cron expression="{expression}" start="{start}" stop="{_moment(end, zone)[0]}"'
            xcron_parts = True
        policies = self.policies(schedule)
        if policies:
            text += policies
            xcron_parts = True
        if not schedule.parameters:
            return text + "/>", xcron_parts
        lines = [text, ">"]
        heads = self.param_heads
        for key, value in schedule.parameters.items():
            head = heads.get(key) or self.param_head(key)
            if isinstance(value, str):  # the common kinds without format_parameter; numbers need no escaping
                lines.append(f'{head}string">{_text(value)}</xc:param>' if value else f'{head}string"/>')
            elif type(value) is int:  # not bool
                lines.append(f'{head}int">{value}</xc:param>')
            else:
                param_kind, param_text = values.format_parameter(value)
                lines.append(f'{head}{_KIND_NAMES[param_kind]}"')
                lines.append(f">{_text(param_text)}</xc:param>" if param_text else "/>")
        lines.append(f"\n{self.indent * 3}</{'xc:cron' if isinstance(spec, CronSpec) else 'add'}>")
        return "".join(lines), True

    def entry(self, entry: ScheduleEntry) -> tuple[str, _Rendered]:
        """The entry's element at level 1 (without the indentation before it), lines ending in "\\n"."""
        if not entry.type_name.strip():
            raise ValueError("a schedule entry needs a type name")
        if entry.start_type not in START_TYPES:
            raise ValueError(f"startType {entry.start_type!r} is not one of {START_TYPES}")
        indent = self.indent
        level2, level3 = "\n" + indent * 2, "\n" + indent * 3
        xc = _XC_DECLARATION if self.declare_xc else ""
        parts = [f'<{_JOB}{xc} type="{_attribute(entry.type_name)}" startType="{entry.start_type}"']
        parts.append(' xc:paused="true">' if entry.paused else ">")
        xcron_parts = entry.paused
        views: list[tuple[Any, ...]] = []
        children = []
        for item in entry.schedules:
            text, has_xc = self.schedule(item, views)
            children.append(text)
            xcron_parts = xcron_parts or has_xc
        kept = [disabled.element for disabled in entry.disabled if disabled.element]  # kept as written
        if kept:
            children.append(self.kept_schedules(kept))
        if children:
            parts += (level2, _SCHEDULE, ">", level3, level3.join(children), level2, "</schedule>")
        else:
            parts += (level2, _SCHEDULE, "/>")
        positional: list[ParameterValue] = []
        items: list[tuple[str, str]] = []
        if entry.positional_parameters:
            parts += (level2, _PARAMETERS)
            for value in entry.positional_parameters:
                kind, text = values.format_parameter(value)
                fits = not isinstance(value, int) or values.INT32_MIN <= value <= values.INT32_MAX
                if not fits:
                    raise ValueError(f"positional parameter {value} does not fit SanteDB's 32-bit <int>")
                tag = kind.value if kind in _POSITIONAL_KINDS else "string"
                parts += (level3, f"<{tag}>{_text(text)}</{tag}>" if text else f"<{tag}/>")
                positional.append(value if kind in _POSITIONAL_KINDS else text)
                items.append((tag, text.strip()))
            parts += (level2, "</parameters>")
        parts += ("\n", indent, f"</{_JOB}>")
        view = (entry.type_name.strip(), entry.start_type, tuple(views), tuple(items))
        rendered = _Rendered(
            schedule_elements=len(entry.schedules) + len(kept),
            positional=tuple(positional),
            santedb_view=view,
            xcron_parts=xcron_parts,
            element=None,
        )
        return "".join(parts), rendered

    def kept_schedules(self, elements: list[bytes]) -> str:
        """Disabled schedules, kept as read, at level 3 (joined by their line ends): as lxml moves them
        into a <schedule> (dropping declarations the new place makes redundant) and indents them."""
        root = etree.Element(_ROOT, nsmap=self.root_nsmap)
        schedule = etree.SubElement(etree.SubElement(root, _JOB), _S + "schedule", nsmap={None: SANTEDB_NS})  # type: ignore[dict-item]
        for element in elements:
            schedule.append(etree.fromstring(_wrap(element), _parser())[0])
        etree.indent(root, space=self.indent)
        text = etree.tostring(root, encoding="utf-8").decode()
        begin = text.index(_SCHEDULE + ">") + len(_SCHEDULE) + 2 + len(self.indent) * 3
        return text[begin : text.rindex(f"\n{self.indent * 2}</schedule>")]


_UTC_ZONE = values.UTC_ZONE
# The naive wall time (fold 0) of digits iso_digits wrote: ten times faster than datetime.replace(tzinfo=None, fold=0).
_wall_of = datetime.fromisoformat


def _moment(instant: datetime, zone: ZoneInfo) -> tuple[str, Any]:
    """values.format_datetime(instant, zone, santedb=True) and layout._written_moment of that text, at
    once for the usual instant (aware, whole-minute offset, far from the ends of time), without the
    function layers and the parse back."""
    if 1 < instant.year < 9999 and instant.tzinfo is not None:  # astimezone cannot overflow
        if zone is _UTC_ZONE and instant.tzinfo is UTC:  # the digits are the instant's own (most files)
            digits = values.iso_digits(instant)
            return digits + "Z", ("Z", _wall_of(digits))
        local = instant.astimezone(zone)
        offset = local.utcoffset()
        if not offset:
            digits = values.iso_digits(local)
            return digits + "Z", ("Z", _wall_of(digits))
        if not (offset.microseconds or offset.seconds % 60):
            return values.iso_digits(local) + values.offset_text(offset), ("instant", instant)
    text = values.format_datetime(instant, zone, santedb=True)
    return text, _written_moment(text, instant)


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


def _keeps_text(entry: ScheduleEntry, default_zone: str, known: Callable[[str], bool] | None) -> bool:
    """Whether a save writes the entry's original text: a job this server does not run, or unchanged."""
    unknown = known is not None and not known(entry.type_name)
    return entry.element is not None and (unknown or _unchanged(entry, default_zone))


def render_schedule_xml(
    doc: ScheduleDocument, *, default_zone: str, known: Callable[[str], bool] | None = None
) -> bytes:
    """The file's bytes. Unknown (known() False) and unchanged entries keep their original text.

    A document read from a file is saved as that file with only the changed entries rewritten: every
    other byte (declaration, BOM, line ends, comments, SanteDB's spacing and attribute order) stays.
    `default_zone` is the zone of schedules with time_zone "": their times are written as wall
    times there. ValueError when a value cannot be written in a form that reads back the same.
    """
    return _render(doc, default_zone, known)[0]


def _render(
    doc: ScheduleDocument,
    default_zone: str,
    known: Callable[[str], bool] | None,
    spans: list[tuple[int, int]] | None = None,
) -> tuple[bytes, list[_Rendered | None]]:
    """render_schedule_xml, and for each entry what a save needs of it if it was written from its
    fields (None: its original text was kept). `spans` (when given) receives where each entry's text
    lies in the bytes, in the file's order: the writer put it there, so a save need not search for it."""
    if spans is None:
        spans = []
    zone = values.load_zone(default_zone)

    def keeps_text(entry: ScheduleEntry) -> bool:
        return _keeps_text(entry, default_zone, known)

    if doc.original is not None and doc.layout is not None:
        return _splice(doc, doc.original, doc.layout, zone, keeps_text, spans)
    if not doc.entries:
        return f"{_DECLARATION}{_ROOT_START}/>\n".encode(), []
    writer = _Writer(zone, _NEW_FILE_INDENT.decode(), False, _ROOT_NSMAP)
    head = f"{_DECLARATION}{_ROOT_START}>".encode()
    parts = [head]
    at = len(head)
    rendered: list[_Rendered | None] = []
    for entry in doc.entries:
        if entry.element is not None and keeps_text(entry):
            element = entry.element
            rendered.append(None)
        else:
            text, made = writer.entry(entry)
            # The reader serializes an element inside this root the same way (_element_bytes).
            element = text.encode()
            rendered.append(_with_element(made, element))
        parts += (b"\n  ", element)
        at += 3
        spans.append((at, at + len(element)))
        at += len(element)
    parts.append(f"\n</{_ROOT}>\n".encode())
    return b"".join(parts), rendered


_NEW_FILE_INDENT = b"  "


def new_file_layout(spans: list[tuple[int, int]], close_at: int) -> _Layout:
    """The layout of a file _render wrote whole (no original): "\n" line ends (values escape "\r"),
    two-space indentation, xc declared on the root, "/>" without a space, the root not empty."""
    return _Layout(tuple(spans), close_at, False, b"\n", _NEW_FILE_INDENT, True, False)


def _with_element(made: _Rendered, element: bytes) -> _Rendered:
    return _Rendered(made.schedule_elements, made.positional, made.santedb_view, made.xcron_parts, element)


def _fragment(writer: _Writer, entry: ScheduleEntry, layout: _Layout) -> tuple[bytes, _Rendered]:
    """One entry's text for a spliced file: its indentation, line ends and empty-element style."""
    text, made = writer.entry(entry)
    if layout.spaced_empty:
        text = re.sub(r"(?<! )/>", " />", text)
    return text.replace("\n", layout.newline.decode()).encode(), made


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
    spans: list[tuple[int, int]],
) -> tuple[bytes, list[_Rendered | None]]:
    writer = _Writer(zone, layout.indent.decode(), not layout.declares_xc, {"xc": XC_NS})
    made: dict[int, _Rendered] = {}  # by the entry's index in doc.entries
    by_span = {entry.span: index for index, entry in enumerate(doc.entries) if entry.span is not None}
    out = bytearray()
    position = 0
    for span in layout.spans:
        index = by_span.get(span)
        if index is None:  # removed: its line goes with it
            out += original[position : _blank_before(original, span[0])]
        else:
            out += original[position : span[0]]
            began = len(out)
            if keeps_text(doc.entries[index]):
                out += original[span[0] : span[1]]
            else:
                text, made[index] = _fragment(writer, doc.entries[index], layout)
                out += text
            spans.append((began, len(out)))
        position = span[1]
    present = set(layout.spans)
    added = [index for index, entry in enumerate(doc.entries) if entry.span is None or entry.span not in present]
    if added:
        texts = bytearray()
        placed = []  # in `texts`
        for index in added:
            text, made[index] = _fragment(writer, doc.entries[index], layout)
            texts += layout.newline + layout.indent
            placed.append((len(texts), len(texts) + len(text)))
            texts += text
        if layout.self_closing:
            out += original[position : _blank_before(original, layout.close_at)]
            out += b">"
            spans.extend((len(out) + began, len(out) + end) for began, end in placed)
            out += texts + layout.newline + f"</{_ROOT}>".encode()
            position = layout.close_at + 2
        else:
            cut = max(position, _blank_before(original, layout.close_at))
            out += original[position:cut]
            spans.extend((len(out) + began, len(out) + end) for began, end in placed)
            out += texts
            position = cut
    out += original[position:]
    return bytes(out), [made.get(index) for index in range(len(doc.entries))]
