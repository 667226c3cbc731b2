"""PostgreSQL state store: the `StateStore` protocol plus the primitives several replicas need to share one database.

Single-node behaviour is the SQLite store's. On top of it, for a cluster of replicas on one schema:

Guarantees
- **Every call has a deadline** (`call_timeout`, default lease/2 within 1-10 s), measured by the caller: at
  the deadline the connection's socket is closed and the call raises StoreUnavailable, whatever the network
  or the server does. Connections also carry connect_timeout, statement_timeout,
  idle_in_transaction_session_timeout, TCP keepalives and tcp_user_timeout; listeners ping their connection
  when it has been quiet for lease/3 and reconnect when the ping gets no answer in time.
- **Leases with epochs.** `heartbeat()` renews this replica's lease (database clock). Each process start,
  and each renewal after the lease lapsed or was expired by another replica, takes a new epoch from a
  sequence; a lapse also records ABORTED every run still RUNNING under an older epoch.
- **Exactly one claim per occurrence**, and only under a valid lease: `claim_occurrence(job, schedule, due)`
  returns True for exactly one caller across all replicas (a primary key on the occurrence). The claimant
  records the schedule's fire time in the same transaction, so there is one write per occurrence. Claims
  are pruned `claim_retention` after their due time, so that must exceed any misfire grace period.
- **At most one RUNNING execution per job, cluster-wide.** A partial unique index
  `executions(job_id) WHERE state = 'running'` enforces it: `try_start_run` (only under a valid lease)
  returns None when another run holds the job, and a plain `save_execution` of a second RUNNING run raises
  `Conflict(JOB_ALREADY_RUNNING)`. `try_start_run` points the job row at the new run in the same transaction.
- **Fenced run writes.** Replacing an execution checks, in the UPDATE, that it is still RUNNING, owned by
  this replica under the epoch it was started with, and that this lease is valid; otherwise `RunFenced`
  carries what the database holds. An ABORTED run stays ABORTED. Job rows never move back to an older run
  nor contradict their run's outcome.
- **Idempotent requests, cluster-wide.** `(job_id, request_id)` is unique; `try_start_run` with a used
  request id returns the first execution instead of starting another.
- **Lease-based recovery.** Runs owned by a replica not seen within the lease are ABORTED by
  `expire_dead_replicas` (and by `abort_interrupted` on start), which also ends that replica's epoch. All
  lease arithmetic uses the database clock (`now()`), so replica clocks may drift.
- **Cancel requests reach the owner.** `request_cancel` sets a sticky `cancel_requested` flag and notifies;
  `listen_cancels` yields the ids for this replica, and after every (re)connect first yields the flags already
  set, so a request made while the listener was disconnected is not lost.
- **Schedule document edits are compare-and-swap** on a version (`save_schedule_xml(expected_version=…)`).
- **Schedule records are cluster-safe**: saved in one lock order (no deadlocks), fire times only move
  forward, skip counters are one row per replica and their sums are the totals (`refresh_counters`).

Not guaranteed
- A replica cut off from the database must stop its runs itself (see core/cluster.py: it does so when its
  own monotonic clock says the lease ran out, no later than the others can expire it); a run that ignores
  cancellation keeps running, and a frozen process (SIGSTOP, a long GC pause) cannot act until it thaws.
  The fenced writes make sure the database never takes such a run's late outcome.
- Events (`publish_event`/`listen_events`) are best-effort: NOTIFY is not stored, so a listener misses what
  is published while it reconnects (`on_listen` tells it to re-read), and a listener that falls more than
  10,000 payloads behind drops the oldest. Listeners receive their own replica's events too.
- `replica_id` must be unique among live replicas. With the default (host, pid, random suffix), a restarted
  process is a new replica and its previous runs are recovered once the old id's lease has expired; pass a
  stable id (e.g. the pod name) for immediate recovery on restart.

Connections: a small fixed pool (`pool_size`, default 4) of lazily opened autocommit connections handed out
to one task at a time (psycopg_pool is not a dependency), plus one dedicated connection per active listener.
A connection that broke, was cut off at its deadline, or was interrupted mid-transaction is closed, never
reused; an idle one the server ended (restart, terminated backend) is noticed without a round trip and
replaced before anyone uses it. Each shows as `xcron/<schema>/<replica>` in pg_stat_activity.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import select
import socket
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, LiteralString

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Json

from xcron.server.core.errors import Conflict, StoreUnavailable
from xcron.server.core.model import ExecutionState, JobState, Trigger
from xcron.server.core.params import decode_parameters, encode_parameters
from xcron.server.stores.state import (
    INTERRUPTED,
    ExecutionCursor,
    ExecutionRecord,
    JobRecord,
    RunFenced,
    ScheduleRecord,
)

log = logging.getLogger(__name__)

Connection = psycopg.AsyncConnection[DictRow]

MAX_PAYLOAD_BYTES = 8000
"""PostgreSQL's limit on a NOTIFY payload in the default build (payloads must be strictly shorter)."""
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,55}")
_LISTEN_QUEUE = 10_000
_PRUNE_EVERY = 3600.0  # seconds between prunes of old occurrence claims, per replica

RUNNING = ExecutionState.RUNNING.value

MIGRATIONS: tuple[LiteralString, ...] = (
    # 1: what the SQLite store has.
    """
    CREATE TABLE {s}.jobs (
        job_id text PRIMARY KEY, state text NOT NULL, progress double precision NOT NULL,
        status_text text NOT NULL, last_start timestamptz, last_finish timestamptz, execution_id text NOT NULL
    );
    CREATE TABLE {s}.executions (
        id text COLLATE "C" PRIMARY KEY, job_id text NOT NULL, parameters json NOT NULL, trigger text NOT NULL,
        state text NOT NULL, start_time timestamptz NOT NULL, finish_time timestamptz, error text NOT NULL,
        progress double precision NOT NULL, status_text text NOT NULL, scheduled_time timestamptz,
        request_id text NOT NULL, cancel_requested boolean NOT NULL
    );
    CREATE INDEX executions_by_job ON {s}.executions (job_id, start_time DESC, id DESC);
    CREATE TABLE {s}.schedules (
        job_id text NOT NULL, schedule_key text NOT NULL, last_fire timestamptz, last_run timestamptz,
        overlap_skipped integer NOT NULL, misfire_skipped integer NOT NULL,
        PRIMARY KEY (job_id, schedule_key)
    );
    """,
    # 2: the cluster: run ownership, cluster-wide uniqueness, occurrence claims, replica leases.
    """
    ALTER TABLE {s}.executions ADD COLUMN owner text NOT NULL DEFAULT '';
    CREATE UNIQUE INDEX executions_by_request ON {s}.executions (job_id, request_id) WHERE request_id <> '';
    CREATE UNIQUE INDEX executions_one_running ON {s}.executions (job_id) WHERE state = 'running';
    CREATE INDEX executions_running_by_owner ON {s}.executions (owner) WHERE state = 'running';
    CREATE TABLE {s}.occurrence_claims (
        job_id text NOT NULL, schedule_key text NOT NULL, due timestamptz NOT NULL,
        replica_id text NOT NULL, claimed_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (job_id, schedule_key, due)
    );
    CREATE INDEX occurrence_claims_by_due ON {s}.occurrence_claims (due);
    CREATE TABLE {s}.replicas (
        replica_id text PRIMARY KEY, first_seen timestamptz NOT NULL DEFAULT now(), last_seen timestamptz NOT NULL
    );
    """,
    # 3: the schedules themselves, shared by all replicas: the xcron.xml document, SanteDB format.
    """
    CREATE TABLE {s}.schedule_document (
        id integer PRIMARY KEY CHECK (id = 1), xml bytea NOT NULL, updated_at timestamptz NOT NULL DEFAULT now(),
        updated_by text NOT NULL
    );
    """,
    # 4: fencing. A replica's lease has an epoch (new at every start and after every lapse); each run records
    # the epoch it was started under, and its owner may change it only under that same, still valid, lease.
    # The schedule document gets a version for compare-and-swap edits.
    """
    CREATE SEQUENCE {s}.lease_epochs;
    ALTER TABLE {s}.replicas ADD COLUMN epoch bigint NOT NULL DEFAULT 0;
    ALTER TABLE {s}.executions ADD COLUMN epoch bigint NOT NULL DEFAULT 0;
    ALTER TABLE {s}.schedule_document ADD COLUMN version bigint NOT NULL DEFAULT 1;
    """,
    # 5: skip counters, one row per schedule and replica (each replica writes only its own; totals are sums),
    # replacing the counter columns of schedules, which stay at 0.
    """
    CREATE TABLE {s}.schedule_counters (
        job_id text NOT NULL, schedule_key text NOT NULL, replica_id text NOT NULL,
        overlap_skipped integer NOT NULL, misfire_skipped integer NOT NULL,
        PRIMARY KEY (job_id, schedule_key, replica_id)
    );
    INSERT INTO {s}.schedule_counters SELECT job_id, schedule_key, '', overlap_skipped, misfire_skipped
        FROM {s}.schedules WHERE overlap_skipped <> 0 OR misfire_skipped <> 0;
    UPDATE {s}.schedules SET overlap_skipped = 0, misfire_skipped = 0;
    """,
)

_EXECUTION_COLUMNS: LiteralString = (
    "id, job_id, parameters, trigger, state, start_time, finish_time, error, progress, status_text,"
    " scheduled_time, request_id, cancel_requested, owner, epoch"
)
_EXECUTION_VALUES: LiteralString = (
    "%(id)s, %(job_id)s, %(parameters)s, %(trigger)s, %(state)s, %(start_time)s, %(finish_time)s, %(error)s,"
    " %(progress)s, %(status_text)s, %(scheduled_time)s, %(request_id)s, %(cancel_requested)s, %(owner)s, %(epoch)s"
)
# A job row changes only to follow its run, never back to an older run, never against its run's outcome.
_JOB_ROW_GUARD: LiteralString = """(
    (jobs.execution_id = EXCLUDED.execution_id AND NOT EXISTS (
       SELECT 1 FROM {s}.executions x WHERE x.id = EXCLUDED.execution_id
       AND x.state <> 'running' AND x.state <> EXCLUDED.state))
    OR (jobs.execution_id <> EXCLUDED.execution_id AND NOT EXISTS (
       SELECT 1 FROM {s}.executions cur WHERE cur.id = jobs.execution_id
       AND (cur.state = 'running' OR cur.start_time > coalesce(EXCLUDED.last_start, '-infinity')))))"""
# True while this replica (%(me)s) holds the lease of epoch %(epoch)s, by the database clock.
_LEASE_HELD: LiteralString = """EXISTS (SELECT 1 FROM {s}.replicas lease WHERE lease.replica_id = %(me)s
    AND lease.epoch = %(epoch)s AND lease.epoch <> 0 AND lease.last_seen >= now() - %(lease)s)"""


def default_replica_id() -> str:
    """Unique per process start: host, pid and a random suffix (pids repeat across containers)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def replica_stopped(replica_id: str) -> str:
    return f"interrupted: replica {replica_id} stopped"


def lease_lost(replica_id: str) -> str:
    return f"interrupted: replica {replica_id} lost its lease (no heartbeat reached the database in time)"


def _utc(value: datetime | None) -> datetime | None:
    # Naive values are local time, as in the SQLite store; everything is stored and returned in UTC.
    return value.astimezone(UTC) if value is not None else None


def _execution(row: Mapping[str, Any]) -> ExecutionRecord:
    return ExecutionRecord(
        id=row["id"],
        job_id=row["job_id"],
        parameters=decode_parameters(row["parameters"]),
        trigger=Trigger(row["trigger"]),
        state=ExecutionState(row["state"]),
        start_time=row["start_time"].astimezone(UTC),
        finish_time=_utc(row["finish_time"]),
        error=row["error"],
        progress=row["progress"],
        status_text=row["status_text"],
        scheduled_time=_utc(row["scheduled_time"]),
        request_id=row["request_id"],
        cancel_requested=row["cancel_requested"],
    )


def _execution_params(record: ExecutionRecord, owner: str, epoch: int) -> dict[str, Any]:
    return {
        "id": record.id,
        "job_id": record.job_id,
        "parameters": Json(encode_parameters(record.parameters)),
        "trigger": record.trigger.value,
        "state": record.state.value,
        "start_time": _utc(record.start_time),
        "finish_time": _utc(record.finish_time),
        "error": record.error,
        "progress": record.progress,
        "status_text": record.status_text,
        "scheduled_time": _utc(record.scheduled_time),
        "request_id": record.request_id,
        "cancel_requested": record.cancel_requested,
        "owner": owner,
        "epoch": epoch,
    }


async def _connect(dsn: str, deadline: float, application_name: str = "xcron") -> Connection:
    """A connection whose every part has a deadline: connecting, each statement (on the server), and TCP
    (keepalives while idle; tcp_user_timeout while data goes unacknowledged). The client-side deadline
    in `PostgresStateStore._conn` covers what none of these sees (a peer that accepts but never answers)."""
    seconds = max(1, round(deadline))
    conn = await psycopg.AsyncConnection.connect(
        dsn,
        autocommit=True,
        row_factory=dict_row,
        connect_timeout=max(2, seconds),  # libpq's minimum
        keepalives=1,
        keepalives_idle=seconds,
        keepalives_interval=1,
        keepalives_count=3,
        tcp_user_timeout=int(deadline * 1000),
        application_name=application_name[:63],
    )
    await conn.execute("SET TIME ZONE 'UTC'")
    await conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(int(deadline * 1000))))
    await conn.execute(
        sql.SQL("SET idle_in_transaction_session_timeout = {}").format(sql.Literal(int(deadline * 2000)))
    )
    return conn


class _Deadline:
    """Cuts a call off after `seconds`. With a connection, its socket is shut down: the call then fails at
    once with "connection closed", and the pool discards the connection (no polite cancel request: a server
    that does not answer would not answer that either; and the descriptor stays open until the connection
    is closed, so no new socket can take its number under a waiting reader). Without one (waiting for a
    pool slot, or connecting), the calling task is cancelled."""

    def __init__(self, seconds: float) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.seconds = seconds
        self.expired = False
        self.conn: Connection | None = None
        self._task = task
        self._cancelled = False
        self._timer = asyncio.get_running_loop().call_later(seconds, self._expire)

    def _expire(self) -> None:
        self.expired = True
        if self.conn is not None and not self.conn.closed:
            try:
                with socket.fromfd(self.conn.fileno(), socket.AF_INET, socket.SOCK_STREAM) as sock:  # a dup
                    sock.shutdown(socket.SHUT_RDWR)
                return
            except (OSError, psycopg.Error):
                pass
        self._cancelled = True
        self._task.cancel()

    def end(self) -> bool:
        """Stops the timer; True if it had fired (the caller then reports the timeout)."""
        self._timer.cancel()
        if self._cancelled:
            self._cancelled = False
            self._task.uncancel()
        return self.expired


def _has_input(conn: Connection) -> bool:
    readable, _, _ = select.select([conn.fileno()], [], [], 0)
    return bool(readable)


class _ConnectionPool:
    """A fixed number of lazily opened autocommit connections, each used by one task at a time."""

    def __init__(self, dsn: str, size: int, deadline: float, application_name: str) -> None:
        if size < 1:
            raise ValueError("pool_size must be at least 1")
        self._dsn = dsn
        self._deadline = deadline
        self._application_name = application_name
        self._size = size
        self._slots: asyncio.Queue[Connection | None] | None = None
        self._connections: set[Connection] = set()

    def open(self) -> None:
        self._slots = asyncio.Queue()
        for _ in range(self._size):
            self._slots.put_nowait(None)

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        slots = self._slots
        if slots is None:
            raise StoreUnavailable("the state store is closed")
        conn = await slots.get()
        try:
            if conn is not None and not conn.closed and _has_input(conn):
                # An idle connection has nothing to read unless the server ended it (restart, terminated
                # backend) or reported a setting; one round trip tells which, so the caller never sees it.
                with contextlib.suppress(psycopg.Error):
                    await conn.execute("SELECT 1")
                if conn.closed or conn.info.transaction_status is not TransactionStatus.IDLE:
                    self._connections.discard(conn)
                    await conn.close()
            if conn is None or conn.closed:
                conn = None
                conn = await _connect(self._dsn, self._deadline, self._application_name)
                self._connections.add(conn)
            yield conn
        finally:
            if conn is not None and (conn.closed or conn.info.transaction_status is not TransactionStatus.IDLE):
                # Broken, or interrupted mid-statement/transaction: its state is unknown, so never reuse it.
                self._connections.discard(conn)
                await conn.close()
                conn = None
            slots.put_nowait(conn)

    async def close(self) -> None:
        self._slots = None
        connections, self._connections = self._connections, set()
        for conn in connections:
            await conn.close()


class PostgresStateStore:
    """`StateStore` on PostgreSQL, in its own schema, plus cluster primitives (see the module docstring)."""

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "xcron",
        replica_id: str | None = None,
        lease: timedelta = timedelta(seconds=30),
        pool_size: int = 4,
        claim_retention: timedelta = timedelta(days=7),
        call_timeout: float | None = None,
    ) -> None:
        if not _SCHEMA_NAME.fullmatch(schema):
            raise ValueError(f"schema {schema!r}: use 1-56 characters of lower-case letters, digits and '_'")
        self.schema = schema
        self.replica_id = replica_id or default_replica_id()
        self.lease = lease
        self.claim_retention = claim_retention
        self.call_timeout = call_timeout or min(10.0, max(1.0, lease.total_seconds() / 2))
        """Deadline of every database call (connect included), measured here, whatever the network does."""
        self.epoch = 0
        """This replica's lease epoch (0: none yet). Runs are started under it; only it may change them."""
        self.events_channel = f"{schema}.events"
        self.cancel_channel = f"{schema}.cancel"
        self._dsn = dsn
        self._schema_ident = sql.Identifier(schema)
        self.application_name = f"xcron/{schema}/{self.replica_id}"[:63]
        """Shown in pg_stat_activity: which replica of which schema holds a connection."""
        self._pool = _ConnectionPool(dsn, pool_size, self.call_timeout, self.application_name)
        self._closed = True
        self._readers: set[asyncio.Task[None]] = set()
        self._last_prune = float("-inf")
        self._others: dict[tuple[str, str], tuple[int, int]] = {}
        """Per schedule, the other replicas' skip counters when this one last loaded or refreshed them."""

    @property
    def dsn(self) -> str:
        """The connection string (for tools such as pg_dump that connect on their own)."""
        return self._dsn

    # -- plumbing ------------------------------------------------------------------------------

    def _sql(self, text: LiteralString) -> sql.Composed:
        return sql.SQL(text).format(s=self._schema_ident)

    @contextlib.asynccontextmanager
    async def _conn(self, limit: float | None = None) -> AsyncIterator[Connection]:
        """A pooled connection for one call, which must end within `limit` (default `call_timeout`) seconds:
        losing the database, or not hearing from it in time, surfaces as StoreUnavailable (as SQLite's I/O
        errors do). At the deadline the connection's socket is closed, not cancelled politely: a cancel
        request to a server that does not answer would hang as well."""
        if self._closed:
            raise StoreUnavailable("the state store is closed")
        deadline = _Deadline(limit or self.call_timeout)
        try:
            async with self._pool.connection() as conn:
                deadline.conn = conn  # at the deadline its socket is closed; the pool then discards it
                yield conn
        except BaseException as exc:
            if deadline.end():  # whatever the cut-off call raised (cancelled, or "connection closed")
                raise StoreUnavailable(
                    f"state store (PostgreSQL schema {self.schema}): no answer within {deadline.seconds:.1f} s"
                ) from None
            if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
                raise StoreUnavailable(f"state store (PostgreSQL schema {self.schema}): {exc}") from exc
            raise
        finally:
            deadline.end()

    # -- lifecycle -----------------------------------------------------------------------------

    async def open(self, *, register: bool = True) -> None:
        """Connects, creates or migrates the schema, and registers this replica (heartbeat: its first lease
        epoch). `register=False` for one-off tools (--import, --export): no row in the replica list."""
        if not self._closed:
            return
        self._pool.open()
        self._closed = False
        try:
            await self._migrate()
            if register:
                await self.heartbeat()
        except BaseException:
            await self.close()
            raise

    async def _migrate(self) -> None:
        # One transaction under an advisory lock keyed on the schema: replicas starting together queue up
        # here, and each later one finds the work done. Taken before anything touches the schema.
        digest = hashlib.sha256(f"xcron.migrate:{self.schema}".encode()).digest()
        lock_key = int.from_bytes(digest[:8], "big", signed=True)
        async with self._conn() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key,))
            await conn.execute(self._sql("CREATE SCHEMA IF NOT EXISTS {s}"))
            await conn.execute(
                self._sql(
                    "CREATE TABLE IF NOT EXISTS {s}.schema_version ("
                    " version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
                )
            )
            cur = await conn.execute(self._sql("SELECT coalesce(max(version), 0) AS v FROM {s}.schema_version"))
            row = await cur.fetchone()
            current = int(row["v"]) if row else 0
            if current > len(MIGRATIONS):
                raise StoreUnavailable(
                    f"PostgreSQL schema {self.schema} is at version {current}; this xcron knows up to "
                    f"{len(MIGRATIONS)} (a newer xcron migrated it)"
                )
            for version in range(current + 1, len(MIGRATIONS) + 1):
                await conn.execute(self._sql(MIGRATIONS[version - 1]))
                await conn.execute(self._sql("INSERT INTO {s}.schema_version (version) VALUES (%s)"), (version,))
                log.info("PostgreSQL schema %s migrated to version %d", self.schema, version)

    async def close(self) -> None:
        """Closes pooled connections and ends every listener (their iterators finish)."""
        self._closed = True
        readers, self._readers = self._readers, set()
        for task in readers:
            task.cancel()
        if readers:
            await asyncio.wait(readers)
        await self._pool.close()

    # -- StateStore ----------------------------------------------------------------------------

    async def load_jobs(self) -> dict[str, JobRecord]:
        async with self._conn() as conn:
            cur = await conn.execute(self._sql("SELECT * FROM {s}.jobs"))
            return {
                r["job_id"]: JobRecord(
                    job_id=r["job_id"],
                    state=JobState(r["state"]),
                    progress=r["progress"],
                    status_text=r["status_text"],
                    last_start=_utc(r["last_start"]),
                    last_finish=_utc(r["last_finish"]),
                    execution_id=r["execution_id"],
                )
                for r in await cur.fetchall()
            }

    async def save_job(self, record: JobRecord) -> None:
        async with self._conn() as conn:
            await conn.execute(
                self._sql(
                    """INSERT INTO {s}.jobs
                         (job_id, state, progress, status_text, last_start, last_finish, execution_id)
                       VALUES (%s, %s, %s, %s, %s, %s, %s)
                       ON CONFLICT (job_id) DO UPDATE SET state = EXCLUDED.state, progress = EXCLUDED.progress,
                         status_text = EXCLUDED.status_text, last_start = EXCLUDED.last_start,
                         last_finish = EXCLUDED.last_finish, execution_id = EXCLUDED.execution_id
                       WHERE """
                    + _JOB_ROW_GUARD
                ),
                (
                    record.job_id,
                    record.state.value,
                    record.progress,
                    record.status_text,
                    _utc(record.last_start),
                    _utc(record.last_finish),
                    record.execution_id,
                ),
            )

    async def save_execution(self, record: ExecutionRecord) -> None:
        """Inserts or replaces by id. A new row is owned by this replica under its lease epoch. A replace is
        fenced: it happens only while the stored run is RUNNING, owned by this replica, under the lease epoch
        it was started with, and that lease is still valid by the database clock. Otherwise the stored
        outcome stands and RunFenced says what it is (a run another replica recorded ABORTED stays ABORTED;
        a run of this replica's lapsed lease is recorded ABORTED first). `cancel_requested` is sticky.

        Raises Conflict when the row would be a second RUNNING execution of the job, or reuse a request id.
        """
        query = self._sql(
            "INSERT INTO {s}.executions (" + _EXECUTION_COLUMNS + ") VALUES (" + _EXECUTION_VALUES + ")"
            """ ON CONFLICT (id) DO UPDATE SET job_id = EXCLUDED.job_id, parameters = EXCLUDED.parameters,
                 trigger = EXCLUDED.trigger, state = EXCLUDED.state, start_time = EXCLUDED.start_time,
                 finish_time = EXCLUDED.finish_time, error = EXCLUDED.error, progress = EXCLUDED.progress,
                 status_text = EXCLUDED.status_text, scheduled_time = EXCLUDED.scheduled_time,
                 request_id = EXCLUDED.request_id,
                 cancel_requested = EXCLUDED.cancel_requested OR executions.cancel_requested
               WHERE executions.state = %(running)s AND executions.owner = %(me)s
                 AND executions.epoch = %(epoch)s AND """ + _LEASE_HELD + " RETURNING id"
        )
        params = _execution_params(record, self.replica_id, self.epoch)
        params.update(running=RUNNING, me=self.replica_id, lease=self.lease)
        async with self._conn() as conn:
            try:
                cur = await conn.execute(query, params)
                written = await cur.fetchone() is not None
            except psycopg.errors.UniqueViolation as exc:
                if exc.diag.constraint_name == "executions_one_running":
                    raise Conflict(
                        f"job {record.job_id!r} is already running on another replica", reason="JOB_ALREADY_RUNNING"
                    ) from exc
                if exc.diag.constraint_name == "executions_by_request":
                    raise Conflict(
                        f"request id {record.request_id!r} was already used for job {record.job_id!r}",
                        reason="DUPLICATE_REQUEST",
                    ) from exc
                raise
        if not written:
            await self._fenced(record)

    async def _fenced(self, record: ExecutionRecord) -> None:
        """A fenced replace wrote nothing: returns if the store already holds this outcome (a retry),
        else raises RunFenced with what it holds."""
        stored = await self.get_execution(record.id)
        if stored is None:
            raise StoreUnavailable(f"execution {record.id} vanished while it was being recorded")
        if (stored.state, stored.finish_time) == (record.state, _utc(record.finish_time)):
            return
        if stored.state is ExecutionState.RUNNING:
            # Ours, but our lease lapsed and nobody has noticed yet: renewing records it ABORTED.
            await self.heartbeat()
            stored = await self.get_execution(record.id) or stored
            if stored.state is ExecutionState.RUNNING:
                raise StoreUnavailable(f"execution {record.id}: its end could not be recorded yet (lease renewed)")
        raise RunFenced(stored)

    async def get_execution(self, execution_id: str) -> ExecutionRecord | None:
        async with self._conn() as conn:
            cur = await conn.execute(self._sql("SELECT * FROM {s}.executions WHERE id = %s"), (execution_id,))
            row = await cur.fetchone()
            return _execution(row) if row else None

    async def find_by_request_id(self, job_id: str, request_id: str) -> ExecutionRecord | None:
        if not request_id:
            return None  # "no request id" is not a key
        async with self._conn() as conn:
            return await self._find_request(conn, job_id, request_id)

    async def _find_request(self, conn: Connection, job_id: str, request_id: str) -> ExecutionRecord | None:
        cur = await conn.execute(
            self._sql("SELECT * FROM {s}.executions WHERE job_id = %s AND request_id = %s ORDER BY start_time LIMIT 1"),
            (job_id, request_id),
        )
        row = await cur.fetchone()
        return _execution(row) if row else None

    async def list_executions(
        self, job_id: str, *, limit: int, before: ExecutionCursor | None = None
    ) -> list[ExecutionRecord]:
        async with self._conn() as conn:
            if before is None:
                cur = await conn.execute(
                    self._sql(
                        "SELECT * FROM {s}.executions WHERE job_id = %s ORDER BY start_time DESC, id DESC LIMIT %s"
                    ),
                    (job_id, max(limit, 0)),
                )
            else:
                cur = await conn.execute(
                    self._sql(
                        """SELECT * FROM {s}.executions WHERE job_id = %s AND (start_time, id) < (%s, %s)
                           ORDER BY start_time DESC, id DESC LIMIT %s"""
                    ),
                    (job_id, _utc(before.start_time), before.execution_id, max(limit, 0)),
                )
            return [_execution(r) for r in await cur.fetchall()]

    async def abort_interrupted(self, now: datetime) -> list[ExecutionRecord]:
        """Marks ABORTED the RUNNING executions of this replica and of replicas whose lease expired (others
        may still be running them), and RUNNING job rows whose execution is no longer running."""
        async with self._conn() as conn, conn.transaction():
            cur = await conn.execute(
                self._sql(
                    """UPDATE {s}.executions e SET state = %(aborted)s, finish_time = %(now)s,
                         error = CASE WHEN e.owner = %(me)s THEN %(msg)s
                                      ELSE 'interrupted: replica ' || e.owner || ' stopped' END,
                         status_text = CASE WHEN e.owner = %(me)s THEN %(msg)s
                                            ELSE 'interrupted: replica ' || e.owner || ' stopped' END
                       WHERE e.state = %(running)s AND (e.owner = %(me)s OR NOT EXISTS (
                         SELECT 1 FROM {s}.replicas r
                         WHERE r.replica_id = e.owner AND r.last_seen >= now() - %(lease)s))
                       RETURNING e.*"""
                ),
                {
                    "aborted": ExecutionState.ABORTED.value,
                    "running": RUNNING,
                    "now": _utc(now),
                    "me": self.replica_id,
                    "msg": INTERRUPTED,
                    "lease": self.lease,
                },
            )
            aborted = [_execution(r) for r in await cur.fetchall()]
            await self._abort_jobs(conn, aborted)
            await conn.execute(
                self._sql(
                    """UPDATE {s}.jobs j SET state = %s, last_finish = %s, status_text = %s
                       WHERE j.state = %s AND NOT EXISTS (
                         SELECT 1 FROM {s}.executions e WHERE e.id = j.execution_id AND e.state = %s)"""
                ),
                (JobState.ABORTED.value, _utc(now), INTERRUPTED, JobState.RUNNING.value, RUNNING),
            )
        return aborted

    async def _abort_jobs(self, conn: Connection, aborted: Sequence[ExecutionRecord]) -> None:
        """The job rows of just-aborted executions follow them (only if they still point at that run)."""
        if not aborted:
            return
        async with conn.cursor() as cur:
            await cur.executemany(
                self._sql(
                    """UPDATE {s}.jobs SET state = %s, last_finish = %s, status_text = %s
                       WHERE job_id = %s AND execution_id = %s AND state = %s"""
                ),
                [
                    (JobState.ABORTED.value, r.finish_time, r.error, r.job_id, r.id, JobState.RUNNING.value)
                    for r in aborted
                ],
            )

    async def purge_executions(self, *, older_than: datetime | None, keep_last: int | None) -> int:
        """Deletes finished executions older than a time and/or beyond the newest N per job (running ones
        count towards the N but are never deleted, as in the SQLite store)."""
        deleted = 0
        async with self._conn() as conn, conn.transaction():
            if older_than is not None:
                cur = await conn.execute(
                    self._sql("DELETE FROM {s}.executions WHERE state <> %s AND start_time < %s"),
                    (RUNNING, _utc(older_than)),
                )
                deleted += cur.rowcount
            if keep_last is not None:
                cur = await conn.execute(
                    self._sql(
                        """DELETE FROM {s}.executions WHERE state <> %s AND id IN (
                             SELECT id FROM (SELECT id, row_number() OVER (
                               PARTITION BY job_id ORDER BY start_time DESC, id DESC) AS n FROM {s}.executions
                             ) ranked WHERE n > %s)"""
                    ),
                    (RUNNING, keep_last),
                )
                deleted += cur.rowcount
        return deleted

    async def load_schedule_records(self) -> dict[tuple[str, str], ScheduleRecord]:
        """Each schedule's record; its skip counters are the totals over all replicas."""
        async with self._conn() as conn:
            cur = await conn.execute(
                self._sql(
                    """SELECT s.job_id, s.schedule_key, s.last_fire, s.last_run,
                         coalesce(sum(c.overlap_skipped), 0) AS overlap, coalesce(sum(c.misfire_skipped), 0) AS misfire,
                         coalesce(sum(c.overlap_skipped) FILTER (WHERE c.replica_id = %(me)s), 0) AS own_overlap,
                         coalesce(sum(c.misfire_skipped) FILTER (WHERE c.replica_id = %(me)s), 0) AS own_misfire
                       FROM {s}.schedules s LEFT JOIN {s}.schedule_counters c
                         ON c.job_id = s.job_id AND c.schedule_key = s.schedule_key
                       GROUP BY s.job_id, s.schedule_key, s.last_fire, s.last_run"""
                ),
                {"me": self.replica_id},
            )
            rows = await cur.fetchall()
        records = {}
        for r in rows:
            key = (r["job_id"], r["schedule_key"])
            records[key] = ScheduleRecord(
                job_id=r["job_id"],
                schedule_key=r["schedule_key"],
                last_fire=_utc(r["last_fire"]),
                last_run=_utc(r["last_run"]),
                overlap_skipped=int(r["overlap"]),
                misfire_skipped=int(r["misfire"]),
            )
            self._others[key] = (int(r["overlap"] - r["own_overlap"]), int(r["misfire"] - r["own_misfire"]))
        return records

    async def refresh_counters(self) -> dict[tuple[str, str], tuple[int, int]]:
        """How much the other replicas' skip counters grew since this replica last loaded or refreshed them,
        per schedule (only the ones that changed)."""
        async with self._conn() as conn:
            cur = await conn.execute(
                self._sql(
                    """SELECT job_id, schedule_key, sum(overlap_skipped) AS overlap, sum(misfire_skipped) AS misfire
                       FROM {s}.schedule_counters WHERE replica_id <> %s GROUP BY job_id, schedule_key"""
                ),
                (self.replica_id,),
            )
            rows = await cur.fetchall()
        deltas = {}
        for r in rows:
            key = (r["job_id"], r["schedule_key"])
            now = (int(r["overlap"]), int(r["misfire"]))
            before = self._others.get(key, (0, 0))
            if now != before:
                deltas[key] = (now[0] - before[0], now[1] - before[1])
                self._others[key] = now
        return deltas

    async def delete_schedule_records(self, job_id: str, schedule_keys: Sequence[str]) -> None:
        async with self._conn() as conn, conn.transaction():
            for table in ("schedules", "schedule_counters"):
                await conn.execute(
                    sql.SQL("DELETE FROM {}.{} WHERE job_id = %s AND schedule_key = ANY(%s)").format(
                        self._schema_ident, sql.Identifier(table)
                    ),
                    (job_id, list(schedule_keys)),
                )
        for key in schedule_keys:
            self._others.pop((job_id, key), None)

    async def save_schedule_records(self, records: Sequence[ScheduleRecord]) -> None:
        """Upserts, cluster-safe: rows are locked in one order (job, schedule key), so replicas saving
        together never deadlock; fire times only move forward (a replica's older view never undoes a
        newer one). Skip counters: this replica's own row holds what it counted (the record's totals minus
        what the others had counted when it last looked), so totals are sums over replicas."""
        if not records:
            return
        latest = {(r.job_id, r.schedule_key): r for r in records}
        keys = sorted(latest)
        schedules, counters = [], []
        for key in keys:
            r = latest[key]
            others = self._others.get(key, (0, 0))
            schedules.append((r.job_id, r.schedule_key, _utc(r.last_fire), _utc(r.last_run)))
            own = (max(0, r.overlap_skipped - others[0]), max(0, r.misfire_skipped - others[1]))
            if own != (0, 0):
                counters.append((r.job_id, r.schedule_key, self.replica_id, *own))
        async with self._conn() as conn, conn.transaction(), conn.cursor() as cur:
            await cur.executemany(
                self._sql(
                    """INSERT INTO {s}.schedules AS t
                         (job_id, schedule_key, last_fire, last_run, overlap_skipped, misfire_skipped)
                       VALUES (%s, %s, %s, %s, 0, 0)
                       ON CONFLICT (job_id, schedule_key) DO UPDATE SET
                         last_fire = greatest(t.last_fire, EXCLUDED.last_fire),
                         last_run = greatest(t.last_run, EXCLUDED.last_run)"""
                ),
                schedules,
            )
            if counters:
                await cur.executemany(
                    self._sql(
                        """INSERT INTO {s}.schedule_counters AS c
                             (job_id, schedule_key, replica_id, overlap_skipped, misfire_skipped)
                           VALUES (%s, %s, %s, %s, %s)
                           ON CONFLICT (job_id, schedule_key, replica_id) DO UPDATE SET
                             overlap_skipped = greatest(c.overlap_skipped, EXCLUDED.overlap_skipped),
                             misfire_skipped = greatest(c.misfire_skipped, EXCLUDED.misfire_skipped)"""
                    ),
                    counters,
                )

    # -- cluster primitives --------------------------------------------------------------------

    async def claim_occurrence(self, job_id: str, schedule_key: str, due: datetime, *, run: bool = True) -> bool:
        """True for exactly one caller, across all replicas, per (job, schedule, due time): the one that
        should run it (or, `run=False`, count it skipped), and only while this replica holds a valid lease.
        The claimant alone records the schedule's fire time (and, running it, its last run), in the same
        transaction: one write per occurrence, whoever else is up.
        Claims older than `claim_retention` are pruned about once an hour per replica."""
        prune = time.monotonic() - self._last_prune >= _PRUNE_EVERY
        if prune:
            self._last_prune = time.monotonic()
        params = {
            "job": job_id,
            "key": schedule_key,
            "due": _utc(due),
            "me": self.replica_id,
            "epoch": self.epoch,
            "lease": self.lease,
            "run": run,
        }
        async with self._conn() as conn, conn.transaction():
            cur = await conn.execute(
                self._sql(
                    """INSERT INTO {s}.occurrence_claims (job_id, schedule_key, due, replica_id)
                       SELECT %(job)s, %(key)s, %(due)s, %(me)s WHERE """
                    + _LEASE_HELD
                    + " ON CONFLICT DO NOTHING RETURNING replica_id"
                ),
                params,
            )
            claimed = await cur.fetchone() is not None
            if claimed:
                await conn.execute(
                    self._sql(
                        """UPDATE {s}.schedules SET last_fire = greatest(last_fire, %(due)s),
                             last_run = CASE WHEN %(run)s THEN greatest(last_run, %(due)s) ELSE last_run END
                           WHERE job_id = %(job)s AND schedule_key = %(key)s"""
                    ),
                    params,
                )
            if prune:
                await conn.execute(
                    self._sql("DELETE FROM {s}.occurrence_claims WHERE due < now() - %s"), (self.claim_retention,)
                )
        return claimed

    async def try_start_run(self, record: ExecutionRecord) -> ExecutionRecord | None:
        """Inserts the execution as RUNNING, owned by this replica under its lease epoch, and points the job
        row at it (one transaction), unless the job already runs anywhere (returns None). If (job_id,
        request_id) was used before, returns that execution instead. Raises StoreUnavailable when this
        replica's lease is not valid (the database clock decides)."""
        record = replace(record, state=ExecutionState.RUNNING, finish_time=None)
        params = _execution_params(record, self.replica_id, self.epoch)
        params.update(me=self.replica_id, lease=self.lease)
        insert = self._sql(
            "INSERT INTO {s}.executions (" + _EXECUTION_COLUMNS + ") SELECT " + _EXECUTION_VALUES
            + " WHERE " + _LEASE_HELD + " RETURNING *"
        )  # fmt: skip
        async with self._conn() as conn, conn.transaction():
            if record.request_id:
                earlier = await self._find_request(conn, record.job_id, record.request_id)
                if earlier is not None:
                    return earlier
            try:
                async with conn.transaction():  # a savepoint: the violation must not end the outer one
                    cur = await conn.execute(insert, params)
                    row = await cur.fetchone()
            except psycopg.errors.UniqueViolation as exc:
                if exc.diag.constraint_name not in ("executions_one_running", "executions_by_request"):
                    raise
                # A concurrent start won. If it used our request id, that is our answer (read COMMITTED: this
                # statement sees the winner, which had to commit for the violation to be raised).
                if record.request_id:
                    return await self._find_request(conn, record.job_id, record.request_id)
                return None
            if row is None:
                raise StoreUnavailable(
                    f"replica {self.replica_id} does not hold a valid lease (its heartbeats did not reach the "
                    "database in time); it starts no run until it has renewed it",
                    reason="LEASE_LOST",
                )
            await conn.execute(
                self._sql(
                    """INSERT INTO {s}.jobs
                         (job_id, state, progress, status_text, last_start, last_finish, execution_id)
                       VALUES (%(job_id)s, 'running', 0, %(status_text)s, %(start_time)s, NULL, %(id)s)
                       ON CONFLICT (job_id) DO UPDATE SET state = 'running', progress = 0,
                         status_text = EXCLUDED.status_text, last_start = EXCLUDED.last_start,
                         execution_id = EXCLUDED.execution_id"""
                ),
                params,
            )
            return _execution(row)

    async def heartbeat(self) -> list[ExecutionRecord]:
        """Renews this replica's lease (database clock). The first call of a process takes a new lease
        epoch. If the lease lapsed meanwhile (not renewed within `lease`, or expired by another replica),
        this takes a new epoch and records ABORTED every run still RUNNING under an older one, returning
        them: that replica's runs were, or could have been, taken over."""
        params = {"me": self.replica_id, "lease": self.lease, "epoch": self.epoch}
        async with self._conn() as conn, conn.transaction():
            cur = await conn.execute(
                self._sql(
                    """SELECT epoch, last_seen >= now() - %(lease)s AS valid FROM {s}.replicas
                       WHERE replica_id = %(me)s FOR UPDATE"""
                ),
                params,
            )
            row = await cur.fetchone()
            if row is not None and self.epoch != 0 and row["epoch"] == self.epoch and row["valid"]:
                await conn.execute(
                    self._sql("UPDATE {s}.replicas SET last_seen = now() WHERE replica_id = %(me)s"), params
                )
                return []
            cur = await conn.execute(self._sql("SELECT nextval('{s}.lease_epochs') AS epoch"))
            epoch_row = await cur.fetchone()
            assert epoch_row is not None
            new_epoch = int(epoch_row["epoch"])
            await conn.execute(
                self._sql(
                    """INSERT INTO {s}.replicas (replica_id, last_seen, epoch) VALUES (%(me)s, now(), %(new)s)
                       ON CONFLICT (replica_id) DO UPDATE SET last_seen = now(), epoch = EXCLUDED.epoch"""
                ),
                {**params, "new": new_epoch},
            )
            aborted: list[ExecutionRecord] = []
            if self.epoch != 0:  # a lapse, not a start: on start, abort_interrupted deals with the past
                cur = await conn.execute(
                    self._sql(
                        """UPDATE {s}.executions SET state = %(aborted)s, finish_time = now(),
                             error = %(why)s, status_text = %(why)s
                           WHERE owner = %(me)s AND state = %(running)s AND epoch <> %(new)s
                           RETURNING *"""
                    ),
                    {
                        **params,
                        "new": new_epoch,
                        "aborted": ExecutionState.ABORTED.value,
                        "running": RUNNING,
                        "why": lease_lost(self.replica_id),
                    },
                )
                aborted = [_execution(r) for r in await cur.fetchall()]
                await self._abort_jobs(conn, aborted)
        if self.epoch != 0:
            log.error(
                "replica %s lost its lease (epoch %d); renewed as epoch %d; %d run(s) recorded ABORTED",
                self.replica_id,
                self.epoch,
                new_epoch,
                len(aborted),
            )
        self.epoch = new_epoch
        return aborted

    async def expire_dead_replicas(self, lease: timedelta) -> list[ExecutionRecord]:
        """ABORTs the RUNNING executions (and their job rows) of every other replica not seen within `lease`
        by the database clock, or never registered, and ends those replicas' lease epochs (their next
        heartbeat learns it). Returns the aborted runs. Replica rows unseen for a week go.

        The lapsed replicas' rows are locked first, in replica id order, so a late heartbeat either
        commits before (and its runs are left alone) or waits and finds its epoch ended."""
        params = {
            "aborted": ExecutionState.ABORTED.value,
            "running": RUNNING,
            "me": self.replica_id,
            "lease": lease,
        }
        async with self._conn() as conn, conn.transaction():
            cur = await conn.execute(
                self._sql(
                    """SELECT replica_id FROM {s}.replicas
                       WHERE replica_id <> %(me)s AND last_seen < now() - %(lease)s
                       ORDER BY replica_id FOR UPDATE"""
                ),
                params,
            )
            dead = [r["replica_id"] for r in await cur.fetchall()]
            if dead:
                await conn.execute(
                    self._sql("UPDATE {s}.replicas SET epoch = 0 WHERE replica_id = ANY(%(dead)s) AND epoch <> 0"),
                    {**params, "dead": dead},
                )
            cur = await conn.execute(
                self._sql(
                    """UPDATE {s}.executions e SET state = %(aborted)s, finish_time = now(),
                         error = 'interrupted: replica ' || e.owner || ' stopped',
                         status_text = 'interrupted: replica ' || e.owner || ' stopped'
                       WHERE e.state = %(running)s AND e.owner <> %(me)s AND (e.owner = ANY(%(dead)s)
                         OR NOT EXISTS (SELECT 1 FROM {s}.replicas r WHERE r.replica_id = e.owner))
                       RETURNING e.*"""
                ),
                {**params, "dead": dead},
            )
            aborted = [_execution(r) for r in await cur.fetchall()]
            await self._abort_jobs(conn, aborted)
            await conn.execute(
                self._sql(
                    """DELETE FROM {s}.replicas r WHERE r.last_seen < now() - interval '7 days'
                       AND NOT EXISTS (SELECT 1 FROM {s}.executions e WHERE e.owner = r.replica_id AND e.state = %s)"""
                ),
                (RUNNING,),
            )
        for record in aborted:
            log.warning("execution %s of %s: %s", record.id, record.job_id, record.error)
        return aborted

    async def request_cancel(self, execution_id: str) -> ExecutionRecord | None:
        """Flags a RUNNING execution, wherever it runs, for cancellation and notifies its owner. Returns the
        flagged record, or None when no such execution is running."""
        async with self._conn() as conn, conn.transaction():
            cur = await conn.execute(
                self._sql("UPDATE {s}.executions SET cancel_requested = true WHERE id = %s AND state = %s RETURNING *"),
                (execution_id, RUNNING),
            )
            row = await cur.fetchone()
            if row is None:
                return None
            payload = json.dumps({"execution_id": execution_id, "owner": row["owner"]})
            await conn.execute("SELECT pg_notify(%s, %s)", (self.cancel_channel, payload))  # sent on commit
            return _execution(row)

    async def pending_cancels(self) -> list[str]:
        """Ids of this replica's RUNNING executions that have a cancel request (for polling, or catch-up)."""
        async with self._conn() as conn:
            return await self._pending_cancels(conn)

    async def _pending_cancels(self, conn: Connection) -> list[str]:
        cur = await conn.execute(
            self._sql("SELECT id FROM {s}.executions WHERE owner = %s AND state = %s AND cancel_requested ORDER BY id"),
            (self.replica_id, RUNNING),
        )
        return [r["id"] for r in await cur.fetchall()]

    async def load_schedule_xml(self) -> bytes | None:
        """The shared schedule document (xcron.xml's bytes), None before the first save or import."""
        return (await self.load_schedule_version())[0]

    async def load_schedule_version(self) -> tuple[bytes | None, int]:
        """The shared schedule document and its version (0 before the first save or import)."""
        async with self._conn() as conn:
            cur = await conn.execute(self._sql("SELECT xml, version FROM {s}.schedule_document WHERE id = 1"))
            row = await cur.fetchone()
            return (bytes(row["xml"]), int(row["version"])) if row is not None else (None, 0)

    async def save_schedule_xml(self, data: bytes, *, expected_version: int | None = None) -> int | None:
        """Replaces the shared schedule document and tells every replica (an event of kind "schedules").
        With `expected_version`, only if the stored version is still that one (compare-and-swap; 0: none
        stored yet): returns the new version, or None when another replica saved in between."""
        payload = json.dumps({"kind": "schedules", "origin": self.replica_id})
        params = {"xml": data, "me": self.replica_id, "expected": expected_version}
        async with self._conn() as conn, conn.transaction():
            query: LiteralString
            if expected_version == 0:
                query = """INSERT INTO {s}.schedule_document (id, xml, updated_at, updated_by, version)
                           VALUES (1, %(xml)s, now(), %(me)s, 1) ON CONFLICT (id) DO NOTHING RETURNING version"""
            else:
                query = """INSERT INTO {s}.schedule_document (id, xml, updated_at, updated_by, version)
                           VALUES (1, %(xml)s, now(), %(me)s, 1)
                           ON CONFLICT (id) DO UPDATE SET xml = EXCLUDED.xml, updated_at = now(),
                             updated_by = EXCLUDED.updated_by, version = schedule_document.version + 1
                           WHERE %(expected)s::bigint IS NULL OR schedule_document.version = %(expected)s
                           RETURNING version"""
            cur = await conn.execute(self._sql(query), params)
            row = await cur.fetchone()
            if row is None:
                return None
            await conn.execute("SELECT pg_notify(%s, %s)", (self.events_channel, payload))  # sent on commit
            return int(row["version"])

    async def running_execution(self, job_id: str) -> ExecutionRecord | None:
        """The job's RUNNING execution on any replica, if there is one."""
        async with self._conn() as conn:
            cur = await conn.execute(
                self._sql("SELECT * FROM {s}.executions WHERE job_id = %s AND state = %s"), (job_id, RUNNING)
            )
            row = await cur.fetchone()
            return _execution(row) if row is not None else None

    async def publish_event(self, payload: str) -> None:
        """Sends a payload to every replica's `listen_events` (including this one's). Best-effort."""
        if len(payload.encode()) >= MAX_PAYLOAD_BYTES:
            raise ValueError(f"event payload is {len(payload.encode())} bytes; NOTIFY allows < {MAX_PAYLOAD_BYTES}")
        async with self._conn() as conn:
            await conn.execute("SELECT pg_notify(%s, %s)", (self.events_channel, payload))

    def listen_events(self, *, on_listen: Callable[[], object] | None = None) -> AsyncGenerator[str, None]:
        """Yields payloads published by any replica. Runs on a dedicated connection that reconnects on
        failure; `on_listen` is called each time LISTEN is in effect (what was published before is missed).
        Ends when the store closes. Use `contextlib.aclosing` to release the connection early."""
        return self._listen(self.events_channel, on_listen=on_listen, catch_up=None, accept=lambda payload: payload)

    def listen_cancels(self, *, on_listen: Callable[[], object] | None = None) -> AsyncGenerator[str, None]:
        """Yields ids of this replica's executions that some replica asked to cancel. After each (re)connect
        it first yields the requests already flagged, so none is lost; an id may come more than once."""

        def accept(payload: str) -> str | None:
            try:
                notice = json.loads(payload)
                return str(notice["execution_id"]) if notice.get("owner") == self.replica_id else None
            except (ValueError, KeyError, TypeError, AttributeError):
                log.warning("ignoring a malformed cancel notice: %r", payload[:200])
                return None

        return self._listen(self.cancel_channel, on_listen=on_listen, catch_up=self._pending_cancels, accept=accept)

    async def _listen(
        self,
        channel: str,
        *,
        on_listen: Callable[[], object] | None,
        catch_up: Callable[[Connection], Awaitable[list[str]]] | None,
        accept: Callable[[str], str | None],
    ) -> AsyncGenerator[str, None]:
        if self._closed:
            raise StoreUnavailable("the state store is closed")
        queue: asyncio.Queue[str | None] = asyncio.Queue()  # None: the reader ended
        reader = asyncio.create_task(
            self._read_channel(channel, queue, on_listen, catch_up, accept), name=f"xcron-listen-{channel}"
        )
        self._readers.add(reader)
        try:
            while (item := await queue.get()) is not None:
                yield item
            if not reader.cancelled() and reader.exception() is not None:
                raise StoreUnavailable(f"listening on {channel} failed") from reader.exception()
        finally:
            self._readers.discard(reader)
            if not reader.done():
                reader.cancel()
                await asyncio.wait([reader])  # not `await reader`: that would swallow our own cancellation

    async def _read_channel(
        self,
        channel: str,
        queue: asyncio.Queue[str | None],
        on_listen: Callable[[], object] | None,
        catch_up: Callable[[Connection], Awaitable[list[str]]] | None,
        accept: Callable[[str], str | None],
    ) -> None:
        """The dedicated connection's loop: LISTEN, (catch up,) forward notifications; on failure, reconnect
        with exponential back-off (0.1 s to 5 s)."""
        delay = 0.1
        dropped = 0
        ping_every = max(0.5, self.lease.total_seconds() / 3)

        def offer(item: str) -> None:
            nonlocal dropped
            if queue.qsize() >= _LISTEN_QUEUE:
                queue.get_nowait()  # a slow consumer loses the oldest, never stalls the connection
                dropped += 1
                if dropped == 1 or dropped % 1000 == 0:
                    log.warning("listener on %s is behind: %d notifications dropped", channel, dropped)
            queue.put_nowait(item)

        try:
            while not self._closed:
                conn: Connection | None = None
                try:
                    deadline = _Deadline(self.call_timeout * 2)
                    try:
                        conn = deadline.conn = await _connect(self._dsn, self.call_timeout, self.application_name)
                        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                        if catch_up is not None:
                            for item in await catch_up(conn):
                                offer(item)
                    finally:
                        if deadline.end():
                            raise TimeoutError(f"no answer within {deadline.seconds:.1f} s")
                    delay = 0.1
                    if on_listen is not None:
                        on_listen()
                    while True:
                        async for notice in conn.notifies(timeout=ping_every):
                            accepted = accept(notice.payload)
                            if accepted is not None:
                                offer(accepted)
                        # A quiet connection may be a dead one (a cut cable, a peer that stopped answering):
                        # ask, with a deadline, rather than wait for notifications that can never come.
                        deadline = _Deadline(self.call_timeout)
                        try:
                            await conn.execute("SELECT 1")
                        finally:
                            if deadline.end():
                                raise TimeoutError(f"no answer within {deadline.seconds:.1f} s")
                except (psycopg.Error, TimeoutError) as exc:
                    if self._closed:
                        break
                    log.warning("listening on %s failed (%s); reconnecting in %.1f s", channel, exc, delay)
                finally:
                    if conn is not None:
                        await conn.close()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        finally:
            queue.put_nowait(None)
