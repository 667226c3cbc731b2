"""What a save writes: the document rendered, the output checked, and the document the output now holds.

A save used to read everything it rendered back with the full reader ("never write what we cannot
read"), which cost more than rendering. The guarantee is now split. Each schedule is rendered and read
back alone where it enters a document (check_writable: the API's SetSchedule and PauseSchedule), and a
save checks its whole output cheaply: lxml parses it (well-formed, every prefix bound, the reader's
limits), and it holds one entry per entry of the document, each with as many schedule elements. The
entries it rendered are not read again: the writer says what the reader would find in them.
"""

from __future__ import annotations

from collections.abc import Callable

from lxml import etree

from xcron.server.core.ports import (
    ScheduleDocument,
    ScheduleEntry,
    ScheduleFileError,
)
from xcron.server.stores import _xml_values as values
from xcron.server.stores.xcron_xml.common import (
    _JOB,
    _ROOT,
    _S,
    _XC,
    _elements,
    _Layout,
    _line,
    _parse_root,
    _without_gc,
)
from xcron.server.stores.xcron_xml.layout import _element_bytes, _layout_of, _scan_layout, _tag_end
from xcron.server.stores.xcron_xml.reading import _place, _read_entry, _Reader
from xcron.server.stores.xcron_xml.writing import _render, _Rendered

_SCHEDULE = _S + "schedule"
_ROOT_CLOSE = f"</{_ROOT}".encode()
_SCHEDULE_ELEMENTS = (_S + "add", _XC + "cron")


def render_checked(
    doc: ScheduleDocument, *, source: str, default_zone: str, known: Callable[[str], bool] | None = None
) -> ScheduleDocument:
    """The document as it is to be written: its bytes (`original`), checked, and its entries with
    their place in them. ValueError (a ScheduleFileError naming `source` when the check fails) if
    `doc` cannot be written."""
    with _without_gc():  # as for a read: what a save builds forms no cycles
        spans: list[tuple[int, int]] = []
        data, rendered = _render(doc, default_zone, known, spans)
        return _written(doc, data, rendered, source, default_zone, known, spans)


def _written(
    doc: ScheduleDocument,
    data: bytes,
    rendered: list[_Rendered | None],
    source: str,
    default_zone: str,
    known: Callable[[str], bool] | None,
    spans: list[tuple[int, int]],
) -> ScheduleDocument:
    root = _parse_root(data, source)
    children = list(_elements(root))
    if len(children) != len(doc.entries) or any(child.tag != _JOB for child in children):
        raise _mismatch(source, None, f"it holds {len(children)} elements for {len(doc.entries)} entries")
    layout = _layout(data, spans, len(children))
    reader: _Reader | None = None
    entries = []
    for entry, made, child, span in zip(doc.entries, rendered, children, layout.spans, strict=True):
        line = _line(child.sourceline)
        if made is not None and not entry.disabled:  # written from its fields: the writer knows the rest
            _check_schedules(child, made.schedule_elements, source, line)
            written = ScheduleEntry(
                type_name=entry.type_name.strip(),
                start_type=entry.start_type,
                schedules=entry.schedules,
                paused=entry.paused,
                positional_parameters=made.positional,
                element=made.element if made.element is not None else _element_bytes(child),
                line=line,
                santedb_view=made.santedb_view,
                xcron_parts=made.xcron_parts,
            )
        elif (
            made is None
            and entry.element_trusted
            and entry.element_zone == default_zone
            and entry.unreadable is None
            and not entry.disabled
        ):  # its text kept, and it is what the reader made of that text with this zone
            _check_schedules(child, len(entry.schedules), source, line)
            written = object.__new__(ScheduleEntry)  # a copy (as copy.copy makes it, faster): its span and line change
            written.__dict__.update(entry.__dict__, line=line)
        else:
            # Read as a fresh read would: entries with disabled schedules (these carry their own lines),
            # and kept text never read, read in another zone, or not readable (a job this server does not run).
            reader = reader or _Reader(source, values.load_zone(default_zone))
            written = _read_entry(reader, child, known)
        _place(written, span, default_zone)
        entries.append(written)
    return ScheduleDocument(tuple(entries), data, layout)


_ENTRY_START = b"<" + _JOB.encode()
_ENTRY_END = b"</" + _JOB.encode() + b">"
_AFTER_NAME = frozenset(b" \t\r\n/>")


def _layout(data: bytes, spans: list[tuple[int, int]], entries: int) -> _Layout:
    """The output's layout from where the writer put each entry (searching 1.5 MiB for them cost a
    tenth of a save). The spans are checked against the bytes (each starts an entry's start tag and
    ends its end tag, or is one empty element, in order, one per element the parse found); else, and
    for an empty root, the bytes are searched as a read does."""
    if not spans or len(spans) != entries:
        return _scan_layout(data, entries)
    position = 0
    after = len(_ENTRY_START)
    for began, end in spans:
        if (
            began < position
            or not data.startswith(_ENTRY_START, began)
            or data[began + after] not in _AFTER_NAME
            or not (
                data.endswith(_ENTRY_END, 0, end) or (data.endswith(b"/>", 0, end) and _tag_end(data, began) == end)
            )
        ):
            return _scan_layout(data, entries)
        position = end
    close_at = data.rfind(_ROOT_CLOSE)
    if close_at < position:
        return _scan_layout(data, entries)
    return _layout_of(data, spans, close_at, False)


def _check_schedules(job: etree._Element, expected: int, source: str, line: int | None) -> None:
    found = sum(1 for schedule in job.iterchildren(_SCHEDULE) for _ in schedule.iterchildren(*_SCHEDULE_ELEMENTS))
    if found != expected:
        raise _mismatch(source, line, f"an entry holds {found} schedules for {expected}")


def _mismatch(source: str, line: int | None, what: str) -> ScheduleFileError:
    """A writer's bug, caught before anything is written."""
    return ScheduleFileError(source, line, f"the rendered file does not match the document ({what}); nothing written")
