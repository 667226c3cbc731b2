"""What the original bytes tell: each entry's text, SanteDB's view of it, and the file's layout."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any
from xml.parsers import expat

from lxml import etree

from xcron.server.stores import _xml_values as values
from xcron.server.stores.xcron_xml.common import (
    _JOB,
    _ROOT,
    _ROOT_DECLARATIONS,
    _S,
    _XC,
    SANTEDB_NS,
    XC_NS,
    _elements,
    _find,
    _Layout,
    _text,
)


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


def _santedb_view(
    element: etree._Element,
    parse: Callable[[str], values.XsDateTime] = values.parse_xs_datetime,
    adds: tuple[tuple[Any, ...], ...] | None = None,
) -> tuple[Any, ...]:
    """The entry as SanteDB's JobItemConfiguration holds it (what survives its re-save), normalised so
    that SanteDB's re-serialisation of the same values compares equal. `parse`: the reader's, which
    remembers the values it has parsed already; `adds`: the _add_view of each <add> in the entry's
    <schedule>s, in order, when the reader has made them already."""
    found: list[tuple[Any, ...]] = []
    parameters: list[tuple[str, str]] = []
    for child in _elements(element):
        if child.tag == _S + "schedule":
            if adds is None:
                found.extend(_add_view(dict(add.items()), parse) for add in child.iterchildren(_S + "add"))  # type: ignore[arg-type]
        elif child.tag == _S + "parameters":
            parameters.extend(
                (etree.QName(item).localname, _text(item).strip())
                for item in _elements(child)
                if etree.QName(item).namespace == SANTEDB_NS
            )
    return (
        (element.get("type") or "").strip(),
        (element.get("startType") or "immediate").strip().lower(),
        tuple(found) if adds is None else adds,
        tuple(parameters),
    )


def _add_view(attributes: Mapping[str, str], parse: Callable[[str], values.XsDateTime]) -> tuple[Any, ...]:
    """One <add> of SanteDB's view (see _santedb_view), from its attributes."""
    get = attributes.get
    return _add_view_of(
        (get("type") or "scheduled").strip(), get("days"), get("start"), get("stop"), get("interval"), parse
    )


def _add_view_of(
    kind: str,
    days: str | None,
    start: str | None,
    stop: str | None,
    interval: str | None,
    parse: Callable[[str], values.XsDateTime],
) -> tuple[Any, ...]:
    """_add_view from the attributes' values (`kind` stripped, "scheduled" when absent)."""
    return (
        kind,
        None if days is None else _day_set(days),
        _moment(start, parse),
        None if stop is None else _moment(stop, parse),
        (interval or "").strip() or None,
    )


def _day_set(days: str) -> frozenset[str]:
    return frozenset(day.lower() for day in days.split())


def _moment(text: str | None, parse: Callable[[str], values.XsDateTime]) -> Any:
    """A start or stop as SanteDB's DateTime holds it: wall time and kind, or an instant."""
    if text is None:
        return None
    try:
        parsed = parse(text)
    except ValueError:
        return text.strip()
    if parsed.offset in ("", "Z") or parsed.is_min_value or parsed.is_max_value:
        return (parsed.offset, parsed.wall)
    return ("instant", parsed.instant(_UTC_ZONE))


def _held(parsed: values.XsDateTime, instant: datetime | None) -> Any:
    """_moment of a value the reader parsed already, `instant` its instant as read (in any zone: with
    an offset, the zone plays no part; None for MaxValue)."""
    if parsed.offset in ("", "Z") or parsed.is_min_value or parsed.is_max_value:
        return (parsed.offset, parsed.wall)
    return ("instant", instant)


def _written_moment(text: str, instant: datetime) -> Any:
    """_moment of a start or stop that values.format_datetime wrote for `instant`, without parsing it all again."""
    if text.endswith("Z"):
        wall, offset = datetime.fromisoformat(text[:-1]), "Z"
    elif len(text) > 19 and text[-6] in "+-":
        wall, offset = datetime.fromisoformat(text[:-6]), text[-6:]
    else:  # MinValue, MaxValue, a wall time
        return _moment(text, values.parse_xs_datetime)
    if offset == "Z" or wall == datetime.min or wall >= _MAX_WALL:
        return (offset, wall)
    return ("instant", instant)


_UTC_ZONE, _MAX_WALL = values.UTC_ZONE, values.MAX_WALL


def _has_xcron_parts(element: etree._Element) -> bool:
    return any(
        (isinstance(node.tag, str) and node.tag.startswith(_XC)) or any(str(key).startswith(_XC) for key in node.attrib)
        for node in element.iter()
    )


# A tag up to its closing ">": quoted attribute values may hold ">" (lxml and .NET escape it, hand edits may not).
_TAG = re.compile(rb"[^>\"']*(?:(?:\"[^\"]*\"|'[^']*')[^>\"']*)*>")


def _tag_end(data: bytes, at: int) -> int:
    """The offset just past the tag starting at `at` (quotes skipped)."""
    match = _TAG.match(data, at)
    if match is None:
        raise ValueError("unterminated tag")
    return match.end()


def entry_lines(data: bytes, spans: Sequence[tuple[int, int]]) -> list[int]:
    """The line each span starts on, as libxml2 counts lines (LF or CR LF; a lone CR does not end one).

    Exact where lxml's sourceline is not: libxml2 keeps an element's line in 16 bits, and past line
    65,535 lxml takes the line of the element's first text instead (one more for a new entry)."""
    lines = []
    line, at = 1, 0
    for began, _ in spans:
        line += data.count(b"\n", at, began)
        lines.append(line)
        at = began
    return lines


def _indent(data: bytes, spans: list[tuple[int, int]]) -> bytes:
    """The first entry's indentation (two spaces when there is none to copy)."""
    if spans:
        line_start = data.rfind(b"\n", 0, spans[0][0]) + 1
        candidate = data[line_start : spans[0][0]]
        if candidate and not candidate.strip(b" \t"):
            return candidate
    return b"  "


_ROOT_OPEN = b"<" + _ROOT.encode()
_ROOT_CLOSE = b"</" + _ROOT.encode()
_ENTRY_OPEN = re.compile(rb"<" + _JOB.encode() + rb"[\s/>]")
_ENTRY_CLOSE = re.compile(rb"</" + _JOB.encode() + rb"\s*>")


_SPACED_EMPTY = re.compile(rb" />")  # faster than bytes' own search: " " and ">" are both common


def _spans_by_text(data: bytes, entries: int) -> tuple[list[tuple[int, int]], int] | None:
    """The entries' spans and the root's end tag found by searching the bytes, or None when the text
    leaves any doubt (then expat walks it).

    Without comments, CDATA or processing instructions every "<" opens a tag (well-formed XML has
    none in text or attribute values). Every child of the root is an unprefixed <JobItemConfiguration>
    (the reader refuses anything else); when the text holds exactly `entries` of them, none is nested,
    so each one ends at the next </JobItemConfiguration>."""
    body = data.find(_ROOT_OPEN)
    if entries == 0 or body < 0 or _find(data, b"<!", b"!") >= 0 or _find(data, b"<?", b"?", body) >= 0:
        return None
    opens = [match.start() for match in _ENTRY_OPEN.finditer(data, body)]
    if len(opens) != entries:
        return None
    spans = []
    for began in opens:
        head = _tag_end(data, began)
        if data[head - 2 : head] == b"/>":
            spans.append((began, head))
        else:
            close = _ENTRY_CLOSE.search(data, head)
            if close is None:
                return None
            spans.append((began, close.end()))
    close_at = data.rfind(_ROOT_CLOSE)
    return (spans, close_at) if close_at > spans[-1][1] else None


def _scan_layout(data: bytes, entries: int | None = None) -> _Layout:
    """Byte offsets of the root's children (lxml gives lines, not offsets). `entries`: how many the
    root has (all <JobItemConfiguration>), when the caller knows; the bytes are then searched
    directly where that is unambiguous, else expat walks every element."""
    found = _spans_by_text(data, entries) if entries is not None else None
    if found is not None:
        spans, close_at = found
        self_closing = False
    else:
        spans, close_at, self_closing = _walk_layout(data)
    return _layout_of(data, spans, close_at, self_closing)


def _layout_of(data: bytes, spans: list[tuple[int, int]], close_at: int, self_closing: bool) -> _Layout:
    """The layout of a file whose entries' spans and root end are known."""
    head_end = data.find(b">", data.find(_ROOT_OPEN))
    return _Layout(
        spans=tuple(spans),
        close_at=close_at,
        self_closing=self_closing,
        newline=b"\r\n" if _find(data, b"\r\n", b"\r") >= 0 else b"\n",
        indent=_indent(data, spans),
        declares_xc=f'xmlns:xc="{XC_NS}"'.encode() in data[:head_end],
        spaced_empty=_SPACED_EMPTY.search(data) is not None,
    )


def _walk_layout(data: bytes) -> tuple[list[tuple[int, int]], int, bool]:
    """The root's children's spans, where its end tag (or "/>") is and whether it is empty, by expat."""
    bom = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    parser = expat.ParserCreate()
    spans: list[tuple[int, int]] = []
    depth = 0
    opened = 0
    close_at = -1
    self_closing = False

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
        if depth > 2:  # only the root and its children matter
            depth -= 1
            return
        at = parser.CurrentByteIndex + bom
        began = opened if depth == 2 else root_opened
        head = _tag_end(data, began)
        empty = at == head and data[head - 2 : head] == b"/>"  # expat reports an empty element after it
        if depth == 2:
            spans.append((began, at if empty else _tag_end(data, at)))
        elif depth == 1:
            close_at, self_closing = (head - 2, True) if empty else (at, False)
        depth -= 1

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.Parse(data[bom:], True)
    return spans, close_at, self_closing
