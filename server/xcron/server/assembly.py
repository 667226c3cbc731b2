"""The object graph of one server, assembled in one place: `build_core(config)`. Production (app.py) and the
test harness (tests/support/core_harness.py) both call it, so tests run the graph production runs.

stores (state store, schedule source) -> cluster (replicas on PostgreSQL) -> executor -> JobManager, the one
facade every transport calls. Nothing here opens, binds or starts anything: app.py does that.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from xcron.server.core.clock import Clock, SystemClock
from xcron.server.core.cluster import Cluster
from xcron.server.core.events import EventBus
from xcron.server.core.executor import Executor
from xcron.server.core.manager import JobManager
from xcron.server.core.observe import Observer
from xcron.server.core.ports import ScheduleSource, StateStore
from xcron.server.core.registry import JobRegistry
from xcron.server.stores.postgres import PostgresStateStore
from xcron.server.stores.schedules import FileScheduleSource, PostgresScheduleSource
from xcron.server.stores.sqlite import SqliteStateStore

if TYPE_CHECKING:
    from xcron.server.app import ServerConfig

WRITTEN_COPY_NAME = "xcron.xml.last-written"  # what xcron last wrote, to restore after a SanteDB re-save


@dataclass(frozen=True, kw_only=True)
class Core:
    registry: JobRegistry
    store: StateStore
    schedule_source: ScheduleSource
    bus: EventBus
    executor: Executor
    manager: JobManager
    cluster: Cluster | None
    clock: Clock


def build_stores(config: ServerConfig) -> tuple[StateStore, ScheduleSource, Cluster | None]:
    """PostgreSQL (shared by replicas, with a cluster) when the config names a DSN, else SQLite and the file."""
    if config.store_dsn:
        lease = timedelta(seconds=config.lease_seconds)
        postgres = PostgresStateStore(
            config.store_dsn, schema=config.store_schema, replica_id=config.replica_id, lease=lease
        )
        return postgres, PostgresScheduleSource(postgres), Cluster(postgres, lease=lease)
    store = SqliteStateStore(config.data_dir / "state.sqlite3")
    source = FileScheduleSource(config.schedule_file, written_copy=config.data_dir / WRITTEN_COPY_NAME)
    return store, source, None


def build_core(
    config: ServerConfig,
    *,
    clock: Clock | None = None,
    registry: JobRegistry | None = None,
    observer: Observer | None = None,
    schedule_source: ScheduleSource | None = None,
) -> Core:
    """Every part of the server below the transports, wired by construction. Job modules are not loaded here
    (the registry may still be filled before the manager loads the schedules). `schedule_source` replaces
    the configured one (a test reading xcron.xml without the copy of what xcron last wrote)."""
    clock = clock or SystemClock()
    registry = registry if registry is not None else JobRegistry()
    store, source, cluster = build_stores(config)
    source = schedule_source or source
    bus = EventBus(max_watchers=config.limits.max_watchers)
    executor = Executor(
        registry,
        store,
        bus,
        clock,
        max_threads=config.max_threads,
        max_running=config.limits.max_running,
        observer=observer,
        cluster=cluster,
        services={
            "schedule_file": config.schedule_file,
            "data_dir": config.data_dir,
            "history_keep_last": config.history_keep_last,
            "history_max_age_days": config.history_max_age_days,
        },
    )
    manager = JobManager(
        registry=registry,
        store=store,
        bus=bus,
        clock=clock,
        schedule_source=source,
        default_zone=config.time_zone,
        executor=executor,
        limits=config.limits,
        cluster=cluster,
    )
    return Core(
        registry=registry,
        store=store,
        schedule_source=source,
        bus=bus,
        executor=executor,
        manager=manager,
        cluster=cluster,
        clock=clock,
    )
