"""Where the schedule document (xcron.xml, SanteDB's format) lives: a file by default, or a row in
PostgreSQL shared by every replica of a cluster. Both hold the same bytes, so moving schedules
between them is a copy (`--import`, `--export`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

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
    def __init__(self, store: PostgresStateStore) -> None:
        self.store = store
        self.description = f"postgresql schema {store.schema}"

    async def load(self, *, default_zone: str) -> ScheduleDocument:
        data = await self.store.load_schedule_xml()
        if data is None:
            return ScheduleDocument(entries=())
        return parse_schedule_xml(data, source=self.description, default_zone=default_zone)

    async def save(self, document: ScheduleDocument, *, default_zone: str, known: Known) -> None:
        data = render_schedule_xml(document, default_zone=default_zone, known=known)
        parse_schedule_xml(data, source=self.description, default_zone=default_zone)  # never store what can't be read
        await self.store.save_schedule_xml(data)
