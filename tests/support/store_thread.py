"""Holding the SQLite store's thread busy, so that the calls made meanwhile wait for it in batches of their own."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import AsyncIterator

from xcron.server.stores.sqlite import SqliteStateStore


@contextlib.asynccontextmanager
async def store_thread_held(store: SqliteStateStore) -> AsyncIterator[asyncio.Future[None]]:
    """The store thread busy in a call of its own until the block ends (each turn of the loop inside posts its
    calls as a batch of its own); yields that call's future."""
    busy, release = threading.Event(), threading.Event()

    def hold(conn: sqlite3.Connection) -> None:
        busy.set()
        release.wait(10)

    held = store._write(hold)
    await asyncio.sleep(0)  # posted at the end of this turn
    try:
        assert await asyncio.to_thread(busy.wait, 10)
        yield held
    finally:
        release.set()
