"""A core harness: registry, SQLite store on disk, executor, scheduler and job manager on a FakeClock."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from xcron.server.app import ServerConfig
from xcron.server.assembly import build_core
from xcron.server.core.clock import FakeClock
from xcron.server.core.jobs import Job, JobContext, Parameter, ParameterType
from xcron.server.core.limits import Limits
from xcron.server.core.manager import JobManager
from xcron.server.core.observe import Observer
from xcron.server.core.ports import ExecutionRecord
from xcron.server.core.registry import JobRegistry
from xcron.server.stores.schedules import FileScheduleSource
from xcron.server.stores.sqlite import SqliteStateStore

START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # a Monday


class Recorder:
    """Collects finished executions so tests can await them instead of sleeping."""

    def __init__(self) -> None:
        self.finished: list[ExecutionRecord] = []
        self._changed = asyncio.Condition()

    def __call__(self, record: ExecutionRecord) -> None:
        self.finished.append(record)
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, count: int) -> list[ExecutionRecord]:
        async with asyncio.timeout(10), self._changed:
            await self._changed.wait_for(lambda: len(self.finished) >= count)
        return self.finished


class Tick(Job):
    id = "t.tick"
    name = "Tick"
    parameters = (Parameter("label", ParameterType.STRING, default="none"),)

    async def run(self, ctx: JobContext) -> None:
        ctx.report_progress(1.0, f"label={ctx.parameters['label']}")


class Gate(Job):
    """Runs until the test opens its gate (or a cancel arrives)."""

    id = "t.gate"
    name = "Gate"
    can_cancel = True
    gate: asyncio.Event | None = None
    started: asyncio.Event | None = None

    async def run(self, ctx: JobContext) -> None:
        assert Gate.gate is not None and Gate.started is not None
        Gate.started.set()
        cancel = asyncio.create_task(ctx.sleep(3600))
        gate = asyncio.create_task(Gate.gate.wait())
        await asyncio.wait({cancel, gate}, return_when=asyncio.FIRST_COMPLETED)
        cancel.cancel()
        gate.cancel()


class Stuck(Job):
    """Says it can be cancelled but ignores cancel requests; ends only when the test sets `release`."""

    id = "t.stuck"
    name = "Stuck"
    can_cancel = True
    release: asyncio.Event | None = None

    async def run(self, ctx: JobContext) -> None:
        assert Stuck.release is not None
        await Stuck.release.wait()
        Stuck.release.clear()


@dataclass
class Harness:
    tmp: Path
    clock: FakeClock = field(default_factory=lambda: FakeClock(START))
    jobs: tuple[type[Job], ...] = (Tick, Gate, Stuck)
    manager: JobManager | None = None
    recorder: Recorder = field(default_factory=Recorder)
    store: SqliteStateStore | None = None

    @property
    def schedule_file(self) -> Path:
        return self.tmp / "xcron.xml"

    async def start(
        self, zone: str = "UTC", *, limits: Limits | None = None, observer: Observer | None = None
    ) -> JobManager:
        Gate.gate = asyncio.Event()
        Gate.started = asyncio.Event()
        Stuck.release = asyncio.Event()
        config = ServerConfig(
            schedule_file=self.schedule_file,
            data_dir=self.tmp / "data",
            time_zone=zone,
            load_entry_points=False,
            limits=limits or Limits(),
        )
        # The schedule file alone, without the copy of what xcron last wrote (tests edit it by hand).
        source = FileScheduleSource(self.schedule_file)
        core = build_core(
            config, clock=self.clock, registry=JobRegistry(self.jobs), schedule_source=source, observer=observer
        )
        assert isinstance(core.store, SqliteStateStore)
        self.store = core.store
        self.recorder = Recorder()
        core.executor.add_finish_listener(self.recorder)
        manager = core.manager
        await manager.load_schedules()
        await self.store.open()
        await manager.start()
        self.manager = manager
        return manager

    async def stop(self, grace: float = 1.0) -> None:
        assert self.manager is not None and self.store is not None
        await self.manager.stop(grace)
        await self.store.close()
        self.manager = None

    async def restart(self, zone: str = "UTC") -> JobManager:
        await self.stop()
        return await self.start(zone)

    async def advance_to(self, when: datetime) -> None:
        """Moves the fake clock and waits until the scheduler has handled everything due by then."""
        assert self.manager is not None
        self.clock.set(when)
        await asyncio.wait_for(self.manager.scheduler.settled(), 10)


def in_process_config(folder: Path) -> ServerConfig:
    """A whole server in this process: gRPC on a free loopback port, its files in `folder`, no entry points."""
    return ServerConfig(
        listen="127.0.0.1:0",
        schedule_file=folder / "xcron.xml",
        data_dir=folder / "data",
        load_entry_points=False,
        time_zone="UTC",
        shutdown_grace=1.0,
    )
