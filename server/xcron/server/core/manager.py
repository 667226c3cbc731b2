"""The job manager: what the API layer calls. It ties the registry, executor, scheduler and the
schedule file together and owns the rule that a schedule is never reported saved when it is not."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from xcron.server.core.clock import Clock
from xcron.server.core.cluster import Cluster
from xcron.server.core.errors import FailedPrecondition, InvalidArgument, StoreUnavailable
from xcron.server.core.events import EventBus, Watcher
from xcron.server.core.executor import Executor
from xcron.server.core.jobs import Job
from xcron.server.core.limits import Limits
from xcron.server.core.model import JobSchedules, OverlapPolicy, ParameterValue, Schedule, Trigger
from xcron.server.core.params import bind_parameters, bind_positional, check_size
from xcron.server.core.ports import (
    NO_END_FLOOR,
    ExecutionCursor,
    ExecutionRecord,
    JobRecord,
    ScheduleDocument,
    ScheduleEntry,
    ScheduleFileError,
    ScheduleRecord,
    ScheduleSource,
    ScheduleSourceChanged,
    ScheduleWriteError,
    StateStore,
)
from xcron.server.core.registry import JobRegistry
from xcron.server.core.scheduler import Scheduler
from xcron.server.core.triggers import ScheduleValueError, fire_times, validate_schedule

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobView:
    job: type[Job]
    record: JobRecord
    schedules: list[tuple[Schedule, ScheduleRecord, list[datetime]]]
    paused: bool
    disabled_schedules: tuple[str, ...] = ()
    """Schedules in xcron.xml this server cannot honour and does not run, as "xcron.xml:LINE: reason"."""


class JobManager:
    def __init__(
        self,
        *,
        registry: JobRegistry,
        store: StateStore,
        bus: EventBus,
        clock: Clock,
        schedule_source: ScheduleSource,
        default_zone: str,
        executor: Executor,
        limits: Limits | None = None,
        cluster: Cluster | None = None,
    ) -> None:
        """`cluster`: the same one the executor was built with, when replicas share a PostgreSQL store."""
        self.registry = registry
        self.store = store
        self.bus = bus
        self.clock = clock
        self.schedule_source = schedule_source
        self.default_zone = default_zone
        self.executor = executor
        self.limits = limits or Limits()
        self.scheduler = Scheduler(
            registry=registry,
            executor=executor,
            store=store,
            clock=clock,
            default_zone=default_zone,
            cluster=cluster,
        )
        self._document = ScheduleDocument(entries=())
        self._schedules: dict[str, JobSchedules] = {}
        self._disabled: dict[str, tuple[str, ...]] = {}
        self._schedule_lock = asyncio.Lock()
        self.cluster = cluster
        if cluster is not None:
            assert executor.cluster is cluster, "the executor must be built with the same cluster"
            cluster.attach(executor, self)

    # -- lifecycle -------------------------------------------------------------------------

    async def load_schedules(self) -> None:
        """Reads and checks xcron.xml; raises ScheduleFileError (the server must not start)."""
        document = await self.schedule_source.load(default_zone=self.default_zone, known=self._known)
        self._schedules, self._disabled = self._bind_document(document)
        self._document = document

    async def import_schedules(self, source: ScheduleSource) -> None:
        """Replaces the schedules with another source's (an xcron.xml file), checked first like a reload."""
        document = await source.load(default_zone=self.default_zone, known=self._known)
        self._bind_document(document)
        await self.schedule_source.save(document, default_zone=self.default_zone, known=lambda _: False)
        log.info("imported %d schedule entries from %s", len(document.entries), source.description)

    async def start(self) -> None:
        await self.executor.start()
        await self.scheduler.start(self._schedules)

    async def stop(self, grace: float) -> None:
        await self.scheduler.stop()
        await self.executor.shutdown(grace)

    def _known(self, type_name: str) -> bool:
        return self.registry.by_type_name(type_name) is not None

    def _bind_document(self, document: ScheduleDocument) -> tuple[dict[str, JobSchedules], dict[str, tuple[str, ...]]]:
        """Each known job's schedules, and the schedules of it that cannot run (logged as warnings)."""
        bound: dict[str, JobSchedules] = {}
        disabled: dict[str, tuple[str, ...]] = {}
        for entry in document.entries:
            job = self.registry.by_type_name(entry.type_name)
            if job is None:
                log.info("xcron.xml: keeping entry for unknown job type %r unchanged", entry.type_name)
                continue
            if entry.disabled:
                disabled[job.id] = tuple(f"{self.schedule_source.label}:{d.line}: {d.reason}" for d in entry.disabled)
                for d in entry.disabled:
                    log.warning("%s:%s: job %s: %s", self.schedule_source.description, d.line, job.id, d.reason)
            if job.id in bound:
                raise ScheduleFileError(
                    self.schedule_source.description, None, f"two entries for job type {entry.type_name!r}"
                )
            schedules = []
            for schedule in entry.schedules:
                try:
                    given = schedule.parameters or bind_positional(job.parameters, entry.positional_parameters)
                    bind_parameters(job.parameters, given)
                    validate_schedule(schedule)
                    _check_overlap(job, schedule, "xc:overlap")
                except (InvalidArgument, ScheduleValueError) as exc:
                    raise ScheduleFileError(
                        self.schedule_source.description, None, f"entry {entry.type_name!r}: {exc}"
                    ) from exc
                schedules.append(_with_parameters(schedule, given))
            bound[job.id] = JobSchedules(schedules=tuple(schedules), paused=entry.paused)
        return bound, disabled

    async def reload(self) -> tuple[int, int]:
        """Re-reads xcron.xml; an invalid file changes nothing (InvalidArgument says why)."""
        async with self._schedule_lock:
            try:
                return await self._reload_locked()
            except ScheduleFileError as exc:
                log.error("reload rejected, running schedules kept: %s", exc)
                raise InvalidArgument(
                    "", f"xcron.xml was not reloaded: {_without_path(exc)}", reason="SCHEDULE_FILE_INVALID"
                ) from exc

    async def _reload_locked(self) -> tuple[int, int]:
        document = await self.schedule_source.load(default_zone=self.default_zone, known=self._known)
        schedules, disabled = self._bind_document(document)
        self._document = document
        self._disabled = disabled
        for job in self.registry:
            new = schedules.get(job.id, JobSchedules())
            if new != self._schedules.get(job.id, JobSchedules()):
                await self.scheduler.set_job_schedules(job.id, new)
        self._schedules = schedules
        unknown = sum(1 for e in document.entries if not self._known(e.type_name))
        log.info(
            "%s reloaded: %d scheduled jobs, %d unknown entries",
            self.schedule_source.description,
            len(schedules),
            unknown,
        )
        return sum(1 for s in schedules.values() if s.schedules), unknown

    # -- queries -----------------------------------------------------------------------------

    def view(self, job_id: str, *, fire_time_count: int = 5) -> JobView:
        job = self.registry.get(job_id)
        return JobView(
            job=job,
            record=self.executor.job_record(job_id),
            schedules=self.scheduler.schedule_info(job_id, fire_time_count),
            paused=self._schedules.get(job_id, JobSchedules()).paused,
            disabled_schedules=self._disabled.get(job_id, ()),
        )

    @property
    def version(self) -> tuple[int, int]:
        """Equal versions mean equal views of every job (state, schedules, fire times)."""
        return (self.bus.sequence, self.scheduler.version)

    def now(self) -> datetime:
        return self.clock.now()

    def check_job(self, job_id: str) -> None:
        """NotFound unless the job is one this server runs."""
        self.registry.get(job_id)

    def watch(self, job_ids: Sequence[str], *, after_sequence: int = 0) -> Watcher:
        """A subscription to the jobs' status changes (every job for no ids): a snapshot first, or the changes
        after `after_sequence`. The caller closes it. NotFound for an unknown job, LimitExceeded when full."""
        for job_id in job_ids:
            self.registry.get(job_id)
        return self.bus.subscribe(job_ids, after_sequence=after_sequence)

    def job_ids(self) -> list[str]:
        return [job.id for job in self.registry]

    async def list_executions(
        self, job_id: str, *, limit: int, before: ExecutionCursor | None
    ) -> list[ExecutionRecord]:
        self.registry.get(job_id)
        return self.executor.overlay(await self.store.list_executions(job_id, limit=limit, before=before))

    async def get_execution(self, execution_id: str) -> ExecutionRecord:
        return await self.executor.get_execution(execution_id)

    # -- actions -----------------------------------------------------------------------------

    async def run(
        self, job_id: str, parameters: Mapping[str, ParameterValue], *, request_id: str = ""
    ) -> ExecutionRecord:
        job = self.registry.get(job_id)
        check_size(parameters, self.limits)
        bound = bind_parameters(job.parameters, parameters)
        return await self.executor.run(job_id, bound, trigger=Trigger.MANUAL, request_id=request_id)

    async def cancel(self, job_id: str, execution_id: str = "") -> ExecutionRecord:
        return await self.executor.cancel(job_id, execution_id)

    async def set_schedules(
        self, job_id: str, schedules: Sequence[Schedule], *, validate_only: bool = False
    ) -> list[Schedule]:
        """Checks and saves `schedules` (returned as saved); `validate_only`: checks them, saves nothing."""
        job = self.registry.get(job_id)
        if len(schedules) > self.limits.max_schedules_per_job:
            raise InvalidArgument(
                "schedules", f"{len(schedules)} schedules given; at most {self.limits.max_schedules_per_job} per job"
            )
        checked = []
        for i, schedule in enumerate(schedules):
            if schedule.end is not None and schedule.end >= NO_END_FLOOR:
                schedule = replace(schedule, end=None)  # .NET's DateTime.MaxValue: SanteDB's "no end"
            try:
                validate_schedule(schedule)
                self.schedule_source.check_writable(schedule, default_zone=self.default_zone)
            except ScheduleValueError as exc:
                raise InvalidArgument(f"schedules[{i}].{exc.field}", str(exc)) from exc
            except ScheduleWriteError as exc:
                raise InvalidArgument(f"schedules[{i}].{exc.field}", str(exc)) from exc
            check_size(schedule.parameters, self.limits, field=f"schedules[{i}].parameters")
            bind_parameters(job.parameters, schedule.parameters, field=f"schedules[{i}].parameters")
            _check_overlap(job, schedule, f"schedules[{i}].overlap_policy")
            checked.append(schedule)
        if validate_only:
            return checked
        await self._save(
            job, lambda current: JobSchedules(schedules=tuple(checked), paused=current.paused), replaces_all=True
        )
        return checked

    def preview(self, job_id: str, schedules: Sequence[Schedule], *, fire_time_count: int = 5) -> JobView:
        """The job as it would be with `schedules` (checked by set_schedules): their next fire times from now."""
        current = self.view(job_id, fire_time_count=0)
        now = self.clock.now()
        return replace(
            current,
            schedules=[
                (
                    s,
                    ScheduleRecord(job_id=job_id, schedule_key=""),
                    fire_times(s, now, fire_time_count, default_zone=self.default_zone),
                )
                for s in schedules
            ],
            disabled_schedules=(),
        )

    async def set_paused(self, job_id: str, paused: bool) -> None:
        job = self.registry.get(job_id)

        def change(current: JobSchedules) -> JobSchedules:
            self._check_writable(current.schedules)
            return JobSchedules(schedules=current.schedules, paused=paused)

        await self._save(job, change)

    def _check_writable(self, schedules: Sequence[Schedule]) -> None:
        """Schedules written again as they are (read from the file, or with parameters bound from its
        positional ones) pass the check SetSchedule's pass: a save checks only its output's structure."""
        for schedule in schedules:
            try:
                self.schedule_source.check_writable(schedule, default_zone=self.default_zone)
            except ScheduleWriteError as exc:
                raise InvalidArgument("schedules", f"cannot be written to xcron.xml: {exc}") from exc

    async def _save(
        self, job: type[Job], change: Callable[[JobSchedules], JobSchedules], *, replaces_all: bool = False
    ) -> None:
        """Writes xcron.xml first; memory and the scheduler change only once the file is saved.

        `change` builds the new value from the current one inside the lock, so concurrent
        SetSchedule and PauseSchedule calls cannot undo each other. When the file changed on disk
        since xcron last read or wrote it (a hand edit, a SanteDB save), it is reloaded first, so
        the edit wins for the entries it touched and this call for its own job; if the changed file
        is invalid, nothing is written (FAILED_PRECONDITION). `replaces_all`: the call sets every
        schedule of the job, including the ones xcron could not run (else those are kept)."""
        async with self._schedule_lock:
            for attempt in range(3):
                try:
                    await self._save_locked(job, change, replaces_all)
                    return
                except ScheduleSourceChanged as changed:
                    label = self.schedule_source.label
                    log.warning("%s changed on disk since it was last read; reloading it before writing", label)
                    try:
                        await self._reload_locked()
                    except ScheduleFileError as exc:
                        log.error("not saved: %s changed on disk and is invalid: %s", label, exc)
                        raise FailedPrecondition(
                            f"{label} was changed on disk and is not valid (line {exc.line}: {exc.reason}); "
                            "nothing was written: fix the file, then call ReloadSchedules",
                            reason="SCHEDULE_FILE_CHANGED_INVALID",
                        ) from changed
                    if attempt == 2:
                        raise FailedPrecondition(
                            f"{label} keeps changing on disk; nothing was written, try again",
                            reason="SCHEDULE_FILE_CHANGING",
                        ) from changed

    async def _save_locked(
        self, job: type[Job], change: Callable[[JobSchedules], JobSchedules], replaces_all: bool
    ) -> None:
        new = change(self._schedules.get(job.id, JobSchedules()))
        existing = self._document.find(job.effective_type_name())
        disabled = () if replaces_all or existing is None else existing.disabled
        if new == self._schedules.get(job.id, JobSchedules()) and (not replaces_all or not self._disabled.get(job.id)):
            return
        if not new.schedules and not new.paused and not disabled:
            # SanteDB's Clear removes the job's entry; so does xcron.
            document = self._document.remove(job.effective_type_name()) if existing else self._document
        else:
            entry = ScheduleEntry(
                type_name=existing.type_name if existing else job.effective_type_name(),
                start_type=existing.start_type if existing else "schedule",
                schedules=new.schedules,
                paused=new.paused,
                positional_parameters=_positional(job, new.schedules),
                disabled=disabled,
            )
            document = self._document.replace(entry)
        try:
            document = await self.schedule_source.save(document, default_zone=self.default_zone, known=self._known)
        except ValueError as exc:
            message = _without_path(exc) if isinstance(exc, ScheduleFileError) else str(exc)
            raise InvalidArgument("schedules", f"cannot be written to xcron.xml: {message}") from exc
        except OSError as exc:
            where = self.schedule_source.description
            log.error("could not save %s: %s", where, exc)  # the path goes to the log, never to clients
            raise StoreUnavailable(
                f"the schedule was not saved: cannot write {self.schedule_source.label}: "
                f"{exc.strerror or exc}; nothing was changed",
                reason="SCHEDULE_FILE_UNWRITABLE",
            ) from exc
        except StoreUnavailable as exc:
            raise StoreUnavailable(
                f"the schedule was not saved: {exc.message}; nothing was changed",
                reason="SCHEDULE_STORE_UNAVAILABLE",
            ) from exc
        self._document = document
        if replaces_all:
            self._disabled.pop(job.id, None)
        self._schedules[job.id] = new
        await self.scheduler.set_job_schedules(job.id, new)  # cannot fail: its own saves are best effort


def _without_path(exc: ScheduleFileError) -> str:
    """What a client may read of a schedule file error: line and reason, not the server's path."""
    return f"line {exc.line}: {exc.reason}" if exc.line is not None else exc.reason


def _check_overlap(job: type[Job], schedule: Schedule, field: str) -> None:
    if schedule.overlap_policy is OverlapPolicy.CANCEL_OTHER and not job.can_cancel:
        raise InvalidArgument(
            field, f"job {job.id!r} cannot be cancelled, so CANCEL_OTHER cannot apply; use SKIP or BUFFER_ONE"
        )


def _with_parameters(schedule: Schedule, parameters: Mapping[str, ParameterValue]) -> Schedule:
    return replace(schedule, parameters=dict(parameters))


def _positional(job: type[Job], schedules: Sequence[Schedule]) -> tuple[ParameterValue, ...]:
    """SanteDB's positional <parameters>: the first schedule's values in declaration order, as far
    as they are contiguous (SanteDB cannot skip a position)."""
    if not schedules:
        return ()
    values: list[ParameterValue] = []
    for spec in job.parameters:
        if spec.name not in schedules[0].parameters:
            break
        values.append(schedules[0].parameters[spec.name])
    return tuple(values)
