"""Runs jobs: at most one execution per job, blocking code in a bounded thread pool, state recorded
in the store and published on the event bus at every change."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime
from typing import Any

from xcron.server.core.clock import Clock
from xcron.server.core.errors import Conflict, FailedPrecondition, LimitExceeded, NotFound
from xcron.server.core.events import EventBus, JobStatus
from xcron.server.core.jobs import JobCancelled
from xcron.server.core.model import ExecutionState, ParameterValue, Trigger
from xcron.server.core.observe import NullObserver, Observer
from xcron.server.core.outcomes import HealthListener, UnrecordedOutcomes
from xcron.server.core.ports import INTERRUPTED, ExecutionRecord, JobRecord, StateStore, queued
from xcron.server.core.progress import ProgressCoalescer
from xcron.server.core.registry import JobRegistry
from xcron.server.core.requests import RequestIds
from xcron.server.core.runs import (
    ClusterHooks,
    ExecutionIds,
    FinishListener,
    Running,
    StartWrites,
    ended,
    log_ids,
    new_run,
    outcome,
    running_job,
    settled,
    started_at,
)

__all__ = ["ClusterHooks", "Executor", "FinishListener"]

log = logging.getLogger(__name__)


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
        cluster: ClusterHooks | None = None,
    ) -> None:
        """`cluster`: given when replicas share a PostgreSQL store (cluster-wide single run, remote cancels)."""
        self._registry = registry
        self._store = store
        self._bus = bus
        self._clock = clock
        self._pool = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="xcron-job")
        self._max_running = max_running
        self._jobs: dict[str, JobRecord] = {}
        self._running: dict[str, Running] = {}
        self._request_ids = RequestIds(store, self.get_execution)
        self._ids = ExecutionIds()
        self._listeners: list[FinishListener] = []
        self._accepting = True
        # What jobs may use besides their parameters; the store and clock are the server's own.
        self.services: dict[str, Any] = {"store": store, "clock": clock, **(services or {})}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.observer: Observer = observer or NullObserver()
        # Outcomes (and undone starts) the store has not taken yet, by execution id: the truth until
        # written. GetExecution and ListExecutions read them first, so they never disagree with GetJob.
        self.outcomes = UnrecordedOutcomes(store, is_current=lambda job: self._jobs.get(job.job_id) == job)
        self._starts = 0  # runs between "accepted" and "task created"; shutdown waits for them
        self._starts_settled = asyncio.Event()
        self._starts_settled.set()
        self._progress = ProgressCoalescer(self._on_progress)
        self.cluster = cluster
        # Start rows of scheduled runs, queued and not awaited (the store may hold them for its commit window).
        self._start_writes: set[asyncio.Future[None]] = set()
        self._async_jobs: dict[type[Any], bool] = {}

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        """The loop this executor runs on, kept: asyncio.get_running_loop() makes a getpid() system call each
        time (CPython checks for a fork), which a run paid several times over."""
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.get_running_loop()
        return loop

    async def start(self) -> None:
        """Loads job state; runs left RUNNING by a dead process become ABORTED, never NOT_YET_RUN."""
        self._loop = asyncio.get_running_loop()
        self._progress.bind_loop(self._loop)
        interrupted = await self._store.abort_interrupted(self._clock.now())
        for record in interrupted:
            log.warning("run was interrupted by a server stop; recorded ABORTED", extra=log_ids(record))
        stored = await self._store.load_jobs()
        for job in self._registry:
            self._jobs[job.id] = stored.get(job.id) or JobRecord(job_id=job.id)
        self._bus.seed(self._status(record) for record in self._jobs.values())

    def add_finish_listener(self, listener: FinishListener) -> None:
        self._listeners.append(listener)

    def add_health_listener(self, listener: HealthListener) -> None:
        """Called with False when an outcome cannot be recorded (store full or failing), True once all are."""
        self.outcomes.add_health_listener(listener)

    @property
    def healthy(self) -> bool:
        """False while some ended run's outcome is kept only in memory, waiting for the store."""
        return self.outcomes.healthy

    def overlay(self, records: list[ExecutionRecord]) -> list[ExecutionRecord]:
        """Stored executions with what memory knows better: running runs and unrecorded outcomes."""
        running = {entry.record.id: entry.record for entry in self._running.values()}
        out = []
        for record in records:
            known = running.get(record.id)
            if known is None:
                known = self.outcomes.execution(record.id)
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
        """Starts a run now. Parameters must already be bound (validated, defaults filled).

        Check (a repeated request id, shutdown, already running, the limit), record the start (both rows
        in one store transaction, or a cluster-wide claim), then start the task; a start that fails
        after its rows may have been written is rolled back."""
        job = self._registry.get(job_id)
        if request_id:
            earlier = await self._request_ids.earlier_run(job_id, request_id)
            if earlier is not None:
                return earlier
        self._check_can_start(job_id)
        entry = self._new_run(job_id, parameters, trigger, request_id, scheduled_time)
        record = entry.record
        # Registered before the first await, so a concurrent RunJob sees it and is refused.
        self._running[job_id] = entry
        if request_id:
            self._request_ids.remember(job_id, request_id, record.id)
        before = self._jobs[job_id]
        written = StartWrites()
        # From here a shutdown waits for this start to settle: it runs, or it is refused and undone
        # (execution ABORTED, job row back to its previous state), never left half-done.
        self._starts += 1
        self._starts_settled.clear()
        try:
            job_record = running_job(record, before)
            winner = await self._record_start(record, job_record, written)
            if winner is not record:  # the same request_id reached another replica first
                self._running.pop(job_id, None)
                self._request_ids.remember(job_id, request_id, winner.id)
                return winner
            if not self._accepting or self._running.get(job_id) is not entry:
                raise FailedPrecondition("the server is shutting down; no new runs are started", reason="SHUTTING_DOWN")
            await self._set_job(job_record, persist=False)  # written with the start (a cluster's too)
        except BaseException:
            self._undo_start(entry, before, written)
            raise
        finally:
            self._starts -= 1
            if not self._starts:
                self._starts_settled.set()
        entry.task = self._running_loop().create_task(self._execute(job, entry), name=f"xcron-run-{job_id}-{record.id}")
        self.observer.run_started(record)
        if log.isEnabledFor(logging.INFO):  # every run: no `extra` dict built for a line not logged
            log.info("run started (%s)", trigger.value, extra=log_ids(record))
        if scheduled_time is not None:
            self.observer.lateness(job_id, record.start_time - scheduled_time)
        return record

    def start_scheduled(
        self, job_id: str, parameters: Mapping[str, ParameterValue], scheduled_time: datetime
    ) -> ExecutionRecord:
        """Starts a scheduled run at once, without waiting on the store (local store only; a cluster
        claims first, through `run`). The job's code starts on the next turn of the loop; its start
        is recorded then, in the store's next batch (the store commits in call order, so the start
        always lands before the end). If the store refuses the start, the run goes on and its end
        records both rows. Raises as `run` does when the run may not start (shutdown, running, limit)."""
        job = self._registry.get(job_id)
        self._check_can_start(job_id)
        entry = self._new_run(job_id, parameters, Trigger.SCHEDULE, "", scheduled_time)
        record = entry.record
        self._running[job_id] = entry
        self._jobs[job_id] = running_job(record, self._jobs[job_id])
        entry.task = self._running_loop().create_task(
            self._execute(job, entry, record_start=True), name=f"xcron-run-{job_id}"
        )
        return record

    def _code_starts(self, entry: Running) -> None:
        """A scheduled run's code starts now: stamp the instant, publish, count, and queue the start's rows."""
        record = entry.record = started_at(entry.record, self._clock.now())
        job = self._jobs[record.job_id] = running_job(record, self._jobs[record.job_id])
        self._bus.publish(self._status(job))
        self.observer.run_started(record)
        if record.scheduled_time is not None:
            self.observer.lateness(record.job_id, record.start_time - record.scheduled_time)
        if log.isEnabledFor(logging.INFO):
            log.info("run started (schedule)", extra=log_ids(record))
        self._running_loop().call_soon(self._write_start, entry, record, job)

    def _write_start(self, entry: Running, record: ExecutionRecord, job: JobRecord) -> None:
        """After the code's first step: a run that ended already has its end's rows queued, which hold
        all its start's do (a no-op's rows are written once); one still running has its start queued now,
        before its end's, and the store commits in call order."""
        if self._running.get(record.job_id) is not entry:
            return
        with self._store.deferred_writes():  # nobody waits for them
            writes = (queued(self._store.save_execution(record)), queued(self._store.save_job(job)))
        for write in writes:
            self._start_writes.add(write)
            write.add_done_callback(self._start_written)

    def _start_written(self, task: asyncio.Future[None]) -> None:
        self._start_writes.discard(task)
        if not task.cancelled() and task.exception() is not None:  # the end of the run writes both rows again
            log.warning("could not record the start of a scheduled run (%s); its end will be", task.exception())

    def _check_can_start(self, job_id: str) -> None:
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

    def _new_run(
        self,
        job_id: str,
        parameters: Mapping[str, ParameterValue],
        trigger: Trigger,
        request_id: str,
        scheduled_time: datetime | None,
    ) -> Running:
        execution_id = self._ids.new()
        return new_run(
            execution_id,
            job_id,
            parameters,
            trigger,
            request_id,
            scheduled_time,
            self._clock.now(),
            self._progress.sink(job_id, execution_id),
            self.services,
            self._running_loop(),
        )

    async def _record_start(
        self, record: ExecutionRecord, job_record: JobRecord, written: StartWrites
    ) -> ExecutionRecord:
        """Writes the start; returns `record`, or the run another replica started for the same request id.
        `written` says, even when this raises, which rows may be in the store (to undo them)."""
        if self.cluster is not None:
            winner = await self.cluster.try_start_run(record)
            if winner is None:
                raise Conflict(
                    f"job {record.job_id!r} is already running on another replica; wait for it to finish or cancel it",
                    reason="JOB_ALREADY_RUNNING",
                )
            if winner.id != record.id:
                return winner
            written.execution = written.job = True
            return record
        # Queued together, so the store commits both in one transaction. Shielded: if the caller is
        # cancelled meanwhile, the rows may land anyway, so wait to know and undo them.
        writes = (queued(self._store.save_execution(record)), queued(self._store.save_job(job_record)))
        try:
            await settled(*writes)
        except asyncio.CancelledError:
            await settled(*writes)
            written.note([outcome(w) for w in writes])
            raise
        outcomes = [outcome(w) for w in writes]
        written.note(outcomes)
        for failure in outcomes:
            if failure is not None:
                raise failure
        return record

    def _undo_start(self, entry: Running, before: JobRecord, written: StartWrites) -> None:
        """The run never started: put the job back as it was, in memory and in the store (retried until
        written, like an outcome), and leave no RUNNING row behind."""
        record = entry.record
        job_id = record.job_id
        if self._running.get(job_id) is entry:
            del self._running[job_id]
        self._request_ids.forget(job_id, record.request_id)
        if self._jobs[job_id] is not before and self._jobs[job_id].execution_id == record.id:
            self._jobs[job_id] = before
            self._bus.publish(self._status(before))
        if written.execution or written.job:
            failed = replace(
                record, state=ExecutionState.ABORTED, finish_time=record.start_time, error="the run could not start"
            )
            self.outcomes.record(failed if written.execution else None, before, record.id, refused=False)

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
        self._jobs[status.job_id] = status.record
        self._bus.publish(status)

    def _request_cancel(self, entry: Running) -> None:
        if not entry.record.cancel_requested:
            entry.record = replace(entry.record, cancel_requested=True)
            entry.context.request_cancel()
            log.info("cancel requested", extra=log_ids(entry.record))

    def cancel_for_overlap(self, job_id: str) -> None:
        """For the CANCEL_OTHER overlap policy: asks the running execution to stop."""
        entry = self._running.get(job_id)
        if entry is not None:
            self._request_cancel(entry)

    async def get_execution(self, execution_id: str) -> ExecutionRecord:
        for entry in self._running.values():
            if entry.record.id == execution_id:
                return entry.record
        unrecorded = self.outcomes.execution(execution_id)
        if unrecorded is not None:
            return unrecorded
        record = await self._store.get_execution(execution_id)
        if record is None:
            raise NotFound(f"no execution with id {execution_id!r}")
        return record

    async def _execute(self, job_type: type[Any], entry: Running, *, record_start: bool = False) -> None:
        context = entry.context
        error = ""
        try:
            if record_start:
                self._code_starts(entry)
            job = job_type()
            is_async = self._async_jobs.get(job_type)
            if is_async is None:  # inspect.iscoroutinefunction once per job class, not per run
                is_async = self._async_jobs[job_type] = job_type.is_async()
            if is_async:
                await job.run(context)
            else:
                await self._running_loop().run_in_executor(self._pool, job.run, context)
            # A job that cannot be cancelled finished its work, whatever was asked of it.
            cancelled = context.cancel_requested and job_type.can_cancel
            state = ExecutionState.CANCELLED if cancelled else ExecutionState.COMPLETED
        except JobCancelled:
            state = ExecutionState.CANCELLED
        except asyncio.CancelledError:
            state, error = ExecutionState.ABORTED, INTERRUPTED
        except BaseException as exc:  # a job's failure (even SystemExit) must never take the server down
            state, error = ExecutionState.ABORTED, f"{type(exc).__name__}: {exc}"
            log.warning("run failed: %s", error, extra=log_ids(entry.record))
        if state is ExecutionState.CANCELLED and not error:
            error = "cancelled on request"
        await self._finish(entry, state, error)

    async def _finish(self, entry: Running, state: ExecutionState, error: str) -> None:
        job_id = entry.record.job_id
        if self._running.get(job_id) is not entry:
            return  # already recorded (e.g. by shutdown)
        self._apply_pending_progress(job_id)  # the last report counts, even if not yet published
        self._progress.forget(job_id)
        record, job = ended(entry.record, self._jobs[job_id], state, error, self._clock.now())
        entry.record = record
        del self._running[job_id]
        if self.cluster is not None:
            # Fenced: what the database holds wins (another replica may have aborted the run meanwhile).
            record, job = await self.cluster.settle_run(record, job)
            entry.record = record
            if self._jobs[job_id].execution_id == record.id:  # no newer local run started meanwhile
                await self._set_job(job, persist=False)
        else:
            await self._set_job(job, persist=False)
            if record.trigger is Trigger.SCHEDULE:
                # Not awaited: memory and the event bus know the outcome, a read of history commits it first,
                # and what waits for the run to end (a buffered occurrence) need not wait for the commit window.
                self.outcomes.write(record, job)
            else:  # RunJob's runs: as before, the end is written before the run counts as finished
                await self.outcomes.write_and_wait(record, job)
        self.observer.run_finished(record)
        if log.isEnabledFor(logging.INFO):
            log.info("run ended %s", state.value.upper(), extra=log_ids(record))
        for listener in list(self._listeners):
            try:
                listener(record)
            except Exception:
                log.exception("finish listener failed")

    def _apply_pending_progress(self, job_id: str) -> None:
        report = self._progress.take(job_id)
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
        return JobStatus(record)

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
        if self._start_writes:
            self._store.flush()  # held for the store's commit window: they go now
            await asyncio.wait(set(self._start_writes), timeout=grace)
        await self.outcomes.drain(grace)
        self._pool.shutdown(wait=False, cancel_futures=True)
