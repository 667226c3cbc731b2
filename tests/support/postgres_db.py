"""The PostgreSQL the store tests use: `XCRON_TEST_PG_DSN` (default: trust auth on 127.0.0.1:5432, database
`test`), one fresh schema per test, dropped afterwards; skipped on a laptop without it, a failure in CI."""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, LiteralString

import psycopg
import pytest
from psycopg import sql
from requires import require

from xcron.server.stores.postgres import PostgresStateStore

PG_DSN = os.environ.get("XCRON_TEST_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=test")


@functools.cache
def _pg_unreachable() -> str | None:
    try:
        with psycopg.connect(PG_DSN, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return f"PostgreSQL is not reachable at {PG_DSN!r} (set XCRON_TEST_PG_DSN): {str(exc).strip()}"


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A fresh schema name (the store creates the schema itself), dropped after the test."""
    reason = _pg_unreachable()
    require(reason is None, f"a reachable PostgreSQL ({reason})")
    schema = f"xcron_test_{uuid.uuid4().hex}"
    yield schema
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


MakeStore = Callable[..., Awaitable[PostgresStateStore]]


@pytest.fixture
async def make_pg(pg_schema: str) -> AsyncIterator[MakeStore]:
    """Opens replicas of one cluster (one schema); all are closed after the test."""
    opened: list[PostgresStateStore] = []

    async def make(replica_id: str, **options: Any) -> PostgresStateStore:
        replica = PostgresStateStore(PG_DSN, schema=pg_schema, replica_id=replica_id, **options)
        await replica.open()
        opened.append(replica)
        return replica

    yield make
    for replica in opened:
        await replica.close()


async def run_sql(query: LiteralString, schema: str, *params: Any) -> list[tuple[Any, ...]]:
    """Runs SQL with `{s}` as the test's schema, outside any store (to look at or age the data)."""
    async with await psycopg.AsyncConnection.connect(PG_DSN, autocommit=True) as conn:
        cur = await conn.execute(sql.SQL(query).format(s=sql.Identifier(schema)), params)
        return await cur.fetchall() if cur.description else []
