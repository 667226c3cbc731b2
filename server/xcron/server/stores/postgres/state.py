"""The `StateStore` protocol on PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from xcron.server.core.errors import Conflict, StoreUnavailable
from xcron.server.core.model import ExecutionState, JobState
from xcron.server.core.ports import (
    INTERRUPTED,
    ExecutionCursor,
    ExecutionRecord,
    JobRecord,
    RunFenced,
    ScheduleRecord,
)
from xcron.server.stores._codec import job_from_row
from xcron.server.stores.postgres.base import PostgresBase
from xcron.server.stores.postgres.pool import Connection
from xcron.server.stores.postgres.rows import _execution, _execution_params, _job_params, _utc
from xcron.server.stores.postgres.schema import (
    _EXECUTION_COLUMNS,
    _EXECUTION_VALUES,
    _JOB_ROW_GUARD,
    _LEASE_HELD,
    RUNNING,
)


class PostgresState(PostgresBase):
    """The `StateStore` protocol."""

    def deferred_writes(self) -> AbstractContextManager[None]:
        """No commit window here: writes already share one transaction per turn of the loop."""
        return nullcontext()

    def flush(self) -> None:
        """Nothing is held."""

    async def load_jobs(self) -> dict[str, JobRecord]:
        async with self._conn() as conn:
            cur = await conn.execute(self._sql("SELECT * FROM {s}.jobs"))
            return {r["job_id"]: job_from_row(r, _utc) for r in await cur.fetchall()}

    async def save_job(self, record: JobRecord) -> None:
        async with self._conn() as conn:
            await conn.execute(self._save_job_sql(), _job_params(record))

    def _save_job_sql(self) -> sql.Composed:
        return self._sql(
            """INSERT INTO {s}.jobs
                 (job_id, state, progress, status_text, last_start, last_finish, execution_id)
               VALUES (%s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (job_id) DO UPDATE SET state = EXCLUDED.state, progress = EXCLUDED.progress,
                 status_text = EXCLUDED.status_text, last_start = EXCLUDED.last_start,
                 last_finish = EXCLUDED.last_finish, execution_id = EXCLUDED.execution_id
               WHERE """
            + _JOB_ROW_GUARD
        )

    async def save_execution(self, record: ExecutionRecord) -> None:
        """Inserts or replaces by id. A new row is owned by this replica under its lease epoch. A replace is
        fenced: it happens only while the stored run is RUNNING, owned by this replica, under the lease epoch
        it was started with, and that lease is still valid by the database clock. Otherwise the stored
        outcome stands and RunFenced says what it is (a run another replica recorded ABORTED stays ABORTED;
        a run of this replica's lapsed lease is recorded ABORTED first). `cancel_requested` is sticky.

        Raises Conflict when the row would be a second RUNNING execution of the job, or reuse a request id.
        """
        query = self._save_execution_sql()
        params = self._save_execution_params(record)
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

    def _save_execution_sql(self) -> sql.Composed:
        return self._sql(
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

    def _save_execution_params(self, record: ExecutionRecord) -> dict[str, Any]:
        params = _execution_params(record, self.replica_id, self.epoch)
        params.update(running=RUNNING, me=self.replica_id, lease=self.lease)
        return params

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
