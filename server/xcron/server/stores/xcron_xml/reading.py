"""Reading xcron.xml: elements to ScheduleEntry, strict where SanteDB's serializer is."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from lxml import etree

from xcron.server.core.model import (
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
    DisabledSchedule,
    ScheduleDocument,
    ScheduleEntry,
    ScheduleFileError,
)
from xcron.server.stores import _xml_values as values
from xcron.server.stores.xcron_xml.common import (
    _JOB,
    _POSITIONAL_TAGS_READ,
    _S,
    _SCHEDULE_ATTRIBUTES,
    _XC,
    SANTEDB_NS,
    START_TYPES,
    XC_NS,
    _elements,
    _field_defaults,
    _line,
    _parse_cron,
    _parse_root,
    _text,
    _without_gc,
    santedb_calendar_start,
)
from xcron.server.stores.xcron_xml.layout import (
    _day_set,
    _element_bytes,
    _has_xcron_parts,
    _held,
    _santedb_view,
    _scan_layout,
    entry_lines,
)

_XC_TIME_ZONE = _XC + "timeZone"
_XC_CRON = _XC + "cron"
_ONE_SECOND = timedelta(seconds=1)
_S_ADD = _S + "add"
_S_SCHEDULE = _S + "schedule"
_SCHEDULE_TAGS = (_S_ADD, _XC_CRON)
_PLAIN_SCHEDULE_ATTRIBUTES = frozenset({"type", "start", "stop", "interval", "days", "expression"})
_XC_PARAM = _XC + "param"


def _describe(tag: str) -> str:
    qname = etree.QName(tag)
    prefix = {XC_NS: "xc:"}.get(qname.namespace or "", "")
    return f"<{prefix}{qname.localname}>"


class _Reader:
    """Maps elements to entries; every failure names the file, the line and the attribute."""

    def __init__(self, source: str, default_zone: ZoneInfo) -> None:
        self.source = source
        self.default_zone = default_zone
        # What one file repeats (zones, intervals, days, cron expressions, times), parsed once per read.
        self.moments: dict[str, values.XsDateTime] = {}
        self.zones: dict[str, ZoneInfo] = {}
        self.specs: dict[tuple[str, str], IntervalSpec | CronSpec | frozenset[int]] = {}
        self.policy_sets: dict[tuple[str | None, ...], dict[str, Any]] = {}
        self.add_views: list[tuple[Any, ...]] = []  # the current entry's, for _santedb_view
        self.day_sets: dict[str, frozenset[str]] = {}
        self.calendars: dict[tuple[str, time], CalendarSpec] = {}
        # Whether the current entry was seen to have xcron parts (then no need to look for them).
        self.saw_xc = False

    def xs_datetime(self, text: str) -> values.XsDateTime:
        """parse_xs_datetime, once per text (SanteDB's view of an entry reads its schedules' times again)."""
        parsed = self.moments.get(text)
        if parsed is None:
            parsed = self.moments[text] = values.parse_xs_datetime(text)
        return parsed

    def fail(self, element: etree._Element, reason: str) -> ScheduleFileError:
        return ScheduleFileError(self.source, _line(element.sourceline), reason)

    def attribute(
        self,
        element: etree._Element,
        name: str,
        parse: Callable[[str], Any],
        attributes: Mapping[str, str] | None = None,
    ) -> Any:
        """parse(value) of an attribute that is present; ValueError becomes a located error.
        `attributes`: the element's, already read (lxml's get costs more than a dict's)."""
        text = (element if attributes is None else attributes).get(name)
        try:
            return parse(text if text is not None else "")
        except ValueError as error:
            label = name.replace(_XC, "xc:")
            raise self.fail(element, f"{_describe(element.tag)} {label}={text!r}: {error}") from None

    def check_xc_attributes(
        self, element: etree._Element, allowed: tuple[str, ...], keys: Iterable[str] | None = None
    ) -> bool:
        """Whether the element has xc: attributes (all of them allowed, else a ScheduleFileError)."""
        found = False
        for key in map(str, element.keys()) if keys is None else keys:
            if key[0] != "{" or not key.startswith(_XC):  # the first test is the cheaper
                continue
            found = True
            name = key[len(_XC) :]
            if name not in allowed:
                expected = ", ".join(f"xc:{known}" for known in allowed)
                raise self.fail(
                    element, f"unknown attribute xc:{name} on {_describe(element.tag)} (allowed: {expected})"
                )
        return found

    def entry(self, element: etree._Element) -> ScheduleEntry:
        if element.tag != _JOB:
            raise self.fail(element, f"unexpected element {element.tag!r}; expected <{_JOB}>")
        type_name = (element.get("type") or "").strip()
        if not type_name:
            raise self.fail(element, f"<{_JOB}> needs a type attribute (the job's type name)")
        self.saw_xc = self.check_xc_attributes(element, ("paused",))
        start_type = (element.get("startType") or "immediate").strip().lower()  # .NET's enum default
        if start_type not in START_TYPES:
            raise self.fail(element, f"<{_JOB}> startType={element.get('startType')!r}: expected one of {START_TYPES}")
        paused = element.get(_XC + "paused") is not None and self.attribute(element, _XC + "paused", values.parse_bool)
        schedules: list[Schedule] = []
        disabled: list[DisabledSchedule] = []
        positional: list[ParameterValue] = []
        self.add_views = []
        for child in _elements(element):
            tag = child.tag
            if tag == _S_SCHEDULE:
                for item in _elements(child):  # the schedules, inline: a file holds thousands
                    kind = item.tag
                    if kind in _SCHEDULE_TAGS:
                        made = self.schedule(item, kind)
                        (schedules if type(made) is Schedule else disabled).append(made)  # type: ignore[arg-type]
                    elif kind.startswith(_XC):
                        raise self.fail(
                            item, f"unexpected {_describe(kind)} in <schedule>; expected <add> or <xc:cron>"
                        )
            elif tag == _S + "parameters":
                positional.extend(self.positional(child))
            elif tag.startswith(_XC):
                raise self.fail(child, f"unexpected {_describe(tag)} directly in <{_JOB}>")
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
            santedb_view=_santedb_view(element, self.xs_datetime, tuple(self.add_views)),
            xcron_parts=self.saw_xc or _has_xcron_parts(element),
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
            santedb_view=_santedb_view(element, self.xs_datetime),
            xcron_parts=_has_xcron_parts(element),
            unreadable=str(error.reason),
        )

    def disable(self, element: etree._Element, reason: str) -> DisabledSchedule:
        return DisabledSchedule(line=_line(element.sourceline), reason=reason, element=_element_bytes(element))

    def schedule(self, element: etree._Element, tag: str) -> Schedule | DisabledSchedule:
        """One schedule, read as SanteDB reads it on a host in the schedule's zone.

        What SanteDB's serializer refuses is a ScheduleFileError; what it accepts but xcron cannot run
        (interval="0", a stop not after the start) is a DisabledSchedule. `tag`: the element's (lxml
        makes the string anew each time it is asked).
        """
        attributes: dict[str, str] = dict(element.items())  # type: ignore[arg-type]  # lxml gives str here
        get = attributes.get
        # The attributes SanteDB and xcron write unprefixed: only these, then no xc: ones to check.
        has_xc = not attributes.keys() <= _PLAIN_SCHEDULE_ATTRIBUTES and self.check_xc_attributes(
            element, _SCHEDULE_ATTRIBUTES, attributes
        )
        zone_text = get(_XC_TIME_ZONE) if has_xc else None
        zone_name = zone_text.strip() if zone_text else ""
        zone: ZoneInfo = self.default_zone
        if zone_name:
            assert zone_text is not None
            zone = self.zones.get(zone_text) or self.zones.setdefault(
                zone_text, self.attribute(element, _XC_TIME_ZONE, values.load_zone, attributes)
            )
        start_text = get("start")
        if start_text is None:
            raise self.fail(element, f"{_describe(element.tag)} needs a start attribute (an xs:dateTime)")
        written = self.moments.get(start_text)
        if written is None:
            try:
                written = self.moments[start_text] = values.parse_xs_datetime(start_text)
            except ValueError:
                self.attribute(element, "start", values.parse_xs_datetime, attributes)  # raises, naming it
                raise
        start = written.instant(zone, santedb=True)
        end = None
        stop: values.XsDateTime | None = None
        stop_text = get("stop")
        if stop_text is not None:
            stop = self.moments.get(stop_text)
            if stop is None:
                stop = self.attribute(element, "stop", self.xs_datetime, attributes)
            end = None if stop.is_max_value else stop.instant(zone, santedb=True)
        if tag == _S_ADD:  # SanteDB's view of the entry holds its <add>s (layout._add_view, from what was read)
            days = get("days")
            self.add_views.append(
                (
                    (get("type") or "scheduled").strip(),
                    None if days is None else self.day_sets.get(days) or self.day_sets.setdefault(days, _day_set(days)),
                    _held(written, start),
                    None if stop is None else _held(stop, end),
                    (get("interval") or "").strip() or None,
                )
            )
        spec = self.spec(element, tag, attributes, written, zone)
        if isinstance(spec, IntervalSpec) and spec.every < _ONE_SECOND:
            return self.disable(
                element,
                f"interval={get('interval')!r}: SanteDB accepts it but xcron runs intervals of at least "
                "1 second; this schedule is disabled",
            )
        if isinstance(spec, CalendarSpec):
            start = self.calendar_start(element, attributes, spec, written, start, zone)
        elif has_xc and get(_XC + "start") is not None:
            raise self.fail(element, f"xc:start is only used on calendar schedules, not on {_describe(element.tag)}")
        if end is not None and end <= start:
            stop_text, begin = get("stop"), get("start")
            return self.disable(
                element,
                f"stop={stop_text!r} is not after start={begin!r}, so it never fires (in SanteDB neither); "
                "this schedule is disabled",
            )
        parameters = self.parameters(element) if len(element) else {}
        if not has_xc:
            return _schedule(spec, start, end, zone_name, parameters)
        self.saw_xc = True
        key = (get(_XC + "misfire"), get(_XC + "misfireGrace"), get(_XC + "maxCatchup"), get(_XC + "overlap"))
        policies = self.policy_sets.get(key)
        if policies is None:
            policies = self.policy_sets[key] = self.policies(element, attributes)
        return _schedule(spec, start, end, zone_name, parameters, policies)

    def calendar_start(
        self,
        element: etree._Element,
        attributes: Mapping[str, str],
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
        exact_text = attributes.get(_XC + "start")
        if exact_text is not None:
            try:
                exact = values.parse_datetime(exact_text, zone)
            except ValueError:
                self.attribute(element, _XC + "start", values.parse_xs_datetime, attributes)  # raises, naming it
                raise
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

    def spec(
        self,
        element: etree._Element,
        tag: str,
        attributes: Mapping[str, str],
        written: values.XsDateTime,
        zone: ZoneInfo,
    ) -> IntervalSpec | CalendarSpec | CronSpec:
        """The schedule's kind; a calendar's time of day is the wall time in `written` (its start)."""
        get = attributes.get
        if tag == _XC_CRON:
            self.saw_xc = True
            key = ("cron", get("expression") or "")
            found = self.specs.get(key)
            if found is None:
                found = self.specs[key] = CronSpec(
                    expression=self.attribute(element, "expression", _parse_cron, attributes)
                )
            return found  # type: ignore[return-value]
        kind = (get("type") or "scheduled").strip()
        if kind == "interval":
            interval = get("interval")
            if interval is None:
                raise self.fail(element, '<add type="interval"> needs an interval attribute (whole seconds)')
            key = ("interval", interval)
            found = self.specs.get(key)
            if found is None:
                seconds = self.attribute(
                    element,
                    "interval",
                    lambda t: values.parse_int(t, minimum=values.INT32_MIN, maximum=values.INT32_MAX),
                    attributes,
                )
                found = self.specs[key] = IntervalSpec(every=timedelta(seconds=seconds))
            return found  # type: ignore[return-value]
        if kind == "scheduled":
            wall_start = written.local_wall(zone).time().replace(fold=0)
            days_text = get("days") or ""
            calendar = self.calendars.get((days_text, wall_start))
            if calendar is None:
                days = self.specs.get(("days", days_text))
                if days is None:
                    days = self.specs["days", days_text] = self.attribute(
                        element, "days", values.parse_days, attributes
                    )
                calendar = self.calendars[days_text, wall_start] = CalendarSpec(days=days, time_of_day=wall_start)  # type: ignore[arg-type]
            return calendar
        raise self.fail(element, f"<add> type={kind!r}: unknown schedule type (expected scheduled or interval)")

    def policies(self, element: etree._Element, attributes: Mapping[str, str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        get = attributes.get
        if get(_XC + "misfire") is not None:
            found["misfire_policy"] = self.attribute(
                element, _XC + "misfire", lambda t: _enum(MisfirePolicy, t), attributes
            )
        if get(_XC + "misfireGrace") is not None:
            seconds = self.attribute(
                element, _XC + "misfireGrace", lambda t: values.parse_int(t, minimum=0, maximum=10**9), attributes
            )
            found["misfire_grace"] = timedelta(seconds=seconds)
        if get(_XC + "maxCatchup") is not None:
            found["max_catchup_runs"] = self.attribute(
                element,
                _XC + "maxCatchup",
                lambda t: values.parse_int(t, minimum=0, maximum=values.INT32_MAX),
                attributes,
            )
        if get(_XC + "overlap") is not None:
            found["overlap_policy"] = self.attribute(
                element, _XC + "overlap", lambda t: _enum(OverlapPolicy, t), attributes
            )
        return found

    def parameters(self, element: etree._Element) -> dict[str, ParameterValue]:
        """The <xc:param> children (the caller skips an element without children: none)."""
        found: dict[str, ParameterValue] = {}
        for child in _elements(element):
            tag = child.tag
            if tag != _XC_PARAM:
                if tag.startswith(_XC):
                    raise self.fail(child, f"unexpected {_describe(tag)}; expected <xc:param>")
                continue
            get = child.get
            name: str = get("name") or ""
            if not name.strip():
                raise self.fail(child, "<xc:param> needs a name attribute")
            if name in found:
                raise self.fail(child, f"<xc:param> name={name!r} appears twice")
            self.saw_xc = True
            kind: str = get("type") or ParameterType.STRING
            text = _text(child) if len(child) else child.text or ""
            if kind == ParameterType.STRING:  # most are: the value is the text as it is
                found[name] = text
                continue
            kind = kind.strip()
            try:
                found[name] = values.parse_parameter(kind, text)
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


def _schedule(
    spec: IntervalSpec | CalendarSpec | CronSpec,
    start: datetime,
    end: datetime | None,
    time_zone: str,
    parameters: dict[str, ParameterValue],
    policies: dict[str, Any] | None = None,
) -> Schedule:
    """Schedule(...) for what the reader made, at a third of the cost of even _built (a file holds
    thousands): no __post_init__, as start and end come from XsDateTime.instant, aware. `policies`:
    Schedule's policy fields by name. A test holds it to Schedule()'s result, field by field."""
    built = _new_object(Schedule)
    fields = built.__dict__
    fields.update(_SCHEDULE_DEFAULTS)
    fields["spec"] = spec
    fields["start"] = start
    fields["end"] = end
    fields["time_zone"] = time_zone
    fields["parameters"] = parameters
    if policies:
        fields.update(policies)
    return built


_new_object = object.__new__
_SCHEDULE_DEFAULTS = _field_defaults(Schedule)[0]  # all but `parameters` (a factory's), which is always given


def _enum(kind: type[MisfirePolicy] | type[OverlapPolicy], text: str) -> Any:
    try:
        return kind(text.strip())
    except ValueError:
        raise ValueError(f"expected one of {', '.join(member.value for member in kind)}") from None


def parse_schedule_xml(
    data: bytes,
    *,
    source: str,
    default_zone: str,
    known: Callable[[str], bool] | None = None,
) -> ScheduleDocument:
    """The whole document or a ScheduleFileError; never part of a document.

    With `known`, an entry whose type known() rejects (a job this server does not run) is never a
    reason to refuse the file: what xcron cannot read of it is kept exactly as written.
    """
    with _without_gc():
        return _read_document(data, source, default_zone, known)


def _read_document(
    data: bytes, source: str, default_zone: str, known: Callable[[str], bool] | None
) -> ScheduleDocument:
    reader = _Reader(source, values.load_zone(default_zone))
    root = _parse_root(data, source)
    entries = [_read_entry(reader, child, known) for child in _elements(root)]
    layout = _scan_layout(data, len(entries))
    lines = entry_lines(data, layout.spans)
    for entry, span, line in zip(entries, layout.spans, lines, strict=True):  # new entries: no need to copy them
        _place(entry, span, line, default_zone)
    return ScheduleDocument(tuple(entries), data, layout)


def _read_entry(reader: _Reader, element: etree._Element, known: Callable[[str], bool] | None) -> ScheduleEntry:
    """The entry an element holds; for a job known() rejects, what xcron cannot read is kept opaque."""
    try:
        return reader.entry(element)
    except ScheduleFileError as error:
        type_name = (element.get("type") or "").strip() if element.tag == _JOB else ""
        if known is None or not type_name or known(type_name):
            raise
        return reader.opaque(element, error)


def _place(entry: ScheduleEntry, span: tuple[int, int], line: int, default_zone: str) -> None:
    """Notes where a new entry's text lies, and that its fields are what that text says with `default_zone`."""
    object.__setattr__(entry, "span", span)
    object.__setattr__(entry, "line", line)
    object.__setattr__(entry, "element_trusted", entry.unreadable is None)
    object.__setattr__(entry, "element_zone", default_zone)
