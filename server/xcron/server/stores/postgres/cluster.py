"""The primitives replicas need to share one schema (see the package docstring for the guarantees)."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from datetime import datetime, timedelta
from typing import LiteralString

import psycopg

from xcron.server.core.errors import StoreUnavailable
from xcron.server.core.model import ExecutionState
from xcron.server.core.ports import (
    ExecutionRecord,
)
from xcron.server.stores.postgres.pool import Connection
from xcron.server.stores.postgres.rows import _execution, _execution_params, _utc, lease_lost
from xcron.server.stores.postgres.schema import (
    _EXECUTION_COLUMNS,
    _EXECUTION_VALUES,
    _LEASE_HELD,
    _PRUNE_EVERY,
    RUNNING,
)
from xcron.server.stores.postgres.state import PostgresState

log = logging.getLogger(__name__)


class PostgresCluster(PostgresState):
    """What replicas sharing the schema need: leases, claims, single runs, cancels, the schedule document."""

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
