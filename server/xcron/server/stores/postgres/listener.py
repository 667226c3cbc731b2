"""LISTEN/NOTIFY: events between replicas and cancel requests, resumed after every reconnect."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable

import psycopg
from psycopg import sql

from xcron.server.core.errors import StoreUnavailable
from xcron.server.stores.postgres.cluster import PostgresCluster
from xcron.server.stores.postgres.pool import Connection, _connect, _Deadline
from xcron.server.stores.postgres.schema import _LISTEN_QUEUE, MAX_PAYLOAD_BYTES

log = logging.getLogger(__name__)


class PostgresListeners(PostgresCluster):
    """Events and cancel requests over LISTEN/NOTIFY, one dedicated connection per listener."""

    async def publish_event(self, payload: str) -> None:
        """Sends a payload to every replica's `listen_events` (including this one's). Best-effort."""
        if len(payload.encode()) >= MAX_PAYLOAD_BYTES:
            raise ValueError(f"event payload is {len(payload.encode())} bytes; NOTIFY allows < {MAX_PAYLOAD_BYTES}")
        async with self._conn() as conn:
            await conn.execute("SELECT pg_notify(%s, %s)", (self.events_channel, payload))

    async def publish_events(self, payloads: list[str]) -> None:
        """`publish_event` for each payload, in one transaction (listeners are woken once for them all)."""
        for payload in payloads:
            if len(payload.encode()) >= MAX_PAYLOAD_BYTES:
                raise ValueError(f"event payload is {len(payload.encode())} bytes; NOTIFY allows < {MAX_PAYLOAD_BYTES}")
        async with self._conn() as conn, conn.transaction(), conn.cursor() as cur:
            await cur.executemany("SELECT pg_notify(%s, %s)", [(self.events_channel, p) for p in payloads])

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

    async def _connect_listening(
        self,
        channel: str,
        catch_up: Callable[[Connection], Awaitable[list[str]]] | None,
        offer: Callable[[str], None],
    ) -> Connection:
        """A new dedicated connection, LISTENing on `channel` and caught up, within one deadline; closed again
        when a step fails or overruns it."""
        deadline = _Deadline(self.call_timeout * 2)
        conn: Connection | None = None
        try:
            try:
                conn = deadline.conn = await _connect(self._dsn, self.call_timeout, self.application_name)
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                if catch_up is not None:
                    for item in await catch_up(conn):
                        offer(item)
            finally:
                if deadline.end():
                    raise TimeoutError(f"no answer within {deadline.seconds:.1f} s")
        except BaseException:
            if conn is not None:
                await conn.close()
            raise
        return conn

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
                    conn = await self._connect_listening(channel, catch_up, offer)
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
