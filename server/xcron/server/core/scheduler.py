"""The scheduler: no polling tick. It keeps every schedule's next due time in a heap and sleeps
until the earliest (or until schedules change), so a run starts within milliseconds of its time.

What it remembers across restarts is each schedule's last handled occurrence (`last_fire`), kept
in the state store; what runs of the occurrences missed since (on start, or after waking late) is the
schedule's misfire policy (misfires.py). A schedule seen for the first time starts from "now": xcron
never back-fills a newly set schedule.

When an occurrence is due while the job still runs, the overlap policy decides: SKIP (default,
counted), BUFFER_ONE (run once as soon as the current run ends), CANCEL_OTHER (ask the running
execution to cancel, then run).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
from collections.abc import Coroutine
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from xcron.server.core.clock import Clock
from xcron.server.core.errors import Conflict
from xcron.server.core.executor import ClusterHooks, Executor
from xcron.server.core.misfires import due_occurrences
from xcron.server.core.model import JobSchedules, OverlapPolicy, Schedule, Trigger
from xcron.server.core.occurrences import ClusterCounts, Entry, log_skip, not_started_reason
from xcron.server.core.params import bind_parameters
from xcron.server.core.ports import ExecutionRecord, ScheduleRecord, StateStore, queued
from xcron.server.core.registry import JobRegistry
from xcron.server.core.triggers import fire_times, next_fire_time

log = logging.getLogger(__name__)

MISFIRE_THRESHOLD = timedelta(seconds=60)


def _report_death(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.critical("the scheduler stopped: no schedule fires until a restart", exc_info=task.exception())


class Scheduler:
    def __init__(
        self,
        *,
        registry: JobRegistry,
        executor: Executor,
        store: StateStore,
        clock: Clock,
        default_zone: str,
        misfire_threshold: timedelta = MISFIRE_THRESHOLD,
        cluster: ClusterHooks | None = None,
    ) -> None:
        """`cluster`: given when replicas share the store; the replica that claims an occurrence runs it."""
        self._registry = registry
        self._cluster = cluster
        self._counts = ClusterCounts(cluster, executor, self._bump) if cluster is not None else None
        self._executor = executor
        self._store = store
        self._clock = clock
        self._default_zone = default_zone
        self._misfire_threshold = misfire_threshold
        self._entries: dict[str, list[Entry]] = {}
        self._paused: set[str] = set()
        self._records: dict[tuple[str, str], ScheduleRecord] = {}
        self._heap: list[tuple[datetime, int, int, Entry]] = []
        self._counter = itertools.count()
        self._waiter: asyncio.Future[None] | None = None  # resolved to wake the loop up (see _wake)
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Future[Any]] = set()
        self._starting: set[str] = set()
        self._idle = False
        self._version = 0
        self._stopped = False
        executor.add_finish_listener(self._on_run_finished)

    async def start(self, schedules: dict[str, JobSchedules]) -> None:
        self._stopped = False
        self._records = await self._store.load_schedule_records()
        # The records of schedules seen for the first time, saved in one store call for all jobs (not
        # one per job: with 10,000 jobs that was most of the start-up time).
        now = self._clock.now()
        new_records = [
            ScheduleRecord(job_id=job_id, schedule_key=key, last_fire=now)
            for job_id, job_schedules in schedules.items()
            for key in dict.fromkeys(s.key for s in job_schedules.schedules)
            if (job_id, key) not in self._records
        ]
        if new_records:
            await self._save_records(new_records)
            for record in new_records:
                self._records[(record.job_id, record.schedule_key)] = record
        # Records of a job's schedules no longer in xcron.xml: forgotten, as set_job_schedules does (those
        # of jobs not given here are kept, and so is what set_job_schedules never sees).
        wanted = {(job_id, s.key) for job_id, job_schedules in schedules.items() for s in job_schedules.schedules}
        stale: dict[str, list[str]] = {}
        for job_id, key in list(self._records):
            if job_id in schedules and (job_id, key) not in wanted:
                stale.setdefault(job_id, []).append(key)
                del self._records[(job_id, key)]
        for job_id, keys in stale.items():
            try:
                await self._store.delete_schedule_records(job_id, keys)
            except Exception as exc:
                log.warning("could not forget the fire times of %s's removed schedules: %s", job_id, exc)
        for job_id, job_schedules in schedules.items():
            await self.set_job_schedules(job_id, job_schedules)
        self._task = asyncio.create_task(self._run(), name="xcron-scheduler")
        self._task.add_done_callback(_report_death)

    async def stop(self) -> None:
        """Stops firing; runs that end afterwards start nothing and save nothing (the store closes next)."""
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._inflight):
            task.cancel()
        if self._inflight:
            await asyncio.wait(self._inflight)

    async def set_job_schedules(self, job_id: str, job_schedules: JobSchedules) -> None:
        """Replaces a job's schedules (pausing and resuming included).

        Unchanged schedules (same key) keep their last fire time; removed ones forget theirs, so a
        schedule put back later starts from then. Un-pausing moves the last fire time to now:
        occurrences missed while paused are not run (as Temporal does). Buffered occurrences of
        a paused job are dropped and counted.
        """
        now = self._clock.now()
        keys = list(dict.fromkeys(s.key for s in job_schedules.schedules))
        unpausing = job_id in self._paused and not job_schedules.paused
        new_records = [
            ScheduleRecord(job_id=job_id, schedule_key=key, last_fire=now)
            for key in keys
            if (job_id, key) not in self._records
        ]
        # A job's records are its current entries' (start() forgets the others of the jobs it is given), so
        # its entries say which records go: no scan of all records (quadratic at start-up with 10,000 jobs).
        if job_id in self._entries or self._task is None:
            removed = [e.schedule.key for e in self._entries.get(job_id, []) if e.schedule.key not in keys]
        else:  # a job start() was not given: its records may be older than this process
            removed = [key for (j, key) in self._records if j == job_id and key not in keys]
        removed = list(dict.fromkeys(removed))
        # Best effort: the schedules themselves are saved already (xcron.xml). Without these records
        # a restart would take a schedule as new and start it from then, which runs nothing twice.
        try:
            if new_records:
                await self._store.save_schedule_records(new_records)
            if removed:
                await self._store.delete_schedule_records(job_id, removed)
        except Exception as exc:
            log.warning("could not save the fire times of %s's schedules: %s", job_id, exc)
        # From here on nothing awaits: entries, records and the heap change together.
        self._version += 1
        for record in new_records:
            self._records.setdefault((job_id, record.schedule_key), record)
        for key in removed:
            self._records.pop((job_id, key), None)
        old = {e.schedule.key: e for e in self._entries.get(job_id, [])}
        entries: list[Entry] = []
        for schedule in job_schedules.schedules:
            record = self._records[(job_id, schedule.key)]
            if unpausing:
                record = replace(record, last_fire=max(now, record.last_fire or now))
                self._records[(job_id, schedule.key)] = record
            entry = Entry(job_id=job_id, schedule=schedule, record=record)
            previous = old.get(schedule.key)
            if previous is not None and previous.pending:
                if job_schedules.paused:
                    self._count_skipped(entry, len(previous.pending))
                else:
                    entry.pending = previous.pending
            entries.append(entry)
        for entry in old.values():
            entry.version += 1  # invalidates its heap items
        self._entries[job_id] = entries
        if job_schedules.paused:
            self._paused.add(job_id)
        else:
            self._paused.discard(job_id)
        for entry in entries:
            self._plan(entry)
        if unpausing:
            self._save_soon([e.record for e in entries])
        self._wake()

    def _count_skipped(self, entry: Entry, count: int) -> None:
        self._version += 1
        entry.record = replace(entry.record, overlap_skipped=entry.record.overlap_skipped + count)
        self._records[(entry.job_id, entry.record.schedule_key)] = entry.record

    async def _save_records(self, records: list[ScheduleRecord]) -> None:
        try:
            await self._store.save_schedule_records(records)
        except Exception as exc:
            log.warning("could not save schedule fire times: %s", exc)

    def _save_soon(self, records: list[ScheduleRecord]) -> None:
        """As _save_records, without a task: the write is queued now and its failure logged when it settles."""
        if self._stopped or not records:
            return
        with self._store.deferred_writes():  # nobody waits for it: the store may hold it a moment
            raw = self._store.save_schedule_records(records)
        write = queued(raw)
        if write is not raw:  # a coroutine store's task: stop() must not leave it running
            self._inflight.add(write)
        # A store that queues the write when called keeps it in order itself (reads see it, close commits
        # it): settled() need not wait for its commit window.
        write.add_done_callback(self._saved)

    def _saved(self, write: asyncio.Future[Any]) -> None:
        self._inflight.discard(write)
        if not write.cancelled() and write.exception() is not None:
            log.warning("could not save schedule fire times: %s", write.exception())

    def schedule_info(self, job_id: str, count: int) -> list[tuple[Schedule, ScheduleRecord, list[datetime]]]:
        """Each schedule with its record and next `count` fire times (none while paused).

        The record's `last_fire` is the watermark up to which occurrences were handled (for a new
        schedule: when it was first seen); `last_run` is the last occurrence that started a run.
        """
        paused = job_id in self._paused
        out = []
        for entry in self._entries.get(job_id, []):
            times: list[datetime] = []
            if not paused and entry.next_due is not None and count > 0:
                # The next one is planned already; only the ones after it cost a computation.
                times = [entry.next_due]
                if count > 1:
                    times += fire_times(entry.schedule, entry.next_due, count - 1, default_zone=self._default_zone)
            out.append((entry.schedule, entry.record, times))
        return out

    @property
    def version(self) -> int:
        """Changes whenever any schedule's plan or record may have changed (for response caches)."""
        return self._version

    def _plan(self, entry: Entry) -> None:
        self._version += 1
        entry.version += 1
        if entry.job_id in self._paused:
            entry.next_due = None
            return
        entry.next_due = next_fire_time(
            entry.schedule, entry.record.last_fire or self._clock.now(), default_zone=self._default_zone
        )
        if entry.next_due is not None:
            heapq.heappush(self._heap, (entry.next_due, next(self._counter), entry.version, entry))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            now = self._clock.now()
            due: list[Entry] = []
            while self._heap and self._heap[0][0] <= now:
                _, _, version, entry = heapq.heappop(self._heap)
                if version == entry.version:
                    due.append(entry)
            if due:
                self._handle_due(due, now)
                await asyncio.sleep(0)  # let the runs just started get going before looking again
                continue
            # One future and one timer per wait (not two tasks): the timer, or a change of schedules, wakes it.
            waiter = self._waiter = loop.create_future()
            timer = self._clock.wake_at(self._heap[0][0], self._wake) if self._heap else None
            self._idle = True
            try:
                await waiter
            finally:
                self._idle = False
                self._waiter = None
                if timer is not None:
                    timer.cancel()

    def _wake(self) -> None:
        """The earliest schedule is due, or schedules changed: the loop looks again."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def settled(self) -> None:
        """Returns once all that is due at the clock's current time has been handled and the runs
        it started are registered. Lets tests move a fake clock and then assert, without sleeping."""
        quiet = 0
        while quiet < 2:  # twice in a row, so the waiters the loop just created have started too
            if self._inflight:
                await asyncio.wait(set(self._inflight))
            top = self._heap[0][0] if self._heap else None
            woken = self._waiter is None or self._waiter.done()
            calm = self._idle and not woken and not self._inflight
            quiet = quiet + 1 if calm and (top is None or top > self._clock.now()) else 0
            await asyncio.sleep(0)

    def _handle_due(self, due: list[Entry], now: datetime) -> None:
        """Decides what each due schedule does, saves the new last-fire times, then starts the runs."""
        to_fire: list[tuple[Entry, list[datetime]]] = []
        for entry in due:
            try:
                chosen = self._decide(entry, now)
            except Exception:  # one broken schedule must not stop the others
                log.exception(
                    "job %s schedule %s: could not work out its occurrences", entry.job_id, entry.schedule.key
                )
                continue
            if chosen:
                to_fire.append((entry, chosen))
        for handled, times in to_fire:
            # Fire through the schedule as it is now (same key: same occurrences), or not at all.
            target = next(
                (e for e in self._entries.get(handled.job_id, []) if e.schedule.key == handled.schedule.key), None
            )
            if target is None or target.job_id in self._paused:
                continue
            if len(times) == 1:
                self._fire(target, times[0])
            else:  # catch-up runs go one after another, whatever the overlap policy
                target.pending.extend(times)
                self._drain(target.job_id)
        # Not awaited, and queued after the starts above: the job's code of a run started above runs
        # first, and the store commits in call order, so these fire times are durable no later than
        # the run's rows (queued when its code has run, or has ended), in the same batch when it ends at
        # once (a crash never makes a started run look missed).
        # In a cluster the replica that claims an occurrence records its fire time with the claim.
        firing = {id(e) for e, _ in to_fire} if self._cluster is not None else set()
        self._save_soon([e.record for e in due if id(e) not in firing])

    def _decide(self, entry: Entry, now: datetime) -> list[datetime]:
        """Applies the misfire policy to a due entry, updates its record and re-plans it."""
        schedule, record = entry.schedule, entry.record
        due = due_occurrences(
            schedule, record.last_fire or now, now, threshold=self._misfire_threshold, default_zone=self._default_zone
        )
        if due is None:
            self._plan(entry)
            return []
        dropped = due.dropped
        if dropped and self._counts is not None:
            # Every replica sees the same misses: the one that claims them counts them.
            self._spawn(self._counts.count_missed_if_claimed(entry.job_id, schedule, due.newest, dropped))
            dropped = 0
        if dropped:
            self._executor.observer.misfired(entry.job_id, schedule.misfire_policy.value, dropped)
        if due.late:
            log.info(
                "job %s schedule %s: %d occurrence(s) missed; policy %s runs %d",
                entry.job_id,
                schedule.key,
                due.late,
                schedule.misfire_policy.value,
                due.run_late,
            )
        entry.record = ScheduleRecord(
            job_id=record.job_id,
            schedule_key=record.schedule_key,
            last_fire=due.newest,
            last_run=due.chosen[-1] if due.chosen else record.last_run,
            overlap_skipped=record.overlap_skipped,
            misfire_skipped=record.misfire_skipped + dropped,
            not_started=record.not_started,
        )
        self._records[(entry.job_id, record.schedule_key)] = entry.record
        self._plan(entry)
        return due.chosen

    def _fire(self, entry: Entry, due: datetime) -> None:
        job_id = entry.job_id
        if not self._busy(job_id):
            if any(e.pending for e in self._entries.get(job_id, [])):
                entry.pending.append(due)  # behind the occurrences already waiting, in order
                self._drain(job_id)
            else:
                self._start(entry, due)
            return
        policy = entry.schedule.overlap_policy
        if policy is OverlapPolicy.SKIP or (policy is OverlapPolicy.BUFFER_ONE and entry.pending):
            if self._counts is not None:  # the replica that claims the occurrence counts it
                self._spawn(self._counts.skip_if_claimed(entry, due))
                return
            self._count_skipped(entry, 1)
            self._save_soon([entry.record])
            self._executor.observer.overlap_skipped(job_id, policy.value)
            log_skip(self._executor, job_id, due)
            return
        if policy is OverlapPolicy.CANCEL_OTHER:
            # The newest occurrence supersedes one still waiting for the cancelled run to end.
            superseded = len(entry.pending)
            entry.pending.clear()
            if superseded:
                self._executor.observer.overlap_skipped(job_id, policy.value)
                self._count_skipped(entry, superseded)
            self._executor.cancel_for_overlap(job_id)
        entry.pending.append(due)
        self._drain(job_id)

    def _bump(self, job_id: str, key: str, *, overlap: int = 0, misfire: int = 0) -> None:
        """Adds to a schedule's skip counters and saves them."""
        record = self._add_counts(job_id, key, overlap, misfire)
        if record is not None:
            self._save_soon([record])

    def adjust_counters(self, deltas: dict[tuple[str, str], tuple[int, int]]) -> None:
        """What other replicas counted since this one last looked (cluster): GetJob shows cluster totals."""
        for (job_id, key), (overlap, misfire) in deltas.items():
            self._add_counts(job_id, key, overlap, misfire)

    def _add_counts(self, job_id: str, key: str, overlap: int, misfire: int) -> ScheduleRecord | None:
        record = self._records.get((job_id, key))
        if record is None:
            return None
        self._version += 1
        record = replace(
            record,
            overlap_skipped=record.overlap_skipped + overlap,
            misfire_skipped=record.misfire_skipped + misfire,
        )
        self._records[(job_id, key)] = record
        for entry in self._entries.get(job_id, []):
            if entry.schedule.key == key:
                entry.record = replace(entry.record, overlap_skipped=record.overlap_skipped,
                                       misfire_skipped=record.misfire_skipped)  # fmt: skip
        return record

    def _busy(self, job_id: str) -> bool:
        return job_id in self._starting or self._executor.running(job_id) is not None

    def _on_run_finished(self, record: ExecutionRecord) -> None:
        self._drain(record.job_id)

    def _drain(self, job_id: str) -> None:
        """Starts the oldest buffered occurrence of a job, if any and the job is idle (and not paused)."""
        if self._busy(job_id) or job_id in self._paused:
            return
        candidates = [e for e in self._entries.get(job_id, []) if e.pending]
        if not candidates:
            return
        entry = min(candidates, key=lambda e: e.pending[0])
        self._start(entry, entry.pending.popleft())

    def _start(self, entry: Entry, due: datetime) -> None:
        if self._cluster is None:
            # Local store: the run starts now, in this call (no task, no wait on the store); the
            # executor records its start once the code runs.
            if self._stopped:
                return
            try:
                job = self._registry.get(entry.job_id)
                parameters = bind_parameters(job.parameters, entry.schedule.parameters)
                self._executor.start_scheduled(entry.job_id, parameters, due)
            except Exception as exc:
                self._not_started(entry, due, exc)
            return
        self._starting.add(entry.job_id)  # until the executor has registered the run
        self._spawn(self._start_run(entry, due))

    def _not_started(self, entry: Entry, due: datetime, exc: Exception, *, drain: bool = True) -> None:
        """An occurrence that was due and free to run did not start: counted (per schedule, and in the
        metrics under a reason), logged, and (`drain`) what waits behind it goes on."""
        reason = not_started_reason(exc)
        self._executor.observer.not_started(entry.job_id, reason)
        record = self._records.get((entry.job_id, entry.schedule.key))
        if record is not None:
            self._version += 1
            record = replace(record, not_started=record.not_started + 1)
            self._records[(entry.job_id, entry.schedule.key)] = record
            for e in self._entries.get(entry.job_id, []):
                if e.schedule.key == entry.schedule.key:
                    e.record = replace(e.record, not_started=record.not_started)
        log.warning("scheduled run of %s at %s not started (%s): %s", entry.job_id, due.isoformat(), reason, exc)
        if drain:
            self._drain(entry.job_id)

    async def _start_run(self, entry: Entry, due: datetime) -> None:
        try:
            cluster = self._cluster
            if cluster is not None and not await cluster.claim(entry.job_id, entry.schedule.key, due):
                return  # another replica has this occurrence
            job = self._registry.get(entry.job_id)
            parameters = bind_parameters(job.parameters, entry.schedule.parameters)
            await self._executor.run(entry.job_id, parameters, trigger=Trigger.SCHEDULE, scheduled_time=due)
        except Conflict as exc:  # running on another replica: the overlap policy degrades to SKIP there
            self._executor.observer.overlap_skipped(entry.job_id, entry.schedule.overlap_policy.value)
            self._bump(entry.job_id, entry.schedule.key, overlap=1)  # counted (and saved) by the claimant
            log.info("scheduled run of %s at %s skipped: %s", entry.job_id, due.isoformat(), exc.message)
        except Exception as exc:
            # Not drained here: the next occurrence's start would mark the job starting, and the `finally`
            # below would take that mark away, letting a third occurrence start alongside it.
            self._not_started(entry, due, exc, drain=False)
        finally:
            self._starting.discard(entry.job_id)
            self._drain(entry.job_id)  # what waits behind it goes on (a no-op when the run started)

    def _spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        if self._stopped:
            coro.close()
            return
        task = asyncio.ensure_future(coro)
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
