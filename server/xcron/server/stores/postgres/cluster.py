"""The primitives replicas need to share one schema (see the package docstring for the guarantees)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, LiteralString

import psycopg
from psycopg.types.json import Json

from xcron.server.core.errors import StoreUnavailable
from xcron.server.core.model import ExecutionState
from xcron.server.core.ports import ExecutionRecord, JobRecord
from xcron.server.stores.postgres.batch import TurnBatch
from xcron.server.stores.postgres.pool import Connection
from xcron.server.stores.postgres.rows import (
    _execution,
    _execution_json,
    _execution_params,
    _job_params,
    _utc,
    lease_lost,
)
from xcron.server.stores.postgres.schema import (
    _EXECUTION_COLUMNS,
    _EXECUTION_VALUES,
    _LEASE_HELD,
    _PRUNE_EVERY,
    RUNNING,
)
from xcron.server.stores.postgres.state import PostgresState

log = logging.getLogger(__name__)

_POINT_JOB_AT_RUN: LiteralString = """INSERT INTO {s}.jobs
      (job_id, state, progress, status_text, last_start, last_finish, execution_id)
    VALUES (%(job_id)s, 'running', 0, %(status_text)s, %(start_time)s, NULL, %(id)s)
    ON CONFLICT (job_id) DO UPDATE SET state = 'running', progress = 0,
      status_text = EXCLUDED.status_text, last_start = EXCLUDED.last_start, execution_id = EXCLUDED.execution_id"""


_CLAIM: LiteralString = (
    """WITH wanted AS (
         SELECT * FROM unnest(%(jobs)s::text[], %(keys)s::text[], %(dues)s::timestamptz[], %(runs)s::boolean[])
           AS w(job_id, schedule_key, due, run)),
       won AS (
         INSERT INTO {s}.occurrence_claims (job_id, schedule_key, due, replica_id)
         SELECT job_id, schedule_key, due, %(me)s FROM wanted WHERE """
    + _LEASE_HELD
    + """ ORDER BY job_id, schedule_key, due
         ON CONFLICT DO NOTHING RETURNING job_id, schedule_key, due),
       fired AS (
         SELECT w.job_id, w.schedule_key, max(w.due) AS fire, max(w.due) FILTER (WHERE w.run) AS ran
         FROM won JOIN wanted w USING (job_id, schedule_key, due) GROUP BY w.job_id, w.schedule_key),
       locked AS (
         SELECT s.job_id, s.schedule_key, f.fire, f.ran FROM {s}.schedules s JOIN fired f USING (job_id, schedule_key)
         ORDER BY s.job_id, s.schedule_key FOR UPDATE OF s),
       recorded AS (
         UPDATE {s}.schedules s SET last_fire = greatest(s.last_fire, l.fire), last_run = greatest(s.last_run, l.ran)
         FROM locked l WHERE s.job_id = l.job_id AND s.schedule_key = l.schedule_key)
       SELECT job_id, schedule_key, due FROM won"""
)
"""The claims of a turn and, for the ones won, the schedules' fire times (greatest() skips NULLs)."""

_START: LiteralString = (
    """WITH lease AS (SELECT """
    + _LEASE_HELD
    + """ AS held),
       started AS (
         INSERT INTO {s}.executions ("""
    + _EXECUTION_COLUMNS
    + """) SELECT """
    + _EXECUTION_COLUMNS
    + """ FROM json_populate_recordset(NULL::{s}.executions, %(rows)s) r WHERE (SELECT held FROM lease)
         ORDER BY r.job_id ON CONFLICT DO NOTHING RETURNING *),
       pointed AS (
         INSERT INTO {s}.jobs (job_id, state, progress, status_text, last_start, last_finish, execution_id)
         SELECT job_id, 'running', 0, status_text, start_time, NULL, id FROM started ORDER BY job_id
         ON CONFLICT (job_id) DO UPDATE SET state = 'running', progress = 0, status_text = EXCLUDED.status_text,
           last_start = EXCLUDED.last_start, execution_id = EXCLUDED.execution_id)
       SELECT (SELECT held FROM lease) AS lease_held, started.* FROM (SELECT 1) AS one LEFT JOIN started ON true"""
)
"""The starts of a turn: RUNNING rows (none without a valid lease; none for a job running anywhere) and the job
rows pointing at them. Always one row at least, saying whether the lease was held."""


@dataclass(frozen=True)
class _Claim:
    job_id: str
    schedule_key: str
    due: datetime
    run: bool

    def key(self) -> tuple[str, str, datetime]:
        return (self.job_id, self.schedule_key, self.due)


async def _outcome(call: Awaitable[None]) -> BaseException | None:
    try:
        await call
    except Exception as exc:
        return exc
    return None


class PostgresCluster(PostgresState):
    """What replicas sharing the schema need: leases, claims, single runs, cancels, the schedule document."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._claims: TurnBatch[_Claim, bool] = TurnBatch(self._claim_batch, "claims")
        self._starts: TurnBatch[ExecutionRecord, ExecutionRecord | None] = TurnBatch(self._start_batch, "starts")
        self._settles: TurnBatch[tuple[ExecutionRecord, JobRecord], None] = TurnBatch(self._settle_batch, "ends")

    async def claim_occurrence(self, job_id: str, schedule_key: str, due: datetime, *, run: bool = True) -> bool:
        """True for exactly one caller, across all replicas, per (job, schedule, due time): the one that
        should run it (or, `run=False`, count it skipped), and only while this replica holds a valid lease.
        The claimant alone records the schedule's fire time (and, running it, its last run), in the same
        transaction: one write per occurrence, whoever else is up. The claims of one loop turn share one
        transaction (batch.py). Claims older than `claim_retention` are pruned about once an hour per replica."""
        return bool(await self._claims.submit(_Claim(job_id, schedule_key, _utc(due) or due, run)))

    async def _claim_batch(self, claims: list[_Claim]) -> list[bool]:
        """A turn's claims in one statement (one transaction, one round trip). Rows are locked in one order
        (claims by job, schedule, due; then schedule rows by job, schedule), whoever claims, so replicas
        claiming together wait for each other but never deadlock."""
        prune = time.monotonic() - self._last_prune >= _PRUNE_EVERY
        if prune:
            self._last_prune = time.monotonic()
        unique = sorted({c.key(): c for c in reversed(claims)}.values(), key=_Claim.key)
        params = {
            "jobs": [c.job_id for c in unique],
            "keys": [c.schedule_key for c in unique],
            "dues": [c.due for c in unique],
            "runs": [c.run for c in unique],
            "me": self.replica_id,
            "epoch": self.epoch,
            "lease": self.lease,
        }
        async with self._conn() as conn:
            cur = await conn.execute(self._sql(_CLAIM), params)
            won = {(r["job_id"], r["schedule_key"], _utc(r["due"])) for r in await cur.fetchall()}
            if prune:
                await conn.execute(
                    self._sql("DELETE FROM {s}.occurrence_claims WHERE due < now() - %s"), (self.claim_retention,)
                )
        taken: set[tuple[str, str, datetime]] = set()
        outcomes = []
        for c in claims:  # the same occurrence twice in one turn: the first caller has it
            outcomes.append(c.key() in won and c.key() not in taken)
            taken.add(c.key())
        return outcomes

    async def try_start_run(self, record: ExecutionRecord) -> ExecutionRecord | None:
        """Inserts the execution as RUNNING, owned by this replica under its lease epoch, and points the job
        row at it (one transaction), unless the job already runs anywhere (returns None). If (job_id,
        request_id) was used before, returns that execution instead. Raises StoreUnavailable when this
        replica's lease is not valid (the database clock decides). Starts without a request id made in one
        loop turn share one transaction (batch.py)."""
        record = replace(record, state=ExecutionState.RUNNING, finish_time=None)
        if not record.request_id:
            return await self._starts.submit(record)
        params = _execution_params(record, self.replica_id, self.epoch)
        params.update(me=self.replica_id, lease=self.lease)
        insert = self._sql(
            "INSERT INTO {s}.executions (" + _EXECUTION_COLUMNS + ") SELECT " + _EXECUTION_VALUES
            + " WHERE " + _LEASE_HELD + " RETURNING *"
        )  # fmt: skip
        async with self._conn() as conn, conn.transaction():
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
                return await self._find_request(conn, record.job_id, record.request_id)
            if row is None:
                raise self._lease_not_held()
            await conn.execute(self._sql(_POINT_JOB_AT_RUN), params)
            return _execution(row)

    def _lease_not_held(self) -> StoreUnavailable:
        return StoreUnavailable(
            f"replica {self.replica_id} does not hold a valid lease (its heartbeats did not reach the "
            "database in time); it starts no run until it has renewed it",
            reason="LEASE_LOST",
        )

    async def _start_batch(self, records: list[ExecutionRecord]) -> list[ExecutionRecord | None]:
        """A turn's starts (no request ids) in one statement (one transaction, one round trip): a run whose
        job already runs anywhere is not inserted (None); nothing is, without a valid lease. Job rows are
        written in job order, as every writer of job rows does."""
        rows = [_execution_json(r, self.replica_id, self.epoch) for r in records]
        lease = {"me": self.replica_id, "epoch": self.epoch, "lease": self.lease}
        async with self._conn() as conn:
            cur = await conn.execute(self._sql(_START), {"rows": Json(rows), **lease})
            answer = await cur.fetchall()
        if not answer or not answer[0]["lease_held"]:
            raise self._lease_not_held()
        started = {r["id"]: _execution(r) for r in answer if r["id"] is not None}
        return [started.get(r.id) for r in records]

    async def settle_run(self, record: ExecutionRecord, job: JobRecord) -> None:
        """Records the end of a local run and its job row in one transaction (shared by the ends of one loop
        turn): `save_execution`, fenced, then `save_job` if the run was written. Raises RunFenced as
        `save_execution` does."""
        await self._settles.submit((record, job))

    async def _settle_batch(self, items: list[tuple[ExecutionRecord, JobRecord]]) -> list[BaseException | None]:
        order = sorted(range(len(items)), key=lambda i: (items[i][1].job_id, items[i][0].id))
        written: set[int] = set()
        try:
            async with self._conn() as conn, conn.transaction(), conn.cursor() as cur:
                await cur.executemany(
                    self._save_execution_sql(),
                    [self._save_execution_params(items[i][0]) for i in order],
                    returning=True,
                )
                for i in order:
                    if await cur.fetchone() is not None:
                        written.add(i)
                    cur.nextset()
                await cur.executemany(self._save_job_sql(), [_job_params(items[i][1]) for i in order if i in written])
        except psycopg.errors.IntegrityError:
            # Some row would break a constraint: one at a time, so that only its caller gets the error.
            return [await _outcome(self._settle_one(record, job)) for record, job in items]
        return [None if i in written else await _outcome(self._fenced(items[i][0])) for i in range(len(items))]

    async def _settle_one(self, record: ExecutionRecord, job: JobRecord) -> None:
        await self.save_execution(record)
        await self.save_job(job)

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
