"""The element-based renderer xcron used before issue 16 (lxml elements, then serialized), kept as the oracle the
text renderer is compared with: for the same document both must give the same bytes, or both refuse it. What the
two share unchanged (which entries keep their text, splicing blanks) is imported, not copied."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from zoneinfo import ZoneInfo

from lxml import etree

from xcron.server.core.model import (
    DEFAULT_MAX_CATCHUP_RUNS,
    CalendarSpec,
    CronSpec,
    IntervalSpec,
    MisfirePolicy,
    OverlapPolicy,
    Schedule,
)
from xcron.server.core.ports import (
    ScheduleDocument,
    ScheduleEntry,
    ScheduleWriteError,
)
from xcron.server.stores import _xml_values as values
from xcron.server.stores.xcron_xml.common import (
    _JOB,
    _POSITIONAL_TAGS,
    _ROOT,
    _ROOT_NSMAP,
    _S,
    _XC,
    SANTEDB_NS,
    START_TYPES,
    XC_NS,
    _first_calendar_firing,
    _Layout,
    _parse_cron,
    _parser,
    _santedb_calendar_wall,
)
from xcron.server.stores.xcron_xml.writing import _blank_before, _keeps_text, _wrap

_XC_TIME_ZONE = _XC + "timeZone"
_XC_CRON = _XC + "cron"
_XC_PARAM = _XC + "param"
_S_ADD = _S + "add"


def _policies(attributes: dict[str, str], schedule: Schedule) -> None:
    """The xc: attributes, only where they differ from the defaults, so plain files stay plain."""
    if schedule.time_zone:
        attributes[_XC_TIME_ZONE] = schedule.time_zone
    if schedule.misfire_policy is not MisfirePolicy.RUN_ONCE:
        attributes[_XC + "misfire"] = MisfirePolicy(schedule.misfire_policy).value
    if schedule.misfire_grace is not None:
        if schedule.misfire_grace % timedelta(seconds=1) or schedule.misfire_grace < timedelta():
            raise ValueError(f"misfire grace must be whole non-negative seconds, got {schedule.misfire_grace}")
        attributes[_XC + "misfireGrace"] = str(schedule.misfire_grace // timedelta(seconds=1))
    if schedule.max_catchup_runs != DEFAULT_MAX_CATCHUP_RUNS:
        attributes[_XC + "maxCatchup"] = str(schedule.max_catchup_runs)
    if schedule.overlap_policy is not OverlapPolicy.SKIP:
        attributes[_XC + "overlap"] = OverlapPolicy(schedule.overlap_policy).value


def _add_schedule(
    parent: etree._Element, schedule: Schedule, default_zone: ZoneInfo, zones: dict[str, ZoneInfo]
) -> None:
    """One <add> or <xc:cron>, its attributes collected first and set in one call (in the order
    SanteDB's and xcron's readers expect them: lxml keeps it)."""
    name = schedule.time_zone
    zone = (zones.get(name) or zones.setdefault(name, values.load_zone(name))) if name else default_zone
    spec = schedule.spec
    attributes: dict[str, str] = {}
    if isinstance(spec, CronSpec):
        tag = _XC_CRON
        attributes["expression"] = _parse_cron(spec.expression)
    else:
        tag = _S_ADD
        attributes["type"] = "interval" if isinstance(spec, IntervalSpec) else "scheduled"
        if isinstance(spec, CalendarSpec) and spec.days:
            attributes["days"] = values.format_days(spec.days)
    if isinstance(spec, CalendarSpec):
        day, first = _first_calendar_firing(spec, schedule.start, zone)
        if schedule.end is not None and first is not None and schedule.end < first:
            raise ScheduleWriteError(
                "end_time", f"schedule ends ({schedule.end.isoformat()}) before it first fires ({first.isoformat()})"
            )
        attributes["start"] = values.format_wall(_santedb_calendar_wall(spec, day))
    else:
        attributes["start"] = values.format_datetime(schedule.start, zone, santedb=True)
    if schedule.end is not None:
        attributes["stop"] = values.format_datetime(schedule.end, zone, santedb=True)
    if isinstance(spec, CalendarSpec):  # xcron's own start, exact; SanteDB's start is derived from it
        attributes[_XC + "start"] = values.format_datetime(schedule.start, zone)
    if isinstance(spec, IntervalSpec):
        seconds, rest = divmod(spec.every, timedelta(seconds=1))
        if rest or not 1 <= seconds <= values.INT32_MAX:
            raise ScheduleWriteError(
                "interval.interval", f"an interval must be a positive whole number of seconds, got {spec.every}"
            )
        attributes["interval"] = str(seconds)
    _policies(attributes, schedule)
    element = etree.SubElement(parent, tag, attributes)
    for key, value in schedule.parameters.items():
        kind, text = values.format_parameter(value)
        param = etree.SubElement(element, _XC_PARAM, name=key, type=kind.value)
        param.text = text or None  # <x/> as lxml re-serializes "", so kept entries match


def _add_entry(root: etree._Element, entry: ScheduleEntry, default_zone: ZoneInfo) -> None:
    if not entry.type_name.strip():
        raise ValueError("a schedule entry needs a type name")
    if entry.start_type not in START_TYPES:
        raise ValueError(f"startType {entry.start_type!r} is not one of {START_TYPES}")
    job = etree.SubElement(root, _JOB, type=entry.type_name, startType=entry.start_type)
    if entry.paused:
        job.set(_XC + "paused", "true")
    schedule = etree.SubElement(job, _S + "schedule", nsmap={None: SANTEDB_NS})  # type: ignore[dict-item]
    zones: dict[str, ZoneInfo] = {}
    for item in entry.schedules:
        _add_schedule(schedule, item, default_zone, zones)
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


def old_render_schedule_xml(
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
        return _keeps_text(entry, default_zone, known)

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
