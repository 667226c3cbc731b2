"""Outcomes the store has not taken yet: every ended run's from the moment its rows are queued until they
are written, and those the store refused (a full disk, a locked database), kept as the truth, retried with
back-off, and health NOT_SERVING meanwhile (a Kubernetes readiness probe sends new work elsewhere).
GetExecution and ListExecutions read them first, so they never disagree with GetJob."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from xcron.server.core.ports import ExecutionRecord, JobRecord, RunFenced, StateStore, queued
from xcron.server.core.runs import all_written, log_ids, outcome

log = logging.getLogger("xcron.server.core.executor")  # the executor's log: operators follow runs there

RETRY_MAX_DELAY = 5.0
"""Back-off cap between attempts to record an outcome the store refused (disk full, locked)."""

HealthListener = Callable[[bool], None]


class UnrecordedOutcomes:
    def __init__(self, store: StateStore, *, is_current: Callable[[JobRecord], bool]) -> None:
        """`is_current(job)`: whether a job row is still the job's current state (a later run's saves win)."""
        self._store = store
        self._is_current = is_current
        self._pending: dict[str, tuple[ExecutionRecord | None, JobRecord | None]] = {}
        self._failing: set[str] = set()  # of those, the ones the store has refused at least once
        self._listeners: list[HealthListener] = []
        self._persisting: set[asyncio.Task[None]] = set()
        self._writing: set[asyncio.Future[None]] = set()  # ends written by write(), not yet settled
        # Outcomes whose rows are queued and not settled: a read queued behind them may find the older row (or
        # fail with them), so memory answers until the store has them.
        self._unsettled: dict[str, ExecutionRecord] = {}

    def add_health_listener(self, listener: HealthListener) -> None:
        self._listeners.append(listener)

    @property
    def healthy(self) -> bool:
        return not self._failing

    def execution(self, execution_id: str) -> ExecutionRecord | None:
        """The outcome kept for this execution, if the store has not taken it yet."""
        pending = self._pending.get(execution_id)
        return pending[0] if pending is not None else self._unsettled.get(execution_id)

    def write(self, record: ExecutionRecord, job: JobRecord) -> None:
        """Writes an ended run's rows without waiting for them: as bookkeeping nobody awaits, so the store may
        hold them for its commit window. If the store refuses them, they are kept and retried as `record`
        does. settled() and drain() wait for them."""
        store = self._store
        with store.deferred_writes():
            execution = queued(store.save_execution(record))
            row = queued(store.save_job(job))
        self._unsettled[record.id] = record
        self._writing.add(row)
        row.add_done_callback(lambda _: self._written(record, job, execution, row))

    def _written(
        self, record: ExecutionRecord, job: JobRecord, execution: asyncio.Future[None], row: asyncio.Future[None]
    ) -> None:
        if not execution.done():  # SQLite settles writes in call order; a store of tasks may not
            self._writing.add(execution)
            execution.add_done_callback(lambda _: self._written(record, job, execution, row))
            return
        self._writing.discard(execution)
        self._writing.discard(row)
        failures = [outcome(execution), outcome(row)]  # each retrieved, or asyncio logs it as lost
        failure = failures[0] or failures[1]
        if failure is not None:
            self.refused(record, job, failure)
        self._unsettled.pop(record.id, None)

    async def write_and_wait(self, record: ExecutionRecord, job: JobRecord) -> None:
        """Writes an ended run's rows at once and waits for them (RunJob's runs: the run counts as finished once
        its end is written); refused, they are kept and retried as `record` does."""
        self._unsettled[record.id] = record
        try:
            await all_written(queued(self._store.save_execution(record)), queued(self._store.save_job(job)))
        except Exception as exc:
            self.refused(record, job, exc)
        finally:
            self._unsettled.pop(record.id, None)

    def refused(self, record: ExecutionRecord, job: JobRecord, error: BaseException) -> None:
        """The store refused an ended run's rows: memory is right and stays the truth; the store must catch up
        (or the job would look RUNNING after a restart), so they are kept and retried while we live."""
        log.error("could not record the end of the run (%s); kept in memory, retrying", error, extra=log_ids(record))
        self.record(record, job, record.id, refused=True)

    def record(
        self, record: ExecutionRecord | None, job: JobRecord | None, execution_id: str, *, refused: bool
    ) -> None:
        """Keeps an outcome (or an undone start) in memory and writes it with back-off until the store
        takes it. Health is degraded while the store refuses it (`refused`: it did already)."""
        self._pending[execution_id] = (record, job)
        if refused:
            self._mark_failing(execution_id)
        task = asyncio.create_task(self._persist(execution_id), name=f"xcron-persist-{execution_id}")
        self._persisting.add(task)
        task.add_done_callback(self._persisting.discard)

    def _mark_failing(self, execution_id: str) -> None:
        was_healthy = self.healthy
        self._failing.add(execution_id)
        if was_healthy:
            self._notify_health(False)

    def _notify_health(self, healthy: bool) -> None:
        for listener in list(self._listeners):
            try:
                listener(healthy)
            except Exception:
                log.exception("health listener failed")

    async def _persist(self, execution_id: str) -> None:
        delay = 0.1
        attempt = 0
        while execution_id in self._pending:
            record, job = self._pending[execution_id]
            job_id = record.job_id if record is not None else job.job_id if job is not None else ""
            try:
                if record is not None:
                    await self._store.save_execution(record)
                # Only while it is still the job's current state: a later run's own saves supersede it.
                if job is not None and self._is_current(job):
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
            if self._pending.get(execution_id) == (record, job):
                del self._pending[execution_id]
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

    async def settled(self) -> None:
        """Waits for the writes in flight now (each ends once the store took its outcome); held ones go now."""
        if self._writing:
            self._store.flush()
        while self._writing:  # a refused one becomes a persisting task before wait() returns
            await asyncio.wait(set(self._writing))
        await asyncio.gather(*self._persisting)

    async def drain(self, grace: float) -> None:
        """At shutdown: lets the writes in flight finish within `grace`, then stops them (nothing may touch the
        store once it is closed) and logs what was never recorded."""
        if self._writing:
            self._store.flush()  # not held for the window: a refused one is retried below
            await asyncio.wait(set(self._writing), timeout=max(grace, 1.0))
        if self._persisting:
            await asyncio.wait(set(self._persisting), timeout=max(grace, 1.0))
        for task in list(self._persisting):
            task.cancel()
        if self._pending:
            lost = ", ".join(sorted(self._pending))
            log.error("exiting with %d outcome(s) the store never took: %s", len(self._pending), lost)
