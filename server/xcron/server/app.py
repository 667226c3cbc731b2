"""Builds and runs the server: stores -> core -> gRPC (JobService, health, reflection)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from xcron.server.api.servicer import Servicer
from xcron.server.core.clock import Clock, SystemClock
from xcron.server.core.events import EventBus
from xcron.server.core.executor import Executor
from xcron.server.core.registry import JobRegistry
from xcron.server.core.service import JobManager
from xcron.server.stores.sqlite import SqliteStateStore
from xcron.v1 import job_service_pb2, job_service_pb2_grpc

log = logging.getLogger("xcron.server")
SERVICE_NAME = job_service_pb2.DESCRIPTOR.services_by_name["JobService"].full_name


def local_zone_name() -> str:
    """The machine's IANA zone name (TZ, then /etc/localtime), UTC when it cannot be told."""
    candidates = [os.environ.get("TZ", "").lstrip(":")]
    with contextlib.suppress(OSError, IndexError):
        candidates.append(str(Path("/etc/localtime").resolve()).split("zoneinfo/", 1)[1])
    for name in candidates:
        if name:
            try:
                ZoneInfo(name)
                return name
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return "UTC"


@dataclass(kw_only=True)
class ServerConfig:
    listen: str = "127.0.0.1:50051"
    schedule_file: Path = Path("xcron.xml")
    data_dir: Path = Path(".xcron-data")
    job_modules: list[str] = field(default_factory=list)
    load_entry_points: bool = True
    time_zone: str = field(default_factory=local_zone_name)
    shutdown_grace: float = 10.0
    max_threads: int = 8
    history_keep_last: int | None = 1000
    history_max_age_days: int | None = 90


class XcronServer:
    def __init__(self, config: ServerConfig, *, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.registry = JobRegistry()
        self.store = SqliteStateStore(config.data_dir / "state.sqlite3")
        self.bus = EventBus()
        self.health = health.aio.HealthServicer()
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self.manager: JobManager | None = None

    async def start(self) -> int:
        """Loads jobs and xcron.xml (refusing a bad file), opens the store, binds; returns the port."""
        config = self.config
        if config.load_entry_points:
            self.registry.load_entry_points()
        for module in config.job_modules:
            self.registry.load_module(module)
        executor = Executor(
            self.registry,
            self.store,
            self.bus,
            self.clock,
            max_threads=config.max_threads,
            services={
                "schedule_file": config.schedule_file,
                "data_dir": config.data_dir,
                "history_keep_last": config.history_keep_last,
                "history_max_age_days": config.history_max_age_days,
            },
        )
        manager = JobManager(
            registry=self.registry,
            store=self.store,
            bus=self.bus,
            clock=self.clock,
            schedule_file=config.schedule_file,
            default_zone=config.time_zone,
            executor=executor,
        )
        manager.load_schedules()
        await self.store.open()
        await manager.start()
        self.manager = manager

        server = grpc.aio.server()
        job_service_pb2_grpc.add_JobServiceServicer_to_server(Servicer(manager), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (
                SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        self.port = server.add_insecure_port(config.listen)
        await server.start()
        self._server = server
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "xcron ready (--listen %s, port %d): %d jobs, schedules from %s, time zone %s",
            config.listen,
            self.port,
            len(self.registry),
            config.schedule_file,
            config.time_zone,
        )
        return self.port

    async def stop(self) -> None:
        """Health NOT_SERVING, no new runs, running jobs asked to cancel within the grace period."""
        await self.health.enter_graceful_shutdown()
        if self.manager is not None:
            await self.manager.stop(self.config.shutdown_grace)
        if self._server is not None:
            await self._server.stop(grace=1.0)
        await self.store.close()

    async def wait(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()


async def serve(config: ServerConfig) -> None:
    server = XcronServer(config)
    await server.start()
    print(f"xcron listening on {config.listen.rsplit(':', 1)[0]}:{server.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)

    reloads: set[asyncio.Task[None]] = set()

    def reload() -> None:
        async def go() -> None:
            assert server.manager is not None
            try:
                await server.manager.reload()
            except Exception as exc:
                log.error("SIGHUP reload failed: %s", exc)

        reloads.add(task := loop.create_task(go()))
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload)
    await stop.wait()
    log.info("stopping: no new runs; running jobs get %.0fs to finish", config.shutdown_grace)
    await server.stop()
    log.info("stopped")
