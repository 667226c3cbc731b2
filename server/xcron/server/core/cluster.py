"""Several xcron replicas on one PostgreSQL store: each scheduled occurrence runs once, a job runs on
one replica at a time, and every replica's watchers see every replica's changes.

- Scheduling: every replica computes the same fire times; before firing, it claims the occurrence
  in the database (`claim_occurrence`), and only the claimant runs it. A dead replica's claims are
  simply never made, so the others fire its occurrences.
- Runs: `try_start_run` inserts the RUNNING execution under a cluster-wide unique index, so RunJob
  on any replica refuses a job running elsewhere (ABORTED) and a repeated request_id returns the
  first execution, wherever it started.
- Events: local status changes are coalesced per job and sent with NOTIFY (at most every 50 ms);
  other replicas apply them to their job state and publish them to their own watchers. Sequence
  numbers stay per replica (see events.py): a watcher that resumes on another replica gets a
  snapshot.
- Cancel: CancelJob on any replica flags the execution in the database and notifies its owner.
- Liveness: each replica heartbeats every lease/3. Runs of a replica not seen for a lease are
  ABORTED by a live one ("interrupted: replica … stopped"). A replica that cannot heartbeat for a
  whole lease asks its own runs to cancel, since the others will soon consider them dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator, Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from xcron.server.core.errors import FailedPrecondition, XcronServerError
from xcron.server.core.events import JobStatus
from xcron.server.core.model import JobState
from xcron.server.stores.state import ExecutionRecord

if TYPE_CHECKING:
    from xcron.server.core.executor import Executor
    from xcron.server.core.service import JobManager

log = logging.getLogger(__name__)
STATUS_TEXT_LIMIT = 2000  # keeps a NOTIFY payload well under PostgreSQL's 8,000 bytes
RELAY_INTERVAL = 0.05


class ClusterStore(Protocol):
    replica_id: str

    async def claim_occurrence(self, job_id: str, schedule_key: str, due: datetime) -> bool: ...
    async def try_start_run(self, record: ExecutionRecord) -> ExecutionRecord | None: ...
    async def heartbeat(self) -> None: ...
    async def expire_dead_replicas(self, lease: timedelta) -> list[ExecutionRecord]: ...
    async def request_cancel(self, execution_id: str) -> ExecutionRecord | None: ...
    async def running_execution(self, job_id: str) -> ExecutionRecord | None: ...
    async def publish_event(self, payload: str) -> None: ...
    def listen_events(self, *, on_listen: Callable[[], object] | None = None) -> AsyncGenerator[str, None]: ...
    def listen_cancels(self, *, on_listen: Callable[[], object] | None = None) -> AsyncGenerator[str, None]: ...


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def encode_status(status: JobStatus, origin: str) -> str:
    return json.dumps(
        {
            "kind": "status",
            "origin": origin,
            "job_id": status.job_id,
            "state": status.state.value,
            "progress": status.progress,
            "status_text": status.status_text[:STATUS_TEXT_LIMIT],
            "last_start": _iso(status.last_start),
            "last_finish": _iso(status.last_finish),
            "execution_id": status.execution_id,
        }
    )


def decode_status(event: dict[str, Any]) -> JobStatus:
    return JobStatus(
        job_id=str(event["job_id"]),
        state=JobState(event["state"]),
        progress=float(event["progress"]),
        status_text=str(event["status_text"]),
        last_start=_dt(event["last_start"]),
        last_finish=_dt(event["last_finish"]),
        execution_id=str(event["execution_id"]),
        origin=str(event["origin"]),
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
        self.listening = asyncio.Event()
        """Set once both listeners are in effect (what is published before that is missed)."""

    def attach(self, executor: Executor, manager: JobManager) -> None:
        self._executor = executor
        self._manager = manager
        executor.cluster = self
        manager.bus.add_listener(self._outgoing)

    async def start(self) -> None:
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
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- hooks used by the executor and the scheduler -----------------------------------------

    async def try_start_run(self, record: ExecutionRecord) -> ExecutionRecord | None:
        return await self.store.try_start_run(record)

    async def claim(self, job_id: str, schedule_key: str, due: datetime) -> bool:
        return await self.store.claim_occurrence(job_id, schedule_key, due)

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
        batch, self._pending = self._pending, {}
        for status in batch.values():
            try:
                await self.store.publish_event(encode_status(status, self.replica_id))
            except Exception as exc:
                log.warning("cluster: could not publish the state of %s: %s", status.job_id, exc)

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

    async def _listen_events(self, ready: asyncio.Event) -> None:
        assert self._executor is not None and self._manager is not None
        async for payload in self.store.listen_events(on_listen=ready.set):
            try:
                event = json.loads(payload)
                if event.get("origin") == self.replica_id:
                    continue
                if event.get("kind") == "status":
                    self._executor.apply_remote(decode_status(event))
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

    async def _heartbeats(self) -> None:
        assert self._executor is not None
        interval = self.lease.total_seconds() / 3
        last_ok = time.monotonic()
        while True:
            try:
                await self.store.heartbeat()
                last_ok = time.monotonic()
                for record in await self.store.expire_dead_replicas(self.lease):
                    status = JobStatus(
                        job_id=record.job_id,
                        state=JobState.ABORTED,
                        status_text=record.error,
                        last_start=record.start_time,
                        last_finish=record.finish_time,
                        execution_id=record.id,
                        progress=record.progress,
                    )
                    self._executor.apply_remote(status)  # local, and relayed to the others (no origin)
            except Exception as exc:
                log.error("cluster: heartbeat failed: %s", exc)
                if time.monotonic() - last_ok > self.lease.total_seconds():
                    stopped = self._executor.cancel_all_local()
                    if stopped:
                        log.error("cluster: no heartbeat for a lease; asked %d local run(s) to cancel", stopped)
            await asyncio.sleep(interval)
