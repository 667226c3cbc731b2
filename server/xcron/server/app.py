"""Builds and runs the server: stores -> core -> gRPC (JobService, health, reflection)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from xcron.server.api import reflection
from xcron.server.api.auth import AuthFailures, AuthInterceptor, Authorizer, TokenTable, load_token_table
from xcron.server.api.connect import ConnectJobService, HealthASGIApplication, connect_app
from xcron.server.api.decode import DecodeGuard, guard_decoding
from xcron.server.api.http import HttpServer, http_app, load_panel, loopback_hosts
from xcron.server.api.servicer import Servicer, add_to_server
from xcron.server.api.tls import (
    TlsConfigError,
    TlsFiles,
    check_plaintext_allowed,
    is_loopback_listen,
    listen_host,
    server_credentials,
)
from xcron.server.api.wrapping import HandlerRegistry, WrappingRegistrar
from xcron.server.assembly import WRITTEN_COPY_NAME, build_core
from xcron.server.core.clock import Clock, SystemClock
from xcron.server.core.events import EventBus
from xcron.server.core.executor import Executor
from xcron.server.core.limits import Limits
from xcron.server.core.manager import JobManager
from xcron.server.core.registry import JobRegistry
from xcron.server.core.zones import is_iana_zone
from xcron.server.metrics import Metrics
from xcron.server.stores.datadir import DataDirLock, remove_stale_temp_files
from xcron.server.stores.postgres import PostgresStateStore
from xcron.server.stores.schedules import FileScheduleSource, PostgresScheduleSource
from xcron.v1 import job_service_pb2

log = logging.getLogger("xcron.server")
SERVICE_NAME = job_service_pb2.DESCRIPTOR.services_by_name["JobService"].full_name

GC_YOUNGEST_THRESHOLD = 10_000
"""Net allocations between two collections of the youngest generation, once the server has started (CPython's
default is 700). A run allocates a few hundred objects, nearly all freed by reference counting; at the
default the collector ran every few runs and took ~6 % of the event loop's time under RunJob load (py-spy).
At 10,000, bench.runs did ~4 % more runs a second on ~4 % less CPU each (8 pairs taking turns; 50,000 did
no better). Only garbage in reference cycles waits longer for the collector."""


class _YoungCollection:
    """The process's threshold for its youngest generation, raised to GC_YOUNGEST_THRESHOLD while at least one
    server runs in it and put back when the last one stops. Left alone where it is that high already, or 0 (a
    host that turned automatic collection off keeps it off)."""

    def __init__(self) -> None:
        self._holders = 0
        self._before: tuple[int, int, int] | None = None

    def hold(self) -> None:
        if not self._holders:
            threshold = gc.get_threshold()
            if 0 < threshold[0] < GC_YOUNGEST_THRESHOLD:
                gc.set_threshold(GC_YOUNGEST_THRESHOLD, *threshold[1:])
                self._before = threshold
        self._holders += 1

    def release(self) -> None:
        self._holders -= 1
        if not self._holders and self._before is not None:
            gc.set_threshold(*self._before)
            self._before = None


_YOUNG_COLLECTION = _YoungCollection()


def local_zone_name() -> str:
    """The machine's IANA zone name (TZ, then /etc/localtime), UTC when it cannot be told."""
    candidates = [os.environ.get("TZ", "").lstrip(":")]
    with contextlib.suppress(OSError, IndexError):
        candidates.append(str(Path("/etc/localtime").resolve()).split("zoneinfo/", 1)[1])
    for name in candidates:
        if name and is_iana_zone(name):
            return name
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
    event_loop: str = "uvloop"
    """"uvloop" (the default where it is installed: less CPU per run, see bench/RESULTS.md) or "asyncio"."""
    max_threads: int = 8
    history_keep_last: int | None = 1000
    history_max_age_days: int | None = 90
    # Security (see xcron.server.api.tls and xcron.server.api.auth). No TLS: plaintext, loopback only
    # unless allow_insecure. No tokens_file: no authentication.
    tls: TlsFiles | None = None
    allow_insecure: bool = False
    tokens_file: Path | None = None
    reflection_requires_token: bool = False
    limits: Limits = field(default_factory=Limits)
    metrics_listen: str | None = None
    http_listen: str | None = None
    """host:port for JobService over Connect/gRPC-Web and the jobs panel; None for no HTTP port."""
    """host:port for Prometheus' /metrics; None for no endpoint (metrics are still kept)."""
    store_dsn: str | None = None
    """A postgresql:// URL: state, history and schedules in PostgreSQL, shared by replicas."""
    store_schema: str = "xcron"
    replica_id: str | None = None
    lease_seconds: float = 15.0
    import_file: Path | None = None
    """With store_dsn: replace the shared schedules with this xcron.xml and exit (no serving)."""
    export_file: Path | None = None
    """With store_dsn: write the shared schedules to this file and exit (no serving)."""


class ListenError(Exception):
    """The listen address cannot be bound (in use by another process, or not an address of this host)."""


class XcronServer:
    def __init__(self, config: ServerConfig, *, clock: Clock | None = None) -> None:
        self.config = config
        self._holds_young_collection = False  # see _YOUNG_COLLECTION
        self.metrics = Metrics()
        self.auth_failures = AuthFailures(self.metrics.auth_failed)  # refused calls, gRPC and HTTP alike
        self.core = build_core(config, clock=clock, observer=self.metrics)
        self.clock = self.core.clock
        self.registry = self.core.registry
        self.store = self.core.store
        self.schedule_source = self.core.schedule_source
        self.cluster = self.core.cluster
        self.bus = self.core.bus
        self.metrics_port: int | None = None
        self.health = health.aio.HealthServicer()
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._servicer: Servicer | None = None
        self._http: HttpServer | None = None
        self._connect: ConnectJobService | None = None
        self.http_port = 0
        self.manager: JobManager | None = None
        self._health_tasks: set[asyncio.Task[None]] = set()
        # One server per data dir (SQLite state). Replicas on PostgreSQL share nothing on disk.
        self.data_dir_lock = DataDirLock(config.data_dir) if not config.store_dsn else None

    async def start(self) -> int:
        """Loads jobs and xcron.xml (refusing a bad file), opens the store, binds; returns the port.

        Raises DataDirLocked when another process owns the data dir, and ListenError when the
        address is in use: either way before anything is read, opened or run."""
        try:
            return await self._start()
        except BaseException:
            if self.data_dir_lock is not None:
                self.data_dir_lock.release()
            self._release_young_collection()
            raise

    async def _start(self) -> int:
        config = self.config
        # Security settings first: a bad certificate, tokens file or listen address refuses to start
        # before anything is loaded or opened.
        credentials = server_credentials(config.tls) if config.tls is not None else None
        if credentials is None:
            check_plaintext_allowed(config.listen, allow_insecure=config.allow_insecure)
            if config.http_listen is not None:
                check_plaintext_allowed(config.http_listen, allow_insecure=config.allow_insecure)
        tokens = self._load_tokens()
        if self.data_dir_lock is not None:
            self.data_dir_lock.acquire()
            remove_stale_temp_files(config.schedule_file)
            remove_stale_temp_files(config.data_dir / WRITTEN_COPY_NAME)
        if config.load_entry_points:
            self.registry.load_entry_points()
        for module in config.job_modules:
            self.registry.load_module(module)
        executor, manager = self.core.executor, self.core.manager
        server = self._grpc_server(tokens)
        # Bound before the store is opened and anything runs: a server that cannot listen changes nothing.
        self.port = self._bind(server, credentials)
        if config.http_listen is not None:
            self._http = self._http_server(config.http_listen, tokens)
        await self.store.open()
        await manager.load_schedules()
        await manager.start()
        # Everything loaded so far lives as long as the server: keep it out of the collector's full
        # passes, which otherwise stall the loop for ~100 ms on a large heap (scheduler lateness).
        gc.collect()
        gc.freeze()
        _YOUNG_COLLECTION.hold()
        self._holds_young_collection = True
        if self.cluster is not None:
            await self.cluster.start()
        self.manager = manager

        self.metrics.track(running=lambda: executor.running_count, watchers=lambda: self.bus.watcher_count)
        if config.metrics_listen is not None:
            self.metrics_port = self.metrics.serve(config.metrics_listen)
        await server.start()
        self._server = server
        if self._http is not None:
            self.http_port = await self._http.start()
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        executor.add_health_listener(self._store_health_changed)
        self._announce(tokens)
        return self.port

    def _http_server(self, http_listen: str, tokens: TokenTable | None) -> HttpServer:
        """The Connect/gRPC-Web/panel port over the gRPC servicer's handlers, its socket already bound."""
        config = self.config
        assert self._servicer is not None  # made by _grpc_server
        authorizer = (
            None if tokens is None else Authorizer(tokens, reflection_requires_token=config.reflection_requires_token)
        )
        self._connect = ConnectJobService(
            self._servicer.handlers, authorizer, self.auth_failures, on_call_end=self.metrics.count_rpc
        )
        app = http_app(
            connect_app(self._connect, read_max_bytes=config.limits.max_request_bytes),
            load_panel(),
            HealthASGIApplication(self.health),
            allowed_hosts=(loopback_hosts(listen_host(http_listen)) if is_loopback_listen(http_listen) else None),
        )
        http = HttpServer(app, http_listen, config.tls)
        try:
            http.bind()
        except OSError as exc:
            raise ListenError(f"cannot listen on {http_listen} (--http-listen): {exc.strerror or exc}") from exc
        return http

    def _load_tokens(self) -> TokenTable | None:
        if self.config.tokens_file is None:
            return None
        tokens = load_token_table(self.config.tokens_file)
        if tokens.legacy_names:
            log.warning(
                "tokens file: %d line(s) still hashed with scrypt (%s): each costs ~50 ms per unknown token; "
                "replace them with `xcron-server --hash-token` lines (HMAC-SHA256)",
                len(tokens.legacy_names),
                ", ".join(tokens.legacy_names),
            )
        return tokens

    def _grpc_server(self, tokens: TokenTable | None) -> grpc.aio.Server:
        """JobService, health and reflection behind the interceptors (not bound yet)."""
        config = self.config
        auth = (
            []
            if tokens is None
            else [
                AuthInterceptor(
                    tokens,
                    reflection_requires_token=config.reflection_requires_token,
                    failures=self.auth_failures,
                )
            ]
        )
        # With auth: counted first, so refused calls count too; DecodeGuard last: it wraps the real handler.
        # Without auth, no interceptor at all: the counter and the decode guard wrap each handler once, as
        # it is registered (grpc.aio awaits every interceptor on every call).
        interceptors = [self.metrics.interceptor(), *auth, DecodeGuard()] if auth else []
        server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", config.limits.max_request_bytes),
                ("grpc.max_send_message_length", 64 * 1024 * 1024),
                # No SO_REUSEPORT: a port another server listens on refuses to start (ListenError),
                # instead of the kernel spreading calls over both.
                ("grpc.so_reuseport", 0),
            ],
        )
        # Generic handlers only, with auth or without (WrappingRegistrar.add_registered_method_handlers).
        wrap = None if auth else self.metrics.handler_wrap(guard_decoding)
        registrar: HandlerRegistry = WrappingRegistrar(server, wrap)
        self._servicer = Servicer(self.core.manager)  # its handlers serve the Connect port too
        add_to_server(self._servicer, registrar)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, registrar)
        reflection.enable(registrar, (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name))
        return server

    def _bind(self, server: grpc.aio.Server, credentials: grpc.ServerCredentials | None) -> int:
        listen = self.config.listen
        if credentials is None:
            try:
                return int(server.add_insecure_port(listen))
            except RuntimeError as exc:
                raise ListenError(
                    f"cannot listen on {listen}: the address is in use (another server?) or not local"
                ) from exc
        try:
            return int(server.add_secure_port(listen, credentials))
        except RuntimeError as exc:  # gRPC logs the reason (e.g. "Invalid private key") just before
            raise TlsConfigError(
                f"cannot serve TLS on {listen}: the key does not belong to the certificate, "
                "a PEM file is corrupt, or the address is in use"
            ) from exc

    def _announce(self, tokens: TokenTable | None) -> None:
        config = self.config
        log.info(
            "xcron ready (--listen %s, port %d, %s, %s): %d jobs, schedules from %s, time zone %s",
            config.listen,
            self.port,
            "plaintext" if config.tls is None else "mutual TLS" if config.tls.client_ca else "TLS",
            "no authentication" if tokens is None else f"{len(tokens)} bearer token(s)",
            len(self.registry),
            self.schedule_source.description,
            config.time_zone,
        )
        if self._http is not None and config.http_listen is not None:
            host = config.http_listen.rsplit(":", 1)[0]
            log.info("jobs panel and Connect API on http%s://%s:%d/", "s" if config.tls else "", host, self.http_port)
        if self.metrics_port is not None and config.metrics_listen is not None:
            log.info("metrics on http://%s:%d/metrics", config.metrics_listen.rsplit(":", 1)[0], self.metrics_port)

    def _store_health_changed(self, healthy: bool) -> None:
        """NOT_SERVING while an ended run's outcome is kept only in memory (the store refuses it), as a
        Kubernetes readiness probe would want: send new work elsewhere until the disk has room."""
        if healthy:
            log.warning("the state store takes writes again: every outcome is recorded; health SERVING")
        else:
            log.error("the state store refuses writes: outcomes kept in memory; health NOT_SERVING until recorded")
        status = health_pb2.HealthCheckResponse.SERVING if healthy else health_pb2.HealthCheckResponse.NOT_SERVING

        async def apply() -> None:
            for name in ("", SERVICE_NAME):
                await self.health.set(name, status)

        task = asyncio.get_running_loop().create_task(apply())
        self._health_tasks.add(task)
        task.add_done_callback(self._health_tasks.discard)

    def _release_young_collection(self) -> None:
        if self._holds_young_collection:
            self._holds_young_collection = False
            _YOUNG_COLLECTION.release()

    async def stop(self) -> None:
        """Health NOT_SERVING, no new runs, running jobs asked to cancel within the grace period."""
        await self.health.enter_graceful_shutdown()
        if self._connect is not None:
            self._connect.close_streams()  # watch streams end cleanly before uvicorn would cancel them
        if self.manager is not None:
            await self.manager.stop(self.config.shutdown_grace)
        if self.cluster is not None:
            await self.cluster.stop()
        if self._server is not None:
            await self._server.stop(grace=1.0)
        if self._http is not None:
            await self._http.stop()
        try:
            await self.store.close()
            if self.data_dir_lock is not None:
                self.data_dir_lock.release()
        finally:
            self._release_young_collection()

    async def wait(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()


async def import_schedules(config: ServerConfig) -> None:
    """`--import FILE`: replaces the stored schedules with the file's, checked against the jobs as a reload
    checks them, then returns. Not a replica: it leaves no row in the replica list."""
    assert config.store_dsn is not None and config.import_file is not None
    store = PostgresStateStore(config.store_dsn, schema=config.store_schema, replica_id=config.replica_id)
    await store.open(register=False)
    try:
        registry = JobRegistry()
        if config.load_entry_points:
            registry.load_entry_points()
        for module in config.job_modules:
            registry.load_module(module)
        bus, clock = EventBus(), SystemClock()
        manager = JobManager(
            registry=registry,
            store=store,
            bus=bus,
            clock=clock,
            schedule_source=PostgresScheduleSource(store),
            default_zone=config.time_zone,
            executor=Executor(registry, store, bus, clock, max_threads=1),
        )
        await manager.import_schedules(FileScheduleSource(config.import_file))
    finally:
        await store.close()


async def export_schedules(config: ServerConfig) -> None:
    """`--export FILE`: the stored schedules as an xcron.xml file that SanteDB and xcron read. Not a
    replica: it leaves no row in the replica list."""
    assert config.store_dsn is not None and config.export_file is not None
    store = PostgresStateStore(config.store_dsn, schema=config.store_schema, replica_id=config.replica_id)
    await store.open(register=False)
    try:
        document = await PostgresScheduleSource(store).load(default_zone=config.time_zone)
        await FileScheduleSource(config.export_file).save(
            document, default_zone=config.time_zone, known=lambda _: False
        )
        log.info("exported %d schedule entries to %s", len(document.entries), config.export_file)
    finally:
        await store.close()


async def serve(config: ServerConfig) -> None:
    server = XcronServer(config)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    # Announced once the signals are handled: a SIGTERM right after this line is a graceful stop.
    if config.http_listen is not None:  # first: "listening" is the line that tells it is ready
        print(f"xcron http on {config.http_listen.rsplit(':', 1)[0]}:{server.http_port}", flush=True)
    print(f"xcron listening on {config.listen.rsplit(':', 1)[0]}:{server.port}", flush=True)

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
    await _exit_if_stuck(EXIT_BOUND)


EXIT_BOUND = 2.0
"""Seconds left tasks get after the stop to end once cancelled, before the process exits regardless."""


async def _exit_if_stuck(bound: float) -> None:
    """An async job that swallows cancellation would keep asyncio.run (and the process) waiting until it
    ends by itself. Its run is already recorded ABORTED and the store is closed: cancel what is left,
    give it `bound` seconds, then leave without it."""
    me = asyncio.current_task()
    left = [task for task in asyncio.all_tasks() if task is not me and not task.done()]
    for task in left:
        task.cancel()
    if left:
        _done, stuck = await asyncio.wait(left, timeout=bound)
        if stuck:
            names = ", ".join(sorted(task.get_name() for task in stuck))
            log.warning("exiting with %d task(s) that ignore cancellation: %s", len(stuck), names)
            logging.shutdown()
            sys.stdout.flush()
            os._exit(0)
