"""The store's plumbing and lifecycle (connections, deadlines, migrations)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import LiteralString

import psycopg
from psycopg import sql

from xcron.server.core.errors import StoreUnavailable
from xcron.server.core.ports import ExecutionRecord
from xcron.server.stores.postgres.pool import Connection, _ConnectionPool, _Deadline
from xcron.server.stores.postgres.rows import default_replica_id
from xcron.server.stores.postgres.schema import _SCHEMA_NAME, MIGRATIONS

log = logging.getLogger(__name__)


class PostgresBase:
    """Connection plumbing and lifecycle: the pool, per-call deadlines, migrations."""

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

    async def heartbeat(self) -> list[ExecutionRecord]:
        """Renews this replica's lease: implemented by the cluster layer (cluster.py)."""
        raise NotImplementedError

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
