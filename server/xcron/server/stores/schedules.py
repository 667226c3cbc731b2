"""Where the schedule document (xcron.xml, SanteDB's format) lives: a file by default, or a row in
PostgreSQL shared by every replica of a cluster. Both hold the same bytes, so moving schedules
between them is a copy (`--import`, `--export`).

The file is shared with SanteDB, which rewrites it whole with its own serializer: that drops
everything in xcron's namespace. So a FileScheduleSource keeps, beside xcron's state, a copy of the
bytes it last wrote; on load, an entry whose SanteDB-visible part is still what xcron wrote gets the
rest (zones, policies, cron schedules, pause, named parameters) back from that copy.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from xcron.server.core.errors import StoreUnavailable
from xcron.server.core.model import Schedule
from xcron.server.core.ports import (
    Known,
    ScheduleDocument,
    ScheduleFileError,
    ScheduleSource,
    ScheduleSourceChanged,
)
from xcron.server.stores.xcron_xml import (
    XC_NS,
    check_writable,
    parse_schedule_xml,
    read_schedule_bytes,
    render_checked,
    save_schedule_file,
    write_atomically,
)

if TYPE_CHECKING:
    from xcron.server.stores.postgres import PostgresStateStore

log = logging.getLogger(__name__)


def _digest(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


class FileScheduleSource:
    def __init__(self, path: Path, *, written_copy: Path | None = None) -> None:
        """`written_copy`: where to keep the bytes xcron last wrote (in --data-dir, beside the state)."""
        self.path = path
        self.written_copy = written_copy
        self.description = str(path)
        self.label = path.name
        self._seen: str | None = None
        self._loaded = False

    def _read(self) -> bytes | None:
        return read_schedule_bytes(self.path)

    def _load(self, default_zone: str, known: Known | None) -> ScheduleDocument:
        data = self._read()
        if data is None:
            document = ScheduleDocument(())
        else:
            document = parse_schedule_xml(data, source=str(self.path), default_zone=default_zone, known=known)
            if known is not None and XC_NS.encode() not in data:
                # SanteDB's serializer drops every trace of xcron's namespace, its declaration included.
                # A file that still declares it was edited by hand (or by xcron): that edit wins as is.
                document = self._restore(document, default_zone, known)
        self._seen, self._loaded = _digest(data), True
        return document

    async def load(self, *, default_zone: str, known: Known | None = None) -> ScheduleDocument:
        return await asyncio.to_thread(self._load, default_zone, known)

    def check_writable(self, schedule: Schedule, *, default_zone: str) -> None:
        check_writable(schedule, default_zone=default_zone)

    def _restore(self, document: ScheduleDocument, default_zone: str, known: Known) -> ScheduleDocument:
        """Puts back what a SanteDB re-save dropped from xcron's own entries (see the module doc)."""
        if self.written_copy is None:
            return document
        try:
            written = parse_schedule_xml(
                self.written_copy.read_bytes(), source=str(self.written_copy), default_zone=default_zone, known=known
            )
        except FileNotFoundError:
            return document
        except (OSError, ScheduleFileError) as exc:
            log.warning("cannot use the copy of what xcron last wrote (%s); nothing restored", exc)
            return document
        entries = list(document.entries)
        for index, entry in enumerate(entries):
            if not known(entry.type_name):
                continue
            mine = written.find(entry.type_name)
            if mine is None or mine == entry or not mine.xcron_parts or entry.xcron_parts:
                continue
            where = f"{self.path.name}:{entry.line}"
            if mine.santedb_view == entry.santedb_view:
                log.info("%s: entry %r was re-saved by SanteDB; restored xcron's settings", where, entry.type_name)
                entries[index] = dataclasses.replace(
                    mine, element=None, span=entry.span, line=entry.line, santedb_view=entry.santedb_view
                )
            else:
                log.warning(
                    "%s: entry %r was changed outside xcron; SanteDB's edit wins and xcron's own settings for it "
                    "(time zones, cron schedules, policies, pause, named parameters) could not be kept",
                    where,
                    entry.type_name,
                )
        return dataclasses.replace(document, entries=tuple(entries))

    def _save(self, document: ScheduleDocument, default_zone: str, known: Known) -> ScheduleDocument:
        if self._loaded and _digest(self._read()) != self._seen:
            raise ScheduleSourceChanged(f"{self.path.name} changed on disk since xcron last read it")
        written = save_schedule_file(self.path, document, default_zone=default_zone, known=known)
        data = written.original or b""
        self._seen, self._loaded = _digest(data), True
        if self.written_copy is not None:
            try:
                self.written_copy.parent.mkdir(parents=True, exist_ok=True)
                write_atomically(self.written_copy, data)
            except OSError as exc:  # xcron.xml is saved; only the restore after a SanteDB re-save is at stake
                log.warning("could not keep a copy of %s in %s: %s", self.path.name, self.written_copy, exc)
        return written

    async def save(self, document: ScheduleDocument, *, default_zone: str, known: Known) -> ScheduleDocument:
        return await asyncio.to_thread(self._save, document, default_zone, known)


class PostgresScheduleSource:
    """The document in one row, shared by the replicas (SanteDB cannot re-save it, so nothing needs
    restoring). Saves are compare-and-swap on the row's version: when another replica saved in between,
    the entries this save changes (against the version it was based on) are re-applied to the newer
    document and the swap is tried again. So edits of different jobs on different replicas never lose
    each other, and of two edits of one job the later swap wins, everywhere (each replica reloads when
    told of a save)."""

    _ATTEMPTS = 50

    def __init__(self, store: PostgresStateStore) -> None:
        self.store = store
        self.description = f"postgresql schema {store.schema}"
        self.label = "xcron.xml"
        self._base: tuple[int, ScheduleDocument] | None = None
        """The version last loaded or saved here, and its document: what an edit is relative to."""

    async def load(self, *, default_zone: str, known: Known | None = None) -> ScheduleDocument:
        data, version = await self.store.load_schedule_version()
        document = self._parse(data, default_zone, known)
        self._base = (version, document)
        return document

    def check_writable(self, schedule: Schedule, *, default_zone: str) -> None:
        check_writable(schedule, default_zone=default_zone)

    def _parse(self, data: bytes | None, default_zone: str, known: Known | None) -> ScheduleDocument:
        if data is None:
            return ScheduleDocument(entries=())
        return parse_schedule_xml(data, source=self.description, default_zone=default_zone, known=known)

    async def save(self, document: ScheduleDocument, *, default_zone: str, known: Known) -> ScheduleDocument:
        base = self._base
        for _ in range(self._ATTEMPTS):
            written = render_checked(document, source=self.description, default_zone=default_zone, known=known)
            assert written.original is not None
            version = await self.store.save_schedule_xml(
                written.original, expected_version=None if base is None else base[0]
            )
            if version is not None:
                self._base = (version, written)
                return written
            assert base is not None
            data_now, version_now = await self.store.load_schedule_version()
            current = self._parse(data_now, default_zone, known)
            document = reapply(base[1], document, current)
            base = (version_now, current)
        raise StoreUnavailable(
            f"the schedules in {self.description} kept changing under this save ({self._ATTEMPTS} attempts)",
            reason="SCHEDULE_CONTENDED",
        )


def reapply(base: ScheduleDocument, edited: ScheduleDocument, current: ScheduleDocument) -> ScheduleDocument:
    """`current` with the entries that `edited` changed, added or removed relative to `base` (by job type)."""
    result = current
    for entry in edited.entries:
        if base.find(entry.type_name) != entry:
            result = result.replace(entry)
    for entry in base.entries:
        if edited.find(entry.type_name) is None and result.find(entry.type_name) is not None:
            result = result.remove(entry.type_name)
    return result


__all__ = ["FileScheduleSource", "PostgresScheduleSource", "ScheduleSource", "ScheduleSourceChanged", "reapply"]
