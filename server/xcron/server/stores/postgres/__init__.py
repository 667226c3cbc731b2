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

from xcron.server.stores.postgres.listener import PostgresListeners
from xcron.server.stores.postgres.rows import default_replica_id, lease_lost, replica_stopped
from xcron.server.stores.postgres.schema import MAX_PAYLOAD_BYTES, MIGRATIONS


class PostgresStateStore(PostgresListeners):
    """`StateStore` on PostgreSQL, in its own schema, plus cluster primitives (see the package docstring).

    Layered one module per concern: base (connections, lifecycle) <- state (StateStore) <- cluster
    (leases, claims, single runs) <- listener (LISTEN/NOTIFY)."""


__all__ = [
    "MAX_PAYLOAD_BYTES",
    "MIGRATIONS",
    "PostgresStateStore",
    "default_replica_id",
    "lease_lost",
    "replica_stopped",
]
