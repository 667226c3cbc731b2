"""Core's ports: what core needs from the outside, declared here and implemented by xcron.server.stores.

Core never imports a store (tests/test_architecture.py checks it). One module, as APScheduler 4 keeps its
abstract classes in one place:

- the records the server keeps (`JobRecord`, the one type of a job's status; `ExecutionRecord`;
  `ScheduleRecord`; `ExecutionCursor`) and `StateStore`, where they live (SQLite, PostgreSQL);
- the schedule document (`ScheduleDocument` of `ScheduleEntry`, SanteDB's xcron.xml model) and
  `ScheduleSource`, where it lives (a file, a PostgreSQL row), with their errors.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from xcron.server.core.model import ExecutionState, JobState, ParameterValue, Schedule, Trigger

NO_END_FLOOR = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
"""From here on an end time is .NET's DateTime.MaxValue: SanteDB's "no end"."""

INTERRUPTED = "interrupted: server stopped"

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class JobRecord:
    job_id: str
    state: JobState = JobState.NOT_YET_RUN
    progress: float = 0.0
    status_text: str = ""
    last_start: datetime | None = None
    last_finish: datetime | None = None
    execution_id: str = ""


@dataclass(frozen=True, kw_only=True)
class ExecutionRecord:
    id: str
    job_id: str
    parameters: Mapping[str, ParameterValue]
    trigger: Trigger
    state: ExecutionState
    start_time: datetime
    finish_time: datetime | None = None
    error: str = ""
    progress: float = 0.0
    status_text: str = ""
    scheduled_time: datetime | None = None
    request_id: str = ""
    cancel_requested: bool = False


@dataclass(frozen=True, kw_only=True)
class ScheduleRecord:
    """What the scheduler must remember about one schedule across restarts."""

    job_id: str
    schedule_key: str
    last_fire: datetime | None = None
    """Occurrences up to here are handled (run, buffered or skipped); a new schedule starts at 'now'."""
    last_run: datetime | None = None
    """The last occurrence that led to a run (what GetJob shows as last_fire_time)."""
    overlap_skipped: int = 0
    misfire_skipped: int = 0
    not_started: int = 0
    """Due, free to run, and not started (the --max-running limit, bad parameters, a failed claim): counted
    since this process started; not stored (the xcron_occurrences_not_started metric keeps the history)."""


@dataclass(frozen=True)
class ExecutionCursor:
    """Position in a job's history (newest first): strictly older than this start time and id."""

    start_time: datetime
    execution_id: str


class StateStore(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...

    async def load_jobs(self) -> dict[str, JobRecord]: ...
    # Writes may be queued when called (SQLite: a future, so calls made together share a transaction and need
    # no task) or when first awaited (a coroutine): callers await each write they make.
    def save_job(self, record: JobRecord) -> Awaitable[None]: ...

    def save_execution(self, record: ExecutionRecord) -> Awaitable[None]:
        """Inserts or replaces by id."""
        ...

    async def get_execution(self, execution_id: str) -> ExecutionRecord | None: ...
    async def find_by_request_id(self, job_id: str, request_id: str) -> ExecutionRecord | None:
        """The first execution started with this request id; None for an empty request id."""
        ...

    async def list_executions(
        self, job_id: str, *, limit: int, before: ExecutionCursor | None = None
    ) -> list[ExecutionRecord]: ...

    async def abort_interrupted(self, now: datetime) -> list[ExecutionRecord]:
        """Marks every RUNNING execution and job ABORTED (the process that ran them is gone); returns those
        executions as now stored. A clustered store only touches runs whose replica is gone."""
        ...

    async def purge_executions(self, *, older_than: datetime | None, keep_last: int | None) -> int:
        """Deletes finished executions older than a time and/or beyond the newest N per job."""
        ...

    async def load_schedule_records(self) -> dict[tuple[str, str], ScheduleRecord]: ...
    def save_schedule_records(self, records: Sequence[ScheduleRecord]) -> Awaitable[None]: ...
    def deferred_writes(self) -> AbstractContextManager[None]:
        """Writes made inside (synchronously: never await inside) are bookkeeping nobody awaits before
        answering anyone (a scheduled run's rows, fire times). The store may hold them a few dozen
        milliseconds so that several share a commit (SQLite: COMMIT_WINDOW); any other call, and close(),
        commits them first. A crash may lose that much bookkeeping, never an awaited write."""
        ...

    def flush(self) -> None:
        """Commits what deferred_writes() holds now, without waiting for it (shutdown does not wait out
        the window)."""
        ...

    async def delete_schedule_records(self, job_id: str, schedule_keys: Sequence[str]) -> None:
        """Forgets removed schedules, so one put back later starts afresh."""
        ...


def queued(write: Awaitable[T]) -> asyncio.Future[T]:
    """A store write as a future, without a task when the store's write already is one (SQLite's: queued
    when called, so writes made together share a transaction)."""
    return write if isinstance(write, asyncio.Future) else asyncio.ensure_future(write)


class RunFenced(Exception):
    """The end of a run could not be recorded because the store holds another outcome for it: another
    replica recorded it ABORTED after this one lost its lease. `stored` is what the store has; it wins."""

    def __init__(self, stored: ExecutionRecord) -> None:
        super().__init__(f"execution {stored.id} is {stored.state.value} in the store: {stored.error}")
        self.stored = stored


# -- the schedule document ----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class DisabledSchedule:
    """A schedule SanteDB accepts but xcron cannot honour (e.g. interval="0"): not run, kept as written."""

    line: int | None = field(compare=False)  # where it was read; a rewrite may move it
    reason: str
    element: bytes = field(compare=False, repr=False, default=b"")


@dataclass(frozen=True, kw_only=True)
class ScheduleEntry:
    """One JobItemConfiguration. `element` is the entry as read (None for new entries).

    `element` holds the serialized element without the xsi/xsd/xc declarations the root supplies;
    it takes no part in equality, so a document read back equals the one written.
    """

    type_name: str
    start_type: str
    schedules: tuple[Schedule, ...]
    paused: bool = False
    positional_parameters: tuple[ParameterValue, ...] = ()
    disabled: tuple[DisabledSchedule, ...] = ()
    element: bytes | None = field(default=None, compare=False, repr=False)
    span: tuple[int, int] | None = field(default=None, compare=False, repr=False)
    """Where the entry's text lies in the document's original bytes (kept by ScheduleDocument.replace)."""
    line: int | None = field(default=None, compare=False, repr=False)
    santedb_view: tuple[Any, ...] | None = field(default=None, compare=False, repr=False)
    """What SanteDB's classes hold of the entry: equal views survive a SanteDB re-save unchanged."""
    xcron_parts: bool = field(default=False, compare=False, repr=False)
    """Whether the entry has anything in xcron's namespace (what a SanteDB re-save drops)."""
    unreadable: str | None = field(default=None, compare=False, repr=False)
    """For an entry of a job this server does not run: why xcron could not read it (kept as written)."""
    element_trusted: bool = field(default=False, init=False, compare=False, repr=False)
    """Set by the reader only. dataclasses.replace() resets it, so an edited copy is checked again."""
    element_zone: str | None = field(default=None, init=False, compare=False, repr=False)
    """The default zone the reader read `element` with (set by the reader only, reset like element_trusted)."""


def class_path(type_name: str) -> str:
    """The part of a .NET type name before the assembly, without whitespace."""
    return "".join(type_name.split(",", 1)[0].split())


@dataclass(frozen=True)
class ScheduleDocument:
    entries: tuple[ScheduleEntry, ...]
    original: bytes | None = field(default=None, compare=False, repr=False)
    """The bytes the document was read from; saving splices changed entries into them."""
    layout: Any = field(default=None, compare=False, repr=False)
    """The reader's notes on how `original` is laid out (opaque outside the store that read it)."""

    def find(self, type_name: str) -> ScheduleEntry | None:
        """The entry for a type, ignoring the assembly part ("A.B, X" matches "A.B, Y" and "A.B")."""
        wanted = class_path(type_name)
        return next((e for e in self.entries if class_path(e.type_name) == wanted), None)

    def replace(self, entry: ScheduleEntry) -> ScheduleDocument:
        """A copy with `entry` in place of the entry find() matches (same position), else appended.

        A replaced entry is written from its fields: the original element it may carry is dropped
        (that is what makes rendering cheap: every entry still holding its element is unchanged).
        """
        if entry.element is not None:
            entry = dataclasses.replace(entry, element=None)
        wanted = class_path(entry.type_name)
        for index, existing in enumerate(self.entries):
            if class_path(existing.type_name) == wanted:
                entry = dataclasses.replace(entry, span=existing.span, line=existing.line)
                return self._with((*self.entries[:index], entry, *self.entries[index + 1 :]))
        return self._with((*self.entries, dataclasses.replace(entry, span=None)))

    def remove(self, type_name: str) -> ScheduleDocument:
        """A copy without the entry find() matches (SanteDB's Clear removes the whole entry)."""
        wanted = class_path(type_name)
        return self._with(tuple(e for e in self.entries if class_path(e.type_name) != wanted))

    def _with(self, entries: tuple[ScheduleEntry, ...]) -> ScheduleDocument:
        return ScheduleDocument(entries, self.original, self.layout)


class ScheduleWriteError(ValueError):
    """A schedule that cannot be written so that it reads back the same; `field` names the Schedule field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class ScheduleFileError(ValueError):
    """xcron.xml cannot be used as it is; str() is "path:line: reason" for the operator."""

    def __init__(self, path: str, line: int | None, reason: str) -> None:
        self.path = path
        self.line = line
        self.reason = reason
        super().__init__(f"{path}:{line}: {reason}" if line is not None else f"{path}: {reason}")


Known = Callable[[str], bool]
"""Whether a job type name is one this server runs."""


class ScheduleSourceChanged(Exception):
    """The document changed since this process last read or wrote it: reload before writing."""


class ScheduleSource(Protocol):
    description: str
    label: str
    """How API answers name the document ("xcron.xml"): never a server path."""

    async def load(self, *, default_zone: str, known: Known | None = None) -> ScheduleDocument:
        """The document; ScheduleFileError when it is invalid (nothing partial is ever returned).
        Entries of jobs known() rejects never make it invalid."""
        ...

    async def save(self, document: ScheduleDocument, *, default_zone: str, known: Known) -> ScheduleDocument:
        """Replaces the document atomically, or raises and changes nothing; returns it as now stored.
        ScheduleSourceChanged when it was changed by someone else since the last load or save."""
        ...

    def check_writable(self, schedule: Schedule, *, default_zone: str) -> None:
        """ScheduleWriteError (naming the field) when `schedule` cannot be stored so that it reads back the same."""
        ...
