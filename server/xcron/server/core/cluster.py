"""Several xcron replicas on one PostgreSQL store: each scheduled occurrence runs once, a job runs on
one replica at a time, and every replica's watchers see every replica's changes.

- Scheduling: every replica computes the same fire times; before firing, it claims the occurrence
  in the database (`claim_occurrence`), and only the claimant runs it (and records the fire time).
  A dead replica's claims are simply never made, so the others fire its occurrences.
- Runs: `try_start_run` inserts the RUNNING execution under a cluster-wide unique index, so RunJob
  on any replica refuses a job running elsewhere (ABORTED) and a repeated request_id returns the
  first execution, wherever it started.
- Events: local status changes are coalesced per job and sent with NOTIFY (at most every 50 ms);
  other replicas apply them to their job state and publish them to their own watchers. NOTIFY is
  not stored, so after every (re)connect of the listener a replica re-reads every job's state from
  the database and corrects its watchers. Neither a notification nor a re-read moves a job back: to
  RUNNING for a run that ended, or to an older run (by start time; replica clocks are assumed to
  agree to well under the time between two runs of a job). Sequence numbers stay per replica.
- Cancel: CancelJob on any replica flags the execution in the database and notifies its owner.
- Liveness and fencing (as a lease in Chubby/etcd, or a Kubernetes Lease): each replica renews its
  lease every lease/3. Every database call has a deadline. A replica's lease is valid until `lease`
  seconds after it *sent* its last successful renewal, by its own monotonic clock; at that moment,
  whatever the database does, it stops claiming occurrences and starting runs and asks its runs to
  cancel. The others abort its runs only after the database has not heard from it for a lease, which
  is no earlier. Each run is written under its owner's lease epoch; when a replica comes back with a
  lapsed lease it takes a new epoch, its old runs are recorded ABORTED, and the end of such a run
  can no longer be written over that (the store's fenced update); the replica adopts what the
  database says.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, Callable, Coroutine
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from xcron.server.core.errors import FailedPrecondition, NotFound, StoreUnavailable, XcronServerError
from xcron.server.core.events import JobStatus
from xcron.server.core.model import JobState
from xcron.server.core.ports import ExecutionRecord, JobRecord, RunFenced

if TYPE_CHECKING:
    from xcron.server.core.executor import Executor
    from xcron.server.core.manager import JobManager

log = logging.getLogger(__name__)
STATUS_TEXT_LIMIT = 2000  # keeps a NOTIFY payload well under PostgreSQL's 8,000 bytes
RELAY_INTERVAL = 0.05
DATABASE = "database"
"""The origin of a status re-read from the database (after a listener reconnect)."""


class ClusterStore(Protocol):
    replica_id: str
    epoch: int

    async def claim_occurrence(self, job_id: str, schedule_key: str, due: datetime, *, run: bool = True) -> bool: ...
    async def refresh_counters(self) -> dict[tuple[str, str], tuple[int, int]]: ...
    async def try_start_run(self, record: ExecutionRecord) -> ExecutionRecord | None: ...
    async def heartbeat(self) -> list[ExecutionRecord]: ...
    async def load_jobs(self) -> dict[str, JobRecord]: ...
    async def save_job(self, record: JobRecord) -> None: ...
    async def save_execution(self, record: ExecutionRecord) -> None: ...
    async def settle_run(self, record: ExecutionRecord, job: JobRecord) -> None: ...
    async def expire_dead_replicas(self, lease: timedelta) -> list[ExecutionRecord]: ...
    async def request_cancel(self, execution_id: str) -> ExecutionRecord | None: ...
    async def running_execution(self, job_id: str) -> ExecutionRecord | None: ...
    async def publish_event(self, payload: str) -> None: ...
    async def publish_events(self, payloads: list[str]) -> None: ...
    def listen_events(self, *, on_listen: Callable[[], object] | None = None) -> AsyncGenerator[str, None]: ...
    def listen_cancels(self, *, on_listen: Callable[[], object] | None = None) -> AsyncGenerator[str, None]: ...


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def encode_status(status: JobStatus, origin: str) -> str:
    record = status.record
    return json.dumps(
        {
            "kind": "status",
            "origin": origin,
            "job_id": status.job_id,
            "state": record.state.value,
            "progress": record.progress,
            "status_text": record.status_text[:STATUS_TEXT_LIMIT],
            "last_start": _iso(record.last_start),
            "last_finish": _iso(record.last_finish),
            "execution_id": record.execution_id,
        }
    )


def decode_status(event: dict[str, Any]) -> JobStatus:
    record = JobRecord(
        job_id=str(event["job_id"]),
        state=JobState(event["state"]),
        progress=float(event["progress"]),
        status_text=str(event["status_text"]),
        last_start=_dt(event["last_start"]),
        last_finish=_dt(event["last_finish"]),
        execution_id=str(event["execution_id"]),
    )
    return JobStatus(record, origin=str(event["origin"]))


def _status(record: JobRecord, origin: str) -> JobStatus:
    return JobStatus(record, origin=origin)


def _job_of(run: ExecutionRecord) -> JobRecord:
    """The job row that follows a finished run."""
    return JobRecord(
        job_id=run.job_id,
        state=JobState(run.state.value),
        progress=run.progress,
        status_text=run.status_text,
        last_start=run.start_time,
        last_finish=run.finish_time,
        execution_id=run.id,
    )


class Cluster:
    def __init__(self, store: ClusterStore, *, lease: timedelta) -> None:
        self.store = store
        self.lease = lease
        self.replica_id = store.replica_id
        self._executor: Executor | None = None
        self._manager: JobManager | None = None
        self._pending: dict[str, JobStatus] = {}
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self.listening = asyncio.Event()
        """Set once both listeners are in effect (what is published before that is missed)."""
        self.fenced = False
        """True while this replica's lease is not known to be valid: it claims nothing and starts nothing."""
        self._valid_until = 0.0
        self._fence_timer: asyncio.TimerHandle | None = None

    def attach(self, executor: Executor, manager: JobManager) -> None:
        """Called by the JobManager built with this cluster: what the relays report to and read from."""
        self._executor = executor
        self._manager = manager
        manager.bus.add_listener(self._outgoing)

    async def start(self) -> None:
        await self._renew()
        events_ready, cancels_ready = asyncio.Event(), asyncio.Event()
        self._tasks = [
            asyncio.create_task(self._relay_in(events_ready), name="xcron-cluster-in"),
            asyncio.create_task(self._cancels(cancels_ready), name="xcron-cluster-cancels"),
            asyncio.create_task(self._relay_out(), name="xcron-cluster-out"),
            asyncio.create_task(self._heartbeats(), name="xcron-cluster-heartbeat"),
        ]
        await asyncio.wait_for(asyncio.gather(events_ready.wait(), cancels_ready.wait()), 30)
        self.listening.set()
        log.info("cluster: replica %s joined (lease %.0f s)", self.replica_id, self.lease.total_seconds())

    async def stop(self) -> None:
        await self._flush()
        if self._background:
            await asyncio.wait(set(self._background), timeout=5.0)
        for task in [*self._tasks, *self._background]:
            task.cancel()
        for task in [*self._tasks, *self._background]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._fence_timer is not None:
            self._fence_timer.cancel()

    def _spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- the lease -----------------------------------------------------------------------------

    async def _renew(self) -> None:
        """One renewal. The lease runs from when the request was *sent*: the database's now() for it is
        no earlier, so the others cannot see it lapse before this replica fences itself."""
        loop = asyncio.get_running_loop()
        sent = loop.time()
        lost = await self.store.heartbeat()
        self._valid_until = sent + self.lease.total_seconds()
        if self._fence_timer is not None:
            self._fence_timer.cancel()
        self._fence_timer = loop.call_at(self._valid_until, self._fence)
        if self.fenced:
            self.fenced = False
            log.warning("cluster: lease renewed (epoch %d); claiming occurrences again", self.store.epoch)
        for record in lost:
            log.error(
                "cluster: run %s of %s was recorded ABORTED: this replica's lease lapsed",
                record.id,
                record.job_id,
                extra={"job_id": record.job_id, "execution_id": record.id},
            )
            self._adopt(record)

    def _fence(self) -> None:
        if self.fenced or asyncio.get_running_loop().time() < self._valid_until:
            return
        self.fenced = True
        assert self._executor is not None
        stopped = self._executor.cancel_all_local()
        log.error(
            "cluster: lease not renewed for %.1f s (the database did not answer in time): claiming no occurrence"
            " and starting no run until it is; asked %d local run(s) to cancel (the other replicas may abort and"
            " restart them)",
            self.lease.total_seconds(),
            stopped,
        )

    async def _heartbeats(self) -> None:
        assert self._executor is not None
        interval = self.lease.total_seconds() / 3
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            try:
                await self._renew()
                for record in await self.store.expire_dead_replicas(self.lease):
                    self._adopt(record)  # local, and relayed to the others (no origin)
                assert self._manager is not None
                self._manager.scheduler.adjust_counters(await self.store.refresh_counters())
            except Exception as exc:
                log.error("cluster: heartbeat failed: %s", exc)
            await asyncio.sleep(max(0.0, began + interval - loop.time()))  # the renewal period, not a sync

    def _adopt(self, run: ExecutionRecord) -> None:
        """A run's outcome decided in the database: memory and watchers follow, unless the job shows a newer
        run. It may show an older one: a replica stopped right after starting a run may never have told the
        others, which then learn of the run only when they abort it."""
        assert self._executor is not None
        status = _status(_job_of(run), "")
        if not self._stale(status):
            self._executor.apply_remote(status)

    # -- hooks used by the executor and the scheduler -----------------------------------------

    def _refuse_if_fenced(self) -> None:
        if self.fenced:
            raise StoreUnavailable(
                f"replica {self.replica_id} has not reached the database for a lease "
                f"({self.lease.total_seconds():.0f} s); it starts no run until it has (the other replicas can)",
                reason="LEASE_LOST",
            )

    async def try_start_run(self, record: ExecutionRecord) -> ExecutionRecord | None:
        self._refuse_if_fenced()
        return await self.store.try_start_run(record)

    async def claim(self, job_id: str, schedule_key: str, due: datetime, *, run: bool = True) -> bool:
        if self.fenced:
            log.warning(
                "cluster: occurrence %s of %s not claimed here: this replica's lease is not valid",
                due.isoformat(),
                job_id,
            )
            return False
        return await self.store.claim_occurrence(job_id, schedule_key, due, run=run)

    async def settle_run(self, record: ExecutionRecord, job: JobRecord) -> tuple[ExecutionRecord, JobRecord]:
        """Records the end of a local run, fenced: returns what the database holds, which wins (a run that
        another replica aborted after this one lost its lease stays ABORTED). When the database cannot be
        reached, returns the local outcome and keeps trying in the background."""
        try:
            await self.store.settle_run(record, job)  # both rows, one transaction
        except RunFenced as fenced:
            return fenced.stored, await self._fenced(record, fenced.stored)
        except Exception as exc:
            log.error(
                "cluster: could not record the end of the run (%s); retrying",
                exc,
                extra={"job_id": record.job_id, "execution_id": record.id},
            )
            self._spawn(self._settle_later(record, job))
        return record, job

    async def _fenced(self, mine: ExecutionRecord, stored: ExecutionRecord) -> JobRecord:
        log.error(
            "cluster: run ended %s here, but the database has it %s (%s); keeping that",
            mine.state.value.upper(),
            stored.state.value.upper(),
            stored.error,
            extra={"job_id": stored.job_id, "execution_id": stored.id},
        )
        with contextlib.suppress(Exception):
            row = (await self.store.load_jobs()).get(stored.job_id)
            if row is not None:
                return row  # it may point at a newer run, started elsewhere meanwhile
        return _job_of(stored)

    async def _settle_later(self, record: ExecutionRecord, job: JobRecord) -> None:
        delay = 0.2
        while True:
            await asyncio.sleep(delay)  # back-off between attempts, not synchronisation
            delay = min(delay * 2, 5.0)
            try:
                await self.store.settle_run(record, job)
                return
            except RunFenced as fenced:
                row = await self._fenced(record, fenced.stored)
                assert self._executor is not None
                if self._executor.job_record(record.job_id).execution_id == record.id:
                    self._executor.apply_remote(_status(row, ""))
                return
            except Exception as exc:
                log.warning("cluster: still cannot record the end of run %s: %s", record.id, exc)

    async def cancel_remote(self, job_id: str, execution_id: str) -> ExecutionRecord | None:
        running = await self.store.running_execution(job_id)
        if running is None:
            return None
        if execution_id and running.id != execution_id:
            raise FailedPrecondition(
                f"execution {execution_id} is not the running execution of {job_id!r} (that is {running.id})",
                reason="EXECUTION_NOT_RUNNING",
            )
        return await self.store.request_cancel(running.id)

    # -- events ------------------------------------------------------------------------------

    def _outgoing(self, status: JobStatus) -> None:
        if status.origin:
            return  # came from another replica: never echo it back
        self._pending[status.job_id] = status
        self._wake.set()

    async def _flush(self) -> None:
        """The statuses pending, one NOTIFY each, all in one transaction: every listening replica wakes
        once for the lot."""
        batch, self._pending = self._pending, {}
        if not batch:
            return
        try:
            await self.store.publish_events([encode_status(status, self.replica_id) for status in batch.values()])
        except Exception as exc:
            log.warning("cluster: could not publish the state of %d job(s): %s", len(batch), exc)

    async def _relay_out(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._flush()
            await asyncio.sleep(RELAY_INTERVAL)  # a rate limit: progress storms become one NOTIFY per job

    async def _relay_in(self, ready: asyncio.Event) -> None:
        while True:
            try:
                await self._listen_events(ready)
            except Exception:
                log.exception("cluster: listening for events failed; listening again")
            await asyncio.sleep(1.0)  # back-off before listening again

    def _listening(self, ready: asyncio.Event) -> None:
        """LISTEN is in effect (again): what was notified before is lost, so re-read the state."""
        ready.set()
        self._spawn(self._resync())

    async def _resync(self) -> None:
        """Every job's state and the schedules, as the database has them now; watchers get corrections."""
        assert self._executor is not None and self._manager is not None
        delay = 0.2
        for _ in range(8):
            try:
                stored = await self.store.load_jobs()
                corrected = 0
                for job_id, record in stored.items():
                    try:
                        current = self._executor.job_record(job_id)
                    except NotFound:
                        continue
                    status = _status(record, DATABASE)
                    if record != current and self._executor.running(job_id) is None and not self._stale(status):
                        self._executor.apply_remote(status)
                        corrected += 1
                await self._manager.reload()
                if corrected:
                    log.info("cluster: %d job state(s) corrected from the database after listening again", corrected)
                return
            except XcronServerError as exc:
                log.warning("cluster: could not re-read the state after listening again (%s); retrying", exc)
            await asyncio.sleep(delay)  # back-off between attempts, not synchronisation
            delay = min(delay * 2, 5.0)

    def _stale(self, status: JobStatus) -> bool:
        """A change that would move a job back (a notification overtaken by a re-read, or a re-read overtaken
        by a notification): its run already ended here yet it says RUNNING, or it is about an older run."""
        assert self._executor is not None
        try:
            current = self._executor.job_record(status.job_id)
        except NotFound:
            return True
        change = status.record
        if current.execution_id == change.execution_id:
            return current.state is not JobState.RUNNING and change.state is JobState.RUNNING
        return (
            current.last_start is not None and change.last_start is not None and change.last_start < current.last_start
        )

    async def _listen_events(self, ready: asyncio.Event) -> None:
        assert self._executor is not None and self._manager is not None
        async for payload in self.store.listen_events(on_listen=lambda: self._listening(ready)):
            try:
                event = json.loads(payload)
                if event.get("origin") == self.replica_id:
                    continue
                if event.get("kind") == "status":
                    status = decode_status(event)
                    if not self._stale(status):
                        self._executor.apply_remote(status)
                elif event.get("kind") == "schedules":
                    await self._manager.reload()
            except XcronServerError as exc:
                log.error("cluster: the shared schedules changed but could not be loaded: %s", exc)
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("cluster: ignoring a malformed event (%s): %r", exc, payload[:200])

    async def _cancels(self, ready: asyncio.Event) -> None:
        assert self._executor is not None
        while True:
            try:
                async for execution_id in self.store.listen_cancels(on_listen=ready.set):
                    if self._executor.cancel_local(execution_id):
                        log.info("cluster: cancel request from another replica", extra={"execution_id": execution_id})
            except Exception:
                log.exception("cluster: listening for cancel requests failed; listening again")
            await asyncio.sleep(1.0)  # back-off before listening again
