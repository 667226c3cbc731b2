"""What the original bytes tell: each entry's text, SanteDB's view of it, and the file's layout."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from xml.parsers import expat
from zoneinfo import ZoneInfo

from lxml import etree

from xcron.server.stores import _xml_values as values
from xcron.server.stores.xcron_xml.common import (
    _ROOT,
    _ROOT_DECLARATIONS,
    _S,
    _XC,
    SANTEDB_NS,
    XC_NS,
    _elements,
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
    element: etree._Element, parse: Callable[[str], values.XsDateTime] = values.parse_xs_datetime
) -> tuple[Any, ...]:
    """The entry as SanteDB's JobItemConfiguration holds it (what survives its re-save), normalised so
    that SanteDB's re-serialisation of the same values compares equal. `parse`: the reader's, which
    remembers the values it has parsed already."""

    def moment(text: str | None) -> Any:
        if text is None:
            return None
        try:
            parsed = parse(text)
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


# A tag up to its closing ">": quoted attribute values may hold ">" (lxml and .NET escape it, hand edits may not).
_TAG = re.compile(rb"[^>\"']*(?:(?:\"[^\"]*\"|'[^']*')[^>\"']*)*>")


def _tag_end(data: bytes, at: int) -> int:
    """The offset just past the tag starting at `at` (quotes skipped)."""
    match = _TAG.match(data, at)
    if match is None:
        raise ValueError("unterminated tag")
    return match.end()


def _indent(data: bytes, spans: list[tuple[int, int]]) -> bytes:
    """The first entry's indentation (two spaces when there is none to copy)."""
    if spans:
        line_start = data.rfind(b"\n", 0, spans[0][0]) + 1
        candidate = data[line_start : spans[0][0]]
        if candidate and not candidate.strip(b" \t"):
            return candidate
    return b"  "


def _scan_layout(data: bytes) -> _Layout:
    """Byte offsets of the root's children, found with expat (lxml gives lines, not offsets)."""
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
    head_end = data.find(b">", data.find(b"<" + _ROOT.encode()))
    return _Layout(
        spans=tuple(spans),
        close_at=close_at,
        self_closing=self_closing,
        newline=b"\r\n" if b"\r\n" in data else b"\n",
        indent=_indent(data, spans),
        declares_xc=f'xmlns:xc="{XC_NS}"'.encode() in data[:head_end],
        spaced_empty=b" />" in data,
    )
