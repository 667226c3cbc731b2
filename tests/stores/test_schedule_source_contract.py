"""One contract for the ScheduleSource port (core/ports.py), run against both sources: the xcron.xml file and
the PostgreSQL row replicas share. Backend-specific behaviour (the file's copy of what xcron last wrote, the
PostgreSQL compare-and-swap merge under contention) is tested beside each backend."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from postgres_db import PG_DSN

from xcron.server.core.model import IntervalSpec, Schedule
from xcron.server.core.ports import (
    ScheduleDocument,
    ScheduleEntry,
    ScheduleFileError,
    ScheduleSource,
    ScheduleSourceChanged,
    ScheduleWriteError,
)
from xcron.server.stores.postgres import PostgresStateStore
from xcron.server.stores.schedules import FileScheduleSource, PostgresScheduleSource

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def known(_: str) -> bool:
    return True


def entry(type_name: str, seconds: int) -> ScheduleEntry:
    schedule = Schedule(spec=IntervalSpec(every=timedelta(seconds=seconds)), start=T0)
    return ScheduleEntry(type_name=type_name, start_type="schedule", schedules=(schedule,))


@dataclass
class Backend:
    new_source: Callable[[], Awaitable[ScheduleSource]]
    """Another handle on the same document (another process or replica)."""
    corrupt: Callable[[bytes], Awaitable[None]]
    """Puts these bytes in place of the document behind the sources' back."""


@pytest.fixture(params=["file", "postgresql"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "file":
        path = tmp_path / "xcron.xml"

        async def new_file() -> ScheduleSource:
            return FileScheduleSource(path)

        async def corrupt_file(data: bytes) -> None:
            path.write_bytes(data)

        yield Backend(new_file, corrupt_file)
        return
    schema: str = request.getfixturevalue("pg_schema")
    opened: list[PostgresStateStore] = []

    async def new_row() -> ScheduleSource:
        store = PostgresStateStore(PG_DSN, schema=schema, replica_id=f"replica-{len(opened)}")
        await store.open()
        opened.append(store)
        return PostgresScheduleSource(store)

    async def corrupt_row(data: bytes) -> None:
        await opened[0].save_schedule_xml(data)

    try:
        yield Backend(new_row, corrupt_row)
    finally:
        for store in opened:
            await store.close()


async def test_an_absent_document_is_empty(backend: Backend) -> None:
    source = await backend.new_source()
    assert (await source.load(default_zone="UTC", known=known)).entries == ()


async def test_save_then_load_round_trips(backend: Backend) -> None:
    source = await backend.new_source()
    await source.load(default_zone="UTC", known=known)
    document = ScheduleDocument((entry("J.One, j", 60), entry("J.Two, j", 3600)))
    stored = await source.save(document, default_zone="UTC", known=known)
    assert stored == document
    other = await backend.new_source()
    assert await other.load(default_zone="UTC", known=known) == document


async def test_an_edit_made_elsewhere_is_never_lost_by_a_save(backend: Backend) -> None:
    """A source that saves after another changed the document either raises ScheduleSourceChanged (the caller
    reloads, as JobManager does) or merges by job; either way the other's edit of another job stays."""
    mine, theirs = await backend.new_source(), await backend.new_source()
    base = await mine.save(ScheduleDocument((entry("J.One, j", 60),)), default_zone="UTC", known=known)
    await theirs.load(default_zone="UTC", known=known)
    await theirs.save(base.replace(entry("J.Two, j", 120)), default_zone="UTC", known=known)
    try:
        await mine.save(base.replace(entry("J.One, j", 61)), default_zone="UTC", known=known)
    except ScheduleSourceChanged:
        current = await mine.load(default_zone="UTC", known=known)
        await mine.save(current.replace(entry("J.One, j", 61)), default_zone="UTC", known=known)
    final = await (await backend.new_source()).load(default_zone="UTC", known=known)
    assert final.find("J.One") == entry("J.One, j", 61)
    assert final.find("J.Two") == entry("J.Two, j", 120)


async def test_an_invalid_document_is_refused_whole_with_its_line(backend: Backend) -> None:
    source = await backend.new_source()
    await source.save(ScheduleDocument((entry("J.One, j", 60),)), default_zone="UTC", known=known)
    await backend.corrupt(b"<ArrayOfJobItemConfiguration>\n<oops")
    with pytest.raises(ScheduleFileError) as caught:
        await (await backend.new_source()).load(default_zone="UTC", known=known)
    assert caught.value.line is not None


async def test_check_writable_names_the_field_of_what_cannot_be_stored(backend: Backend) -> None:
    source = await backend.new_source()
    source.check_writable(entry("J.One, j", 60).schedules[0], default_zone="UTC")
    fractional = Schedule(spec=IntervalSpec(every=timedelta(seconds=1.5)), start=T0)  # SanteDB keeps whole seconds
    with pytest.raises(ScheduleWriteError) as caught:
        source.check_writable(fractional, default_zone="UTC")
    assert caught.value.field == "interval.interval"


async def test_the_label_names_no_server_path(backend: Backend, tmp_path: Path) -> None:
    source = await backend.new_source()
    assert "/" not in source.label and str(tmp_path) not in source.label
