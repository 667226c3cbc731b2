"""A small fixed pool of autocommit connections, each call under a deadline measured here."""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
from collections.abc import AsyncIterator

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.rows import DictRow, dict_row

from xcron.server.core.errors import StoreUnavailable

Connection = psycopg.AsyncConnection[DictRow]


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
