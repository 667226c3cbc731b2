"""The schema: migrations and the SQL fragments the queries share."""

from __future__ import annotations

import re
from typing import LiteralString

from xcron.server.core.model import ExecutionState

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
