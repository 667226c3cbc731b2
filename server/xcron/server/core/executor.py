"""Runs jobs: at most one execution per job, blocking code in a bounded thread pool, state recorded
in the store and published on the event bus at every change."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from xcron.server.core.clock import Clock
from xcron.server.core.errors import Conflict, FailedPrecondition, LimitExceeded, NotFound
from xcron.server.core.events import EventBus, JobStatus
from xcron.server.core.jobs import JobCancelled, JobContext
from xcron.server.core.model import ExecutionState, JobState, ParameterValue, Trigger
from xcron.server.core.observe import NullObserver, Observer
from xcron.server.core.registry import JobRegistry
from xcron.server.stores.state import INTERRUPTED, ExecutionRecord, JobRecord, RunFenced, StateStore

log = logging.getLogger(__name__)

_JOB_STATE = {
    ExecutionState.RUNNING: JobState.RUNNING,
    ExecutionState.COMPLETED: JobState.COMPLETED,
    ExecutionState.ABORTED: JobState.ABORTED,
    ExecutionState.CANCELLED: JobState.CANCELLED,
}

FinishListener = Callable[[ExecutionRecord], None]
HealthListener = Callable[[bool], None]

PROGRESS_INTERVAL = 0.05
"""Progress is coalesced at the source: the latest report per job, published at most once per this many
seconds. A report costs a dict write whatever the number of watchers; a quiet job's report goes at once."""
STORM_INTERVAL = 1.0
"""A job whose reports come faster than PROGRESS_INTERVAL (some had to wait) is in a progress storm: its
latest report is published once per this many seconds, until it has been calmer than that for as long.
Every publish costs a message to each watcher, so a storm with 1,000 watchers costs 1,000 messages a
second, not 20 or 20,000."""
RETRY_MAX_DELAY = 5.0
"""Back-off cap between attempts to record an outcome the store refused (disk full, locked)."""


class ClusterHooks(Protocol):
    async def try_start_run(self, record: ExecutionRecord) -> ExecutionRecord | None: ...
    async def cancel_remote(self, job_id: str, execution_id: str) -> ExecutionRecord | None: ...
    async def claim(self, job_id: str, schedule_key: str, due: datetime, *, run: bool = True) -> bool: ...
    async def settle_run(self, record: ExecutionRecord, job: JobRecord) -> tuple[ExecutionRecord, JobRecord]: ...


def _ids(record: ExecutionRecord) -> dict[str, str]:
    return {"job_id": record.job_id, "execution_id": record.id}


@dataclass
class _Running:
    record: ExecutionRecord
    context: JobContext
    task: asyncio.Task[None] | None = None


class Executor:
    def __init__(
        self,
        registry: JobRegistry,
        store: StateStore,
        bus: EventBus,
        clock: Clock,
        *,
        max_threads: int = 8,
        max_running: int = 1000,
        services: Mapping[str, Any] | None = None,
        observer: Observer | None = None,
    ) -> None:
        self._registry = registry
        self._store = store
        self._bus = bus
        self._clock = clock
        self._pool = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="xcron-job")
        self._max_running = max_running
        self._jobs: dict[str, JobRecord] = {}
        self._running: dict[str, _Running] = {}
        self._request_ids: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._listeners: list[FinishListener] = []
        self._accepting = True
        # What jobs may use besides their parameters; the store and clock are the server's own.
        self.services: dict[str, Any] = {"store": store, "clock": clock, **(services or {})}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.observer: Observer = observer or NullObserver()
        self._persisting: set[asyncio.Task[None]] = set()
        # Outcomes (and undone starts) the store has not taken yet, by execution id: the truth until
        # written. GetExecution and ListExecutions read them first, so they never disagree with GetJob.
        self._unrecorded: dict[str, tuple[ExecutionRecord | None, JobRecord | None]] = {}
        self._health_listeners: list[HealthListener] = []
        self._failing: set[str] = set()  # of those, the ones the store has refused at least once
        self._starts = 0  # runs between "accepted" and "task created"; shutdown waits for them
        self._starts_settled = asyncio.Event()
        self._starts_settled.set()
        self._progress_lock = threading.Lock()  # job threads write reports; the loop publishes them
        self._progress_pending: dict[str, tuple[str, float, str | None]] = {}
        self._progress_flush: asyncio.Handle | asyncio.TimerHandle | None = None
        self._progress_flush_requested = False
        self._progress_sent: dict[str, float] = {}
        self._storming: set[str] = set()
        self.cluster: ClusterHooks | None = None
        """Set when replicas share a PostgreSQL store: cluster-wide single run, remote cancels."""

    async def start(self) -> None:
        """Loads job state; runs left RUNNING by a dead process become ABORTED, never NOT_YET_RUN."""
        self._loop = asyncio.get_running_loop()
        interrupted = await self._store.abort_interrupted(self._clock.now())
        for record in interrupted:
            log.warning("run was interrupted by a server stop; recorded ABORTED", extra=_ids(record))
        stored = await self._store.load_jobs()
        for job in self._registry:
            self._jobs[job.id] = stored.get(job.id) or JobRecord(job_id=job.id)
        self._bus.seed(self._status(record) for record in self._jobs.values())

    def add_finish_listener(self, listener: FinishListener) -> None:
        self._listeners.append(listener)

    def add_health_listener(self, listener: HealthListener) -> None:
        """Called with False when an outcome cannot be recorded (store full or failing), True once all are."""
        self._health_listeners.append(listener)

    @property
    def healthy(self) -> bool:
        """False while some ended run's outcome is kept only in memory, waiting for the store."""
        return not self._failing

    def overlay(self, records: list[ExecutionRecord]) -> list[ExecutionRecord]:
        """Stored executions with what memory knows better: running runs and unrecorded outcomes."""
        running = {entry.record.id: entry.record for entry in self._running.values()}
        out = []
        for record in records:
            known = running.get(record.id)
            if known is None and record.id in self._unrecorded:
                known = self._unrecorded[record.id][0]
            out.append(known or record)
        return out

    def job_record(self, job_id: str) -> JobRecord:
        self._registry.get(job_id)
        return self._jobs[job_id]

    def running(self, job_id: str) -> ExecutionRecord | None:
        entry = self._running.get(job_id)
        return entry.record if entry else None

    @property
    def running_count(self) -> int:
        return len(self._running)

    async def run(
        self,
        job_id: str,
        parameters: Mapping[str, ParameterValue],
        *,
        trigger: Trigger,
        request_id: str = "",
        scheduled_time: datetime | None = None,
    ) -> ExecutionRecord:
        """Starts a run now. Parameters must already be bound (validated, defaults filled)."""
        job = self._registry.get(job_id)
        if request_id:
            earlier = await self._find_request(job_id, request_id)
            if earlier is not None:
                return earlier
            known = self._request_ids.get((job_id, request_id))  # a twin call got in during that await
            if known is not None:
                return await self.get_execution(known)
        if not self._accepting:
            raise FailedPrecondition("the server is shutting down; no new runs are started", reason="SHUTTING_DOWN")
        current = self._running.get(job_id)
        if current is not None:
            raise Conflict(
                f"job {job_id!r} is already running (execution {current.record.id} started "
                f"{current.record.start_time.isoformat()}); wait for it to finish or cancel it",
                reason="JOB_ALREADY_RUNNING",
            )
        if len(self._running) >= self._max_running:
            raise LimitExceeded(f"{len(self._running)} runs in progress, the limit is {self._max_running}")
        now = self._clock.now()
        record = ExecutionRecord(
            id=str(uuid.uuid4()),
            job_id=job_id,
            parameters=dict(parameters),
            trigger=trigger,
            state=ExecutionState.RUNNING,
            start_time=now,
            scheduled_time=scheduled_time,
            request_id=request_id,
            status_text="starting",
        )
        context = JobContext(
            job_id=job_id,
            execution_id=record.id,
            parameters=parameters,
            trigger=trigger,
            scheduled_time=scheduled_time,
            on_progress=lambda p, s: self._progress_threadsafe(job_id, record.id, p, s),
            services=self.services,
        )
        context.bind_loop(asyncio.get_running_loop())
        entry = _Running(record=record, context=context)
        # Registered before the first await, so a concurrent RunJob sees it and is refused.
        self._running[job_id] = entry
        if request_id:
            self._remember_request(job_id, request_id, record.id)
        before = self._jobs[job_id]
        saved = job_saved = False
        # From here a shutdown waits for this start to settle: it runs, or it is refused and undone
        # (execution ABORTED, job row back to its previous state), never left half-done.
        self._starts += 1
        self._starts_settled.clear()
        try:
            job_record = JobRecord(
                job_id=job_id,
                state=JobState.RUNNING,
                progress=0.0,
                status_text=record.status_text,
                last_start=now,
                last_finish=before.last_finish,
                execution_id=record.id,
            )
            if self.cluster is None:
                # Queued together, so the store commits both in one transaction. Shielded: if the
                # caller is cancelled meanwhile, the rows may land anyway, so wait to know and undo them.
                writes = asyncio.ensure_future(
                    asyncio.gather(
                        self._store.save_execution(record), self._store.save_job(job_record), return_exceptions=True
                    )
                )
                try:
                    outcomes = await asyncio.shield(writes)
                except asyncio.CancelledError:
                    outcomes = await writes
                    saved = not isinstance(outcomes[0], BaseException)
                    job_saved = not isinstance(outcomes[1], BaseException)
                    raise
                saved = not isinstance(outcomes[0], BaseException)
                job_saved = not isinstance(outcomes[1], BaseException)
                for outcome in outcomes:
                    if isinstance(outcome, BaseException):
                        raise outcome
            else:
                winner = await self.cluster.try_start_run(record)
                if winner is None:
                    raise Conflict(
                        f"job {job_id!r} is already running on another replica; wait for it to finish or cancel it",
                        reason="JOB_ALREADY_RUNNING",
                    )
                if winner.id != record.id:  # the same request_id reached another replica first
                    self._running.pop(job_id, None)
                    self._request_ids[(job_id, request_id)] = winner.id
                    return winner
                saved = job_saved = True
            if not self._accepting or self._running.get(job_id) is not entry:
                raise FailedPrecondition("the server is shutting down; no new runs are started", reason="SHUTTING_DOWN")
            await self._set_job(job_record, persist=self.cluster is not None)
        except BaseException:
            # The run never started: put the job back as it was, in memory and in the store (retried
            # until written, like an outcome), and leave no RUNNING row behind.
            if self._running.get(job_id) is entry:
                del self._running[job_id]
            self._request_ids.pop((job_id, request_id), None)
            if self._jobs[job_id] is not before and self._jobs[job_id].execution_id == record.id:
                self._jobs[job_id] = before
                self._bus.publish(self._status(before))
            if saved or job_saved:
                failed = replace(record, state=ExecutionState.ABORTED, finish_time=now, error="the run could not start")
                self._record_later(failed if saved else None, before, record.id, refused=False)
            raise
        finally:
            self._starts -= 1
            if not self._starts:
                self._starts_settled.set()
        entry.task = asyncio.create_task(self._execute(job, entry), name=f"xcron-run-{job_id}-{record.id}")
        self.observer.run_started(record)
        log.info("run started (%s)", trigger.value, extra=_ids(record))
        if scheduled_time is not None:
            self.observer.lateness(job_id, now - scheduled_time)
        return record

    async def cancel(self, job_id: str, execution_id: str = "") -> ExecutionRecord:
        job = self._registry.get(job_id)
        entry = self._running.get(job_id)
        if not job.can_cancel:
            raise FailedPrecondition(
                f"job {job_id!r} cannot be cancelled (it does not support cancellation)",
                reason="JOB_NOT_CANCELLABLE",
            )
        if entry is None and self.cluster is not None:
            remote = await self.cluster.cancel_remote(job_id, execution_id)
            if remote is not None:
                return remote
        if entry is None:
            raise FailedPrecondition(
                f"job {job_id!r} is not running; there is nothing to cancel", reason="JOB_NOT_RUNNING"
            )
        if execution_id and entry.record.id != execution_id:
            raise FailedPrecondition(
                f"execution {execution_id} is not the running execution of {job_id!r} (that is {entry.record.id})",
                reason="EXECUTION_NOT_RUNNING",
            )
        self._request_cancel(entry)
        return entry.record

    def cancel_local(self, execution_id: str) -> bool:
        """A cancel request for a run of this process that arrived from another replica."""
        for entry in self._running.values():
            if entry.record.id == execution_id:
                self._request_cancel(entry)
                return True
        return False

    def cancel_all_local(self) -> int:
        entries = list(self._running.values())
        for entry in entries:
            self._request_cancel(entry)
        return len(entries)

    def apply_remote(self, status: JobStatus) -> None:
        """A job's state changed on another replica: keep GetJob and local watchers up to date."""
        if status.job_id not in self._jobs or status.job_id in self._running:
            return
        self._jobs[status.job_id] = JobRecord(
            job_id=status.job_id,
            state=status.state,
            progress=status.progress,
            status_text=status.status_text,
            last_start=status.last_start,
            last_finish=status.last_finish,
            execution_id=status.execution_id,
        )
        self._bus.publish(status)

    def _request_cancel(self, entry: _Running) -> None:
        if not entry.record.cancel_requested:
            entry.record = replace(entry.record, cancel_requested=True)
            entry.context.request_cancel()
            log.info("cancel requested", extra=_ids(entry.record))

    def cancel_for_overlap(self, job_id: str) -> None:
        """For the CANCEL_OTHER overlap policy: asks the running execution to stop."""
        entry = self._running.get(job_id)
        if entry is not None:
            self._request_cancel(entry)

    async def get_execution(self, execution_id: str) -> ExecutionRecord:
        for entry in self._running.values():
            if entry.record.id == execution_id:
                return entry.record
        unrecorded = self._unrecorded.get(execution_id)
        if unrecorded is not None and unrecorded[0] is not None:
            return unrecorded[0]
        record = await self._store.get_execution(execution_id)
        if record is None:
            raise NotFound(f"no execution with id {execution_id!r}")
        return record

    async def _find_request(self, job_id: str, request_id: str) -> ExecutionRecord | None:
        known = self._request_ids.get((job_id, request_id))
        if known is not None:
            return await self.get_execution(known)
        return await self._store.find_by_request_id(job_id, request_id)

    def _remember_request(self, job_id: str, request_id: str, execution_id: str) -> None:
        self._request_ids[(job_id, request_id)] = execution_id
        while len(self._request_ids) > 10_000:
            self._request_ids.popitem(last=False)

    async def _execute(self, job_type: type[Any], entry: _Running) -> None:
        context = entry.context
        error = ""
        try:
            job = job_type()
            if job_type.is_async():
                await job.run(context)
            else:
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(self._pool, job.run, context)
            # A job that cannot be cancelled finished its work, whatever was asked of it.
            cancelled = context.cancel_requested and job_type.can_cancel
            state = ExecutionState.CANCELLED if cancelled else ExecutionState.COMPLETED
        except JobCancelled:
            state = ExecutionState.CANCELLED
        except asyncio.CancelledError:
            state, error = ExecutionState.ABORTED, INTERRUPTED
        except BaseException as exc:  # a job's failure (even SystemExit) must never take the server down
            state, error = ExecutionState.ABORTED, f"{type(exc).__name__}: {exc}"
            log.warning("run failed: %s", error, extra=_ids(entry.record))
        if state is ExecutionState.CANCELLED and not error:
            error = "cancelled on request"
        await self._finish(entry, state, error)

    async def _finish(self, entry: _Running, state: ExecutionState, error: str) -> None:
        job_id = entry.record.job_id
        if self._running.get(job_id) is not entry:
            return  # already recorded (e.g. by shutdown)
        self._apply_pending_progress(job_id)  # the last report counts, even if not yet published
        self._progress_sent.pop(job_id, None)
        self._storming.discard(job_id)
        now = self._clock.now()
        status = {
            ExecutionState.COMPLETED: entry.record.status_text if entry.record.progress >= 1 else "completed",
            ExecutionState.CANCELLED: "cancelled",
            ExecutionState.ABORTED: error,
        }[state]
        if state is ExecutionState.COMPLETED and entry.record.status_text in ("starting", ""):
            status = "completed"
        record = replace(entry.record, state=state, finish_time=now, error=error, status_text=status)
        if state is ExecutionState.COMPLETED:
            record = replace(record, progress=1.0)
        entry.record = record
        del self._running[job_id]
        job = replace(
            self._jobs[job_id],
            state=_JOB_STATE[state],
            progress=record.progress,
            status_text=status,
            last_finish=now,
            execution_id=record.id,
        )
        if self.cluster is not None:
            # Fenced: what the database holds wins (another replica may have aborted the run meanwhile).
            record, job = await self.cluster.settle_run(record, job)
            entry.record = record
            if self._jobs[job_id].execution_id == record.id:  # no newer local run started meanwhile
                await self._set_job(job, persist=False)
        else:
            await self._set_job(job, persist=False)
            try:
                await asyncio.gather(self._store.save_execution(record), self._store.save_job(job))
            except Exception as exc:
                # Memory is right and stays the truth; the store must catch up, or the job would look
                # RUNNING after a restart. Keep trying while we live.
                log.error("could not record the end of the run (%s); kept in memory, retrying", exc, extra=_ids(record))
                self._record_later(record, job, record.id, refused=True)
        self.observer.run_finished(record)
        log.info("run ended %s", state.value.upper(), extra=_ids(record))
        for listener in list(self._listeners):
            try:
                listener(record)
            except Exception:
                log.exception("finish listener failed")

    def _record_later(
        self, record: ExecutionRecord | None, job: JobRecord | None, execution_id: str, *, refused: bool
    ) -> None:
        """Keeps an outcome (or an undone start) in memory and writes it with back-off until the store
        takes it. Health is degraded while the store refuses it (`refused`: it did already)."""
        self._unrecorded[execution_id] = (record, job)
        if refused:
            self._mark_failing(execution_id)
        task = asyncio.create_task(self._persist_with_retries(execution_id), name=f"xcron-persist-{execution_id}")
        self._persisting.add(task)
        task.add_done_callback(self._persisting.discard)

    def _mark_failing(self, execution_id: str) -> None:
        was_healthy = self.healthy
        self._failing.add(execution_id)
        if was_healthy:
            self._notify_health(False)

    def _notify_health(self, healthy: bool) -> None:
        for listener in list(self._health_listeners):
            try:
                listener(healthy)
            except Exception:
                log.exception("health listener failed")

    async def _persist_with_retries(self, execution_id: str) -> None:
        delay = 0.1
        attempt = 0
        while execution_id in self._unrecorded:
            record, job = self._unrecorded[execution_id]
            job_id = record.job_id if record is not None else job.job_id if job is not None else ""
            try:
                if record is not None:
                    await self._store.save_execution(record)
                # Only while it is still the job's current state: a later run's own saves supersede it.
                if job is not None and self._jobs.get(job.job_id) == job:
                    await self._store.save_job(job)
            except RunFenced:
                pass  # the store holds another outcome (a cluster fenced this write): it stands
            except Exception as exc:
                attempt += 1
                self._mark_failing(execution_id)
                if attempt in (1, 10) or attempt % 100 == 0:
                    log.error(
                        "still cannot record a run's end (attempt %d): %s; it stays in memory, retrying",
                        attempt,
                        exc,
                        extra={"job_id": job_id, "execution_id": execution_id},
                    )
                await asyncio.sleep(delay)  # back-off between attempts, not synchronisation
                delay = min(delay * 2, RETRY_MAX_DELAY)
                continue
            if self._unrecorded.get(execution_id) == (record, job):
                del self._unrecorded[execution_id]
                if attempt:
                    log.info(
                        "recorded the run's end after %d failed attempt(s)",
                        attempt,
                        extra={"job_id": job_id, "execution_id": execution_id},
                    )
                if execution_id in self._failing:
                    self._failing.discard(execution_id)
                    if self.healthy:
                        self._notify_health(True)

    def _progress_threadsafe(self, job_id: str, execution_id: str, progress: float, status: str | None) -> None:
        """A report from the job (any thread): kept as the job's latest; published by the loop, at most
        once per PROGRESS_INTERVAL per job. Costs the same whatever the number of watchers."""
        loop = self._loop
        if loop is None:
            return
        with self._progress_lock:
            earlier = self._progress_pending.get(job_id)
            if status is None and earlier is not None and earlier[0] == execution_id:
                status = earlier[2]  # None keeps the text; an unpublished text is still the latest
            self._progress_pending[job_id] = (execution_id, progress, status)
            if self._progress_flush_requested:
                return
            self._progress_flush_requested = True
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:  # a job thread: no loop runs here
            on_loop = False
        if on_loop:
            loop.call_soon(self._flush_progress)
        elif not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # closed meanwhile: the server is gone
                loop.call_soon_threadsafe(self._flush_progress)

    def _flush_progress(self) -> None:
        """On the loop: applies and publishes pending reports of jobs not published within the interval;
        the others wait for a timer (one for all jobs)."""
        now = time.monotonic()
        with self._progress_lock:
            self._progress_flush_requested = False
            pending, self._progress_pending = self._progress_pending, {}
        later: dict[str, tuple[str, float, str | None]] = {}
        next_due = float("inf")
        for job_id, report in pending.items():
            sent = self._progress_sent.get(job_id, float("-inf"))
            if job_id in self._storming and now - sent > 2 * STORM_INTERVAL:
                self._storming.discard(job_id)  # calm again
            due = sent + (STORM_INTERVAL if job_id in self._storming else PROGRESS_INTERVAL)
            if due > now:
                self._storming.add(job_id)
                later[job_id] = report
                next_due = min(next_due, sent + STORM_INTERVAL)
                continue
            self._progress_sent[job_id] = now
            self._on_progress(job_id, *report)
        if not later:
            return
        with self._progress_lock:
            for job_id, (execution_id, progress, status) in later.items():
                newer = self._progress_pending.get(job_id)
                if newer is None:
                    self._progress_pending[job_id] = (execution_id, progress, status)
                elif newer[2] is None and newer[0] == execution_id:
                    self._progress_pending[job_id] = (execution_id, newer[1], status)
            if self._progress_flush_requested:
                return
            self._progress_flush_requested = True
        assert self._loop is not None
        self._loop.call_later(max(0.0, next_due - now), self._flush_progress)

    def _apply_pending_progress(self, job_id: str) -> None:
        with self._progress_lock:
            report = self._progress_pending.pop(job_id, None)
        if report is not None:
            self._on_progress(job_id, *report, publish=False)

    def _on_progress(
        self, job_id: str, execution_id: str, progress: float, status: str | None, *, publish: bool = True
    ) -> None:
        entry = self._running.get(job_id)
        if entry is None or entry.record.id != execution_id:
            return  # a late report from a run that already ended
        text = entry.record.status_text if status is None else status
        entry.record = replace(entry.record, progress=progress, status_text=text)
        job = replace(self._jobs[job_id], progress=progress, status_text=text)
        self._jobs[job_id] = job
        if publish:
            self._bus.publish(self._status(job))

    async def _set_job(self, record: JobRecord, *, persist: bool) -> None:
        self._jobs[record.job_id] = record
        self._bus.publish(self._status(record))
        if persist:
            await self._store.save_job(record)

    @staticmethod
    def _status(record: JobRecord) -> JobStatus:
        return JobStatus(
            job_id=record.job_id,
            state=record.state,
            progress=record.progress,
            status_text=record.status_text,
            last_start=record.last_start,
            last_finish=record.last_finish,
            execution_id=record.execution_id,
        )

    async def shutdown(self, grace: float) -> None:
        """Refuses new runs, lets accepted starts settle, asks running ones to cancel, waits up to `grace`
        seconds, then records whatever is still running as ABORTED (interrupted) so the state on disk is
        final. Outcomes the store still refuses get one more `grace` (at least 1 s)."""
        self._accepting = False
        try:
            await asyncio.wait_for(self._starts_settled.wait(), max(grace, 1.0))
        except TimeoutError:
            log.error("%d run start(s) still waiting for the store at shutdown", self._starts)
        entries = list(self._running.values())
        for entry in entries:
            entry.context.request_cancel()
        tasks = [e.task for e in entries if e.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        for entry in list(self._running.values()):
            if entry.task is None:
                continue  # a start still in the store's hands: it undoes itself
            entry.task.cancel()
            await self._finish(entry, ExecutionState.ABORTED, INTERRUPTED)
        if self._persisting:
            await asyncio.wait(set(self._persisting), timeout=grace or 1.0)
        for task in list(self._persisting):
            task.cancel()  # nothing may touch the store once it is closed
        if self._unrecorded:
            lost = ", ".join(sorted(self._unrecorded))
            log.error("exiting with %d outcome(s) the store never took: %s", len(self._unrecorded), lost)
        self._pool.shutdown(wait=False, cancel_futures=True)
