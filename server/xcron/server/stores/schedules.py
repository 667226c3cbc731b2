"""Where the schedule document (xcron.xml, SanteDB's format) lives: a file by default, or a row in
PostgreSQL shared by every replica of a cluster. Both hold the same bytes, so moving schedules
between them is a copy (`--import`, `--export`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from xcron.server.core.errors import StoreUnavailable
from xcron.server.stores.xcron_xml import (
    ScheduleDocument,
    load_schedule_file,
    parse_schedule_xml,
    render_schedule_xml,
    save_schedule_file,
)

if TYPE_CHECKING:
    from xcron.server.stores.postgres import PostgresStateStore

Known = Callable[[str], bool]


class ScheduleSource(Protocol):
    description: str

    async def load(self, *, default_zone: str) -> ScheduleDocument:
        """The document; ScheduleFileError when it is invalid (nothing partial is ever returned)."""
        ...

    async def save(self, document: ScheduleDocument, *, default_zone: str, known: Known) -> None:
        """Replaces the document atomically, or raises and changes nothing."""
        ...


class FileScheduleSource:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = str(path)

    async def load(self, *, default_zone: str) -> ScheduleDocument:
        return await asyncio.to_thread(load_schedule_file, self.path, default_zone=default_zone)

    async def save(self, document: ScheduleDocument, *, default_zone: str, known: Known) -> None:
        await asyncio.to_thread(save_schedule_file, self.path, document, default_zone=default_zone, known=known)


class PostgresScheduleSource:
    """The document in one row, shared by the replicas. Saves are compare-and-swap on the row's version:
    when another replica saved in between, the entries this save changes (against the version it was
    based on) are re-applied to the newer document and the swap is tried again. So edits of different
    jobs on different replicas never lose each other, and of two edits of one job the later swap wins,
    everywhere (each replica reloads when told of a save)."""

    _ATTEMPTS = 50

    def __init__(self, store: PostgresStateStore) -> None:
        self.store = store
        self.description = f"postgresql schema {store.schema}"
        self._base: tuple[int, ScheduleDocument] | None = None
        """The version last loaded or saved here, and its document: what an edit is relative to."""

    async def load(self, *, default_zone: str) -> ScheduleDocument:
        data, version = await self.store.load_schedule_version()
        document = self._parse(data, default_zone)
        self._base = (version, document)
        return document

    def _parse(self, data: bytes | None, default_zone: str) -> ScheduleDocument:
        if data is None:
            return ScheduleDocument(entries=())
        return parse_schedule_xml(data, source=self.description, default_zone=default_zone)

    async def save(self, document: ScheduleDocument, *, default_zone: str, known: Known) -> None:
        base = self._base
        for _ in range(self._ATTEMPTS):
            data = render_schedule_xml(document, default_zone=default_zone, known=known)
            # Never store what cannot be read back.
            parse_schedule_xml(data, source=self.description, default_zone=default_zone)
            version = await self.store.save_schedule_xml(data, expected_version=None if base is None else base[0])
            if version is not None:
                self._base = (version, document)
                return
            assert base is not None
            data_now, version_now = await self.store.load_schedule_version()
            current = self._parse(data_now, default_zone)
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
            gone = result.find(entry.type_name)
            result = ScheduleDocument(tuple(e for e in result.entries if e is not gone))
    return result
