"""What a save writes: the document rendered, the output checked, and the document the output now holds.

A save used to read everything it rendered back with the full reader ("never write what we cannot
read"), which cost more than rendering. The guarantee is now split. Each schedule is rendered and read
back alone where it enters a document (check_writable: the API's SetSchedule and PauseSchedule), and a
save checks its whole output cheaply: lxml parses it (well-formed, every prefix bound, the reader's
limits), and it holds one entry per entry of the document, each with as many schedule elements. The
entries it rendered are not read again: the writer says what the reader would find in them. A file the
writer wrote whole from fields is parsed without building a tree (_written_from_fields).
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
    _PARSER_OPTIONS,
    _ROOT,
    _S,
    _XC,
    MAX_FILE_BYTES,
    SANTEDB_NS,
    _built,
    _elements,
    _find,
    _Layout,
    _line,
    _parse_root,
    _without_gc,
)
from xcron.server.stores.xcron_xml.layout import (
    _element_bytes,
    _layout_of,
    _scan_layout,
    _tag_end,
    entry_lines,
)
from xcron.server.stores.xcron_xml.reading import _place, _read_entry, _Reader
from xcron.server.stores.xcron_xml.writing import _render, _Rendered, new_file_layout

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
    if (
        spans
        and len(spans) == len(rendered) == len(doc.entries)
        and all(
            made is not None and made.element is not None and not entry.disabled
            for entry, made in zip(doc.entries, rendered, strict=True)
        )
        and data.count(_ENTRY_START) == len(doc.entries)  # scans the file: after the cheap tests
        and _spans_fit(data, spans)
        and _find(data, b"<!", b"!") < 0  # no DOCTYPE, comment or CDATA: every "<" is a tag
    ):
        return _written_from_fields(doc, data, rendered, source, default_zone, spans)  # type: ignore[arg-type]
    root = _parse_root(data, source)
    children = list(_elements(root))
    if len(children) != len(doc.entries) or any(child.tag != _JOB for child in children):
        raise _mismatch(source, None, f"it holds {len(children)} elements for {len(doc.entries)} entries")
    layout = _layout(data, spans, len(children))
    lines = entry_lines(data, layout.spans)
    reader: _Reader | None = None
    entries = []
    for entry, made, child, span, line in zip(doc.entries, rendered, children, layout.spans, lines, strict=True):
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
        _place(written, span, line, default_zone)
        entries.append(written)
    return ScheduleDocument(tuple(entries), data, layout)


def _written_from_fields(
    doc: ScheduleDocument,
    data: bytes,
    rendered: list[_Rendered],
    source: str,
    default_zone: str,
    spans: list[tuple[int, int]],
) -> ScheduleDocument:
    """_written for a file the writer wrote whole from the document's fields (a new file): what the
    reader would find in each entry is known, so the output is checked without building a tree
    (building and freeing it cost a third of such a save). libxml2 still parses all of it
    (well-formed, every prefix bound, its size limits); the entries lie where the writer says (the
    caller checked), and each holds as many schedule elements: in well-formed text without "<!"
    every "<" opens or closes a tag, so every "<add " and "<xc:cron " is one."""
    _check_well_formed(data, source)
    layout = new_file_layout(spans, data.rfind(_ROOT_CLOSE))
    entries = []
    for entry, made, span, line in zip(doc.entries, rendered, spans, entry_lines(data, spans), strict=True):
        began, end = span
        found, inside = _schedule_tags(data, began, end)
        if found != made.schedule_elements:
            raise _mismatch(source, line, f"an entry holds {found} schedules for {made.schedule_elements}")
        if inside != found:
            raise _mismatch(source, line, f"{found - inside} of an entry's schedules lie outside its <schedule>")
        # ScheduleEntry(...) and _place() in one (the test of a save against a read compares every field).
        written = _built(
            ScheduleEntry,
            type_name=entry.type_name.strip(),
            start_type=entry.start_type,
            schedules=entry.schedules,
            paused=entry.paused,
            positional_parameters=made.positional,
            element=made.element,
            span=span,
            line=line,
            santedb_view=made.santedb_view,
            xcron_parts=made.xcron_parts,
            element_trusted=True,
            element_zone=default_zone,
        )
        entries.append(written)
    return ScheduleDocument(tuple(entries), data, layout)


_SCHEDULE_OPEN = f'<schedule xmlns="{SANTEDB_NS}">'.encode()  # as the writer opens it: SanteDB's namespace
_SCHEDULE_CLOSE = b"</schedule>"


def _schedule_tags(data: bytes, began: int, end: int) -> tuple[int, int]:
    """The schedule elements' start tags in an entry's text, and how many lie inside its <schedule>."""
    opened = data.find(_SCHEDULE_OPEN, began, end)
    closed = data.find(_SCHEDULE_CLOSE, opened, end) if opened >= 0 else -1
    if closed < 0:
        return _tags(data, began, end), 0
    inside = _tags(data, opened, closed)
    return inside + _tags(data, began, opened) + _tags(data, closed, end), inside


def _tags(data: bytes, began: int, end: int) -> int:
    return data.count(b"<add ", began, end) + data.count(b"<xc:cron ", began, end)


class _NoTree:
    """A parser target without callbacks: libxml2 parses and checks, and builds nothing."""

    def close(self) -> None:
        return None


def _check_well_formed(data: bytes, source: str) -> None:
    if len(data) > MAX_FILE_BYTES:
        raise ScheduleFileError(source, None, f"file is {len(data)} bytes, over the {MAX_FILE_BYTES} byte limit")
    # The stubs' ParserTarget lists every callback; lxml calls only those the target has.
    parser = etree.XMLParser(encoding="utf-8", target=_NoTree(), **_PARSER_OPTIONS)  # type: ignore[arg-type]
    try:
        etree.fromstring(data, parser)
    except etree.XMLSyntaxError as error:
        raise ScheduleFileError(source, _line(error.lineno), f"not well-formed XML: {error.msg}") from None
    for logged in parser.error_log:  # without a tree, an unbound prefix is only logged
        if logged.level >= etree.ErrorLevels.ERROR:
            raise ScheduleFileError(source, _line(logged.line), f"not well-formed XML: {logged.message}")


_ENTRY_START = b"<" + _JOB.encode()
_ENTRY_END = b"</" + _JOB.encode() + b">"
_AFTER_NAME = frozenset(b" \t\r\n/>")


def _layout(data: bytes, spans: list[tuple[int, int]], entries: int) -> _Layout:
    """The output's layout from where the writer put each entry (searching 1.5 MiB for them cost a
    tenth of a save). The spans are checked against the bytes (each starts an entry's start tag and
    ends its end tag, or is one empty element, in order, one per element the parse found); else, and
    for an empty root, the bytes are searched as a read does."""
    if not spans or len(spans) != entries or not _spans_fit(data, spans):
        return _scan_layout(data, entries)
    return _layout_of(data, spans, data.rfind(_ROOT_CLOSE), False)


def _spans_fit(data: bytes, spans: list[tuple[int, int]]) -> bool:
    """Whether each span starts an entry's start tag and ends its end tag (or is one empty element),
    in order, and the root's end tag follows them."""
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
            return False
        position = end
    return data.rfind(_ROOT_CLOSE) >= position


def _check_schedules(job: etree._Element, expected: int, source: str, line: int | None) -> None:
    found = sum(1 for schedule in job.iterchildren(_SCHEDULE) for _ in schedule.iterchildren(*_SCHEDULE_ELEMENTS))
    if found != expected:
        raise _mismatch(source, line, f"an entry holds {found} schedules for {expected}")


def _mismatch(source: str, line: int | None, what: str) -> ScheduleFileError:
    """A writer's bug, caught before anything is written."""
    return ScheduleFileError(source, line, f"the rendered file does not match the document ({what}); nothing written")
