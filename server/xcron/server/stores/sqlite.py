"""SQLite state store (stdlib sqlite3, WAL). All SQL runs on one dedicated thread, off the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import UTC, datetime
from operator import itemgetter
from pathlib import Path
from typing import Any, TypeVar, cast

from xcron.server.core.errors import StoreUnavailable
from xcron.server.core.model import ExecutionState, JobState, ParameterValue, Trigger
from xcron.server.core.ports import (
    INTERRUPTED,
    ExecutionCursor,
    ExecutionRecord,
    JobRecord,
    ScheduleRecord,
)
from xcron.server.stores._codec import decode_parameters, encode_parameters, job_from_row

T = TypeVar("T")

COMMIT_WINDOW = 0.05
"""Seconds a bookkeeping write nobody awaits (made inside `deferred_writes()`: a scheduled run's rows, fire
times) may wait so that later ones share its transaction and commit: at 100 runs a second, one commit for
about five runs instead of one each. Any other call (a read, RunJob's start, an awaited write, purge)
takes everything held into its own batch at once, and close() commits what is held. A crash (not a stop)
can lose at most this much of that bookkeeping."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY, state TEXT NOT NULL, progress REAL NOT NULL, status_text TEXT NOT NULL,
    last_start TEXT, last_finish TEXT, execution_id TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS executions (
    id TEXT PRIMARY KEY, job_id TEXT NOT NULL, parameters TEXT NOT NULL, trigger TEXT NOT NULL,
    state TEXT NOT NULL, start_time TEXT NOT NULL, finish_time TEXT, error TEXT NOT NULL,
    progress REAL NOT NULL, status_text TEXT NOT NULL, scheduled_time TEXT, request_id TEXT NOT NULL,
    cancel_requested INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS executions_by_job ON executions (job_id, start_time DESC, id DESC);
CREATE INDEX IF NOT EXISTS executions_by_request ON executions (job_id, request_id) WHERE request_id != '';
CREATE TABLE IF NOT EXISTS schedules (
    job_id TEXT NOT NULL, schedule_key TEXT NOT NULL, last_fire TEXT, last_run TEXT,
    overlap_skipped INTEGER NOT NULL, misfire_skipped INTEGER NOT NULL,
    PRIMARY KEY (job_id, schedule_key)
);
"""


def _ts(value: datetime | None) -> str | None:
    # Fixed-width UTC text sorts in time order, so SQL can order and compare on it.
    if value is None:
        return None
    if value.tzinfo is UTC and value.year >= 1000:  # the usual case, without strftime: 1.8 us instead of 2.7
        return value.isoformat(timespec="microseconds")[:26] + "Z"
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _dt(text: str | None) -> datetime | None:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC) if text else None


def _execution(row: sqlite3.Row) -> ExecutionRecord:
    start = _dt(row["start_time"])
    assert start is not None
    return ExecutionRecord(
        id=row["id"],
        job_id=row["job_id"],
        parameters=decode_parameters(json.loads(row["parameters"])),
        trigger=Trigger(row["trigger"]),
        state=ExecutionState(row["state"]),
        start_time=start,
        finish_time=_dt(row["finish_time"]),
        error=row["error"],
        progress=row["progress"],
        status_text=row["status_text"],
        scheduled_time=_dt(row["scheduled_time"]),
        request_id=row["request_id"],
        cancel_requested=bool(row["cancel_requested"]),
    )


_WRITTEN: tuple[bool, None] = (True, None)


class _CallFailed(Exception):
    """A call of a batch run without savepoints failed; the batch was rolled back."""


def _settled(value: Any) -> Any:
    if isinstance(value, sqlite3.Cursor):
        # A write's cursor must die here, on the store thread: finalised later on the event loop, it
        # resets a cached statement this thread may be using at that moment (SQLite "bad parameter or
        # other API misuse" on a busy server).
        value.close()
        return None
    return value


def _parameters(values: Mapping[str, ParameterValue]) -> str:
    # Scheduled runs mostly have none: no JSON encoding for them.
    return json.dumps(encode_parameters(values)) if values else "{}"


Outcome = tuple[bool, Any]
Row = tuple[Any, ...]

MAX_MERGED_CALLS = 512
"""Most calls the store thread merges into one transaction from the batches waiting for it: past this, a
failing call would send too many others through savepoints one by one, and every read among them would wait
for a large commit."""

GATHER_DELAY = 0.004
"""Seconds the store thread waits (the GIL released) before a transaction, while calls from several turns of
the loop keep coming: when the previous transaction carried more than one turn's calls and ended less than
this long ago. The turns meanwhile join the transaction, as with PostgreSQL's commit_delay (which also waits
only while other transactions are active, commit_siblings). A lone caller, one call after another, never
waits; nor a call to a store idle that long. In bench.runs (50 RunJobs in flight, 2 cores), against no
wait: ~20 % more runs a second for ~20 % less server CPU per run (2 ms gave ~13 %, 8 ms no more than 4 ms);
a start's commit comes up to 4 ms later under such load."""

ROWS_PER_STATEMENT = 64
"""Most rows one INSERT carries (13 columns: 832 parameters, under SQLite's oldest limit of 999). A power
of two: a batch's rows are written in statements of 64, 32, … rows."""
assert ROWS_PER_STATEMENT & (ROWS_PER_STATEMENT - 1) == 0


class _Table:
    """A table written by whole rows, whose rows a batch may merge into few statements.

    `upsert`: a row that exists already is updated in place (every column but the key), where INSERT OR
    REPLACE deletes it and inserts it again: the same row in the end, for half the work when no index but
    the key's covers the table (jobs). Where indexes cover other columns (executions), updating them in
    place costs more than the replace.

    `indexed`: the columns other indexes cover. A row whose values in them are known to be the stored
    row's (_KnownRows) is updated in place, setting every other column: the same row a replace gives, but
    its indexes are not touched. A run's end row is such a write: with 50 jobs, rewriting its index entries
    (a leaf page of executions_by_job per job) made ~40 % of the pages each commit wrote to the WAL (5,000 runs
    over 50 jobs: 8.4 pwrite calls per run before, 4.9 after)."""

    __slots__ = ("_statements", "_updates", "indexed_values", "keys", "row", "single")

    def __init__(
        self,
        name: str,
        columns: Sequence[str],
        keys: int,
        row: Callable[[Any], Row],
        *,
        upsert: bool = False,
        indexed: Sequence[str] = (),
    ) -> None:
        """The primary key is the first `keys` of `columns`; `row(item)` is an item's values in their order."""
        self.row = row
        self.keys = keys
        values = "(" + ",".join("?" * len(columns)) + ")"
        key = ",".join(columns[:keys])

        def updating(kept: Sequence[str]) -> str:  # an existing row has every other column set
            update = ",".join(f"{c}=excluded.{c}" for c in columns if c not in kept)
            return f" ON CONFLICT({key}) DO UPDATE SET {update}"

        if upsert:
            head, tail = f"INSERT INTO {name} VALUES ", updating(columns[:keys])
        else:
            head, tail = f"INSERT OR REPLACE INTO {name} VALUES ", ""
        self.single = head + values + tail
        self._statements = _statements(head, values, tail)
        self._updates: dict[int, str] = {}
        self.indexed_values: Callable[[Row], Any] | None = None  # a row's values in `indexed`, comparable
        if indexed:
            self.indexed_values = itemgetter(*(columns.index(c) for c in indexed))
            self._updates = _statements(f"INSERT INTO {name} VALUES ", values, updating([*columns[:keys], *indexed]))

    def write(self, conn: sqlite3.Connection, rows: list[Row], known: _KnownRows) -> None:
        """Writes `rows` in their order (SQLite inserts a statement's rows one after another, so a key given
        twice ends as its later row), in statements of a power of two rows each: at most a few distinct
        statements, all in the connection's cache, and one step (one release of the GIL) per statement.
        With `indexed` columns, rows that can be updated in place are written after the others: they are
        rows of keys written once in `rows`, so the order between the two kinds does not matter."""
        indexed_values = self.indexed_values
        if indexed_values is None:
            _write_in(conn, self._statements, rows)
            return
        keys = self.keys
        counts: dict[object, int] = {}
        for row in rows:
            key = row[0] if keys == 1 else row[:keys]
            counts[key] = counts.get(key, 0) + 1
        replaced: list[Row] = []
        updated: list[Row] = []
        for row in rows:
            key = row[0] if keys == 1 else row[:keys]
            values = indexed_values(row)
            if counts[key] == 1 and known.get(self, key) == values:
                updated.append(row)
            else:
                replaced.append(row)
            known.note(self, key, values)
        _write_in(conn, self._statements, replaced)
        _write_in(conn, self._updates, updated)


def _statements(head: str, values: str, tail: str) -> dict[int, str]:
    return {2**i: head + ",".join([values] * 2**i) + tail for i in range(ROWS_PER_STATEMENT.bit_length())}


def _write_in(conn: sqlite3.Connection, statements: dict[int, str], rows: list[Row]) -> None:
    done, left = 0, len(rows)
    while left:
        size = min(ROWS_PER_STATEMENT, 1 << (left.bit_length() - 1))
        flat = [value for row in rows[done : done + size] for value in row]
        conn.execute(statements[size], flat).close()
        done += size
        left -= size


class _KnownRows:
    """What the store thread knows of rows in the database, for tables with `indexed` columns: a row's values
    in those columns, for rows this store wrote with merged row writes. Written rows are noted as pending
    and become known when their transaction commits; a rollback forgets them. Any other call that changes
    rows (purging history, aborting interrupted runs), and a batch written call by call after a failure,
    makes the store forget everything: what they wrote is not tracked. Used on the store thread only."""

    LIMIT = 4096
    """Rows remembered per table, the most recently written: a run's end finds its start's row here."""

    def __init__(self) -> None:
        self._committed: dict[_Table, OrderedDict[object, Any]] = {}
        self._pending: dict[tuple[_Table, object], Any] = {}

    def get(self, table: _Table, key: object) -> Any:
        values = self._pending.get((table, key))
        if values is not None:
            return values
        committed = self._committed.get(table)
        return committed.get(key) if committed is not None else None

    def note(self, table: _Table, key: object, values: Any) -> None:
        self._pending[(table, key)] = values

    def commit(self) -> None:
        for (table, key), values in self._pending.items():
            committed = self._committed.get(table)
            if committed is None:
                committed = self._committed[table] = OrderedDict()
            committed[key] = values
            committed.move_to_end(key)
            if len(committed) > self.LIMIT:
                committed.popitem(last=False)
        self._pending.clear()

    def rollback(self) -> None:
        self._pending.clear()

    def forget(self) -> None:
        self._committed.clear()
        self._pending.clear()


class _RowWrite:
    """A write of whole rows. Alone it is one statement; in a batch, the batch merges the rows of consecutive
    row writes per table, in call order, and writes them together: a few statements per batch instead of
    one per row (each a call into sqlite3 that gives up the GIL and takes it back from the event loop's
    thread). The tables have no triggers or foreign keys, so only the order within a table matters. Rows
    are not merged by key: a row that fails (NOT NULL) fails its write even when a later write replaces it,
    as it would row by row."""

    __slots__ = ("items", "table")

    def __init__(self, table: _Table, items: Sequence[Any]) -> None:
        self.table = table
        self.items = items

    def __call__(self, conn: sqlite3.Connection) -> None:
        table = self.table
        if len(self.items) == 1:
            conn.execute(table.single, table.row(self.items[0])).close()
        else:
            conn.executemany(table.single, [table.row(item) for item in self.items]).close()

    def merge_into(self, pending: dict[_Table, list[Row]]) -> None:
        table = self.table
        rows = pending.get(table)
        if rows is None:
            rows = pending[table] = []
        row_of = table.row
        rows.extend([row_of(item) for item in self.items])


def _write_pending(conn: sqlite3.Connection, pending: dict[_Table, list[Row]], known: _KnownRows) -> None:
    for table, rows in pending.items():
        table.write(conn, rows, known)
    pending.clear()


_CACHED_TEXTS = 4096
_instant_texts: dict[datetime, str] = {}
_parameter_texts: dict[int, tuple[Mapping[str, ParameterValue], str]] = {}


def _instant_text(value: datetime | None) -> str | None:
    """_ts, remembered: a run's start is written with its start, with its end, and in its job's row twice.
    UTC instants only (all the core makes): two times of another zone that differ only in `fold` are equal
    keys, an hour apart."""
    if value is None or value.tzinfo is not UTC:
        return _ts(value)
    text = _instant_texts.get(value)
    if text is None:
        if len(_instant_texts) >= _CACHED_TEXTS:
            _instant_texts.clear()
        text = _instant_texts[value] = _ts(value)  # type: ignore[assignment]  # not None: value is not
    return text


_CACHED_PARAMETERS_TEXT = 1024
"""Longest parameters text remembered: the cache holds at most _CACHED_TEXTS of them (4 MiB), however large
the parameters clients send."""


def _parameters_text(values: Mapping[str, ParameterValue]) -> str:
    """_parameters, remembered by identity (a run's start and end rows share its parameters): the mapping
    is held with its text, so its id cannot be reused while it is remembered. The core never changes a
    run's parameters once bound."""
    if not values:
        return "{}"
    held = _parameter_texts.get(id(values))
    if held is not None and held[0] is values:
        return held[1]
    text = _parameters(values)
    if len(text) <= _CACHED_PARAMETERS_TEXT:
        if len(_parameter_texts) >= _CACHED_TEXTS:
            _parameter_texts.clear()
        _parameter_texts[id(values)] = (values, text)
    return text


def _job_row(record: JobRecord) -> Row:
    return (
        record.job_id,
        record.state.value,
        record.progress,
        record.status_text,
        _instant_text(record.last_start),
        _instant_text(record.last_finish),
        record.execution_id,
    )


def _execution_row(record: ExecutionRecord) -> Row:
    return (
        record.id,
        record.job_id,
        _parameters_text(record.parameters),
        record.trigger.value,
        record.state.value,
        _instant_text(record.start_time),
        _instant_text(record.finish_time),
        record.error,
        record.progress,
        record.status_text,
        _instant_text(record.scheduled_time),
        record.request_id,
        int(record.cancel_requested),
    )


def _schedule_row(record: ScheduleRecord) -> Row:
    return (
        record.job_id,
        record.schedule_key,
        _ts(record.last_fire),
        _ts(record.last_run),
        record.overlap_skipped,
        record.misfire_skipped,
    )


_JOB_COLUMNS = ("job_id", "state", "progress", "status_text", "last_start", "last_finish", "execution_id")
_JOBS = _Table("jobs", _JOB_COLUMNS, 1, _job_row, upsert=True)
_EXECUTIONS = _Table(
    "executions",
    (
        "id",
        "job_id",
        "parameters",
        "trigger",
        "state",
        "start_time",
        "finish_time",
        "error",
        "progress",
        "status_text",
        "scheduled_time",
        "request_id",
        "cancel_requested",
    ),
    1,
    _execution_row,
    indexed=("job_id", "start_time", "request_id"),  # executions_by_job, executions_by_request
)
_SCHEDULES = _Table(
    "schedules",
    ("job_id", "schedule_key", "last_fire", "last_run", "overlap_skipped", "misfire_skipped"),
    2,
    _schedule_row,
)


class _Deferring:
    """The context manager `deferred_writes()` returns (one per store: no generator per use)."""

    __slots__ = ("_store",)

    def __init__(self, store: SqliteStateStore) -> None:
        self._store = store

    def __enter__(self) -> None:
        self._store._deferring += 1

    def __exit__(self, *exc: object) -> None:
        self._store._deferring -= 1


class _Batch:
    """The calls of one turn of the loop (with the held writes that went along), posted to the store thread.
    The thread runs every batch that is waiting when it gets to them in one transaction."""

    __slots__ = ("fns", "futures", "loop")

    def __init__(
        self,
        fns: list[Callable[[sqlite3.Connection], Any]],
        futures: list[asyncio.Future[Any]],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.fns = fns
        self.futures = futures
        self.loop = loop


_NO_JOB = object()


class SqliteStateStore:
    """Group commit: the calls made in one turn of the event loop go to the store thread together, and the
    thread runs all the turns' calls waiting for it in one transaction (each in a savepoint of its own if
    one fails, so it fails alone). Under load a thousand runs a second cost a few dozen fsyncs, not
    thousands. Writes nobody awaits may also wait up to `commit_window` seconds for company (see
    COMMIT_WINDOW); every other call goes at the end of its turn and takes them along."""

    def __init__(
        self,
        path: Path,
        *,
        commit_window: float = COMMIT_WINDOW,
        gather_delay: float = GATHER_DELAY,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """`clock` and `sleep`: the store thread's, for GATHER_DELAY (tests replace them)."""
        self.path = path
        self.commit_window = commit_window  # seconds; 0: every batch goes at once (tests lengthen it)
        self.gather_delay = gather_delay  # seconds; 0: a transaction never waits for company
        self._clock = clock
        self._sleep = sleep
        self._last_end = float("-inf")  # the store thread's: when its last transaction ended (before settling)
        self._several_turns = False  # the store thread's: whether that transaction merged several turns' calls
        self._deferring = 0  # > 0 inside deferred_writes(): calls made now may wait for the window
        self._sending = False  # a call that may not wait was made: what is queued goes at the end of this turn
        self._timer: asyncio.TimerHandle | None = None  # ends the window of the calls held now
        self._deferred_writes = _Deferring(self)
        # The store's own thread, fed through a SimpleQueue: a ThreadPoolExecutor's submit cost a Future,
        # a Condition and a work item per batch, and the thread as much again to settle them.
        self._jobs: queue.SimpleQueue[_Batch | Callable[[], None] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self._closed = False  # once closed, the worker thread is gone: calls must fail as "unavailable"
        self._queue: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]] = []
        self._in_flight = 0  # batches posted to the store thread and not settled yet
        self._idle: asyncio.Event | None = None  # set while none is in flight
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop calls come from
        self._known = _KnownRows()  # the store thread's: rows it may update in place

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._enqueue(fn)

    def _write(self, fn: Callable[[sqlite3.Connection], object]) -> asyncio.Future[None]:
        """A write queued now; its cursor is closed on the store thread, so its result is None."""
        return cast("asyncio.Future[None]", self._enqueue(fn))

    def deferred_writes(self) -> AbstractContextManager[None]:
        """Writes made inside are bookkeeping nobody awaits before answering anyone: they may be held for
        up to the commit window. Reads, and writes made outside, still see and keep the store's order."""
        return self._deferred_writes

    def _enqueue(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Queues a call now (not when first awaited) and returns its future: writes made one after another
        are in the store's order at once, and cost the caller no task to get there."""
        loop = self._loop  # kept: asyncio.get_running_loop() is a getpid() system call each time
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.get_running_loop()
            # What the closed loop was to do, it never will; its batches still run, in order, but settle nothing.
            self._sending, self._timer, self._in_flight, self._idle = False, None, 0, None
        future: asyncio.Future[T] = loop.create_future()
        if self._closed:
            future.set_exception(StoreUnavailable("the state store is closed"))
            return future
        self._queue.append((fn, future))
        if not self._deferring or self.commit_window <= 0:
            if not self._sending:  # the calls made in this turn go in one batch (a scheduled run that ends
                self._sending = True  # at once: its schedule's fire time and its rows), after it
                loop.call_soon(self._send, loop)
        elif self._timer is None and not self._sending:
            self._timer = loop.call_later(self.commit_window, self._send, loop)
        return future

    def flush(self) -> None:
        """Sends what is held to the store thread now (shutdown: nothing waits out the window)."""
        if self._queue:
            self._send(asyncio.get_running_loop())

    def _send(self, loop: asyncio.AbstractEventLoop) -> None:
        """Posts what is queued (held calls too) as one batch. It does not wait for the batches before it to
        settle: the store thread takes whatever has come meanwhile as soon as it is done with them."""
        self._sending = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._queue:
            return
        queued, self._queue = self._queue, []
        self._in_flight += 1
        if self._idle is None:
            self._idle = asyncio.Event()
        self._idle.clear()
        self._post(_Batch([fn for fn, _ in queued], [future for _, future in queued], loop))

    def _settle(self, done: list[tuple[_Batch, list[Outcome]]]) -> None:
        """On the loop: hands a transaction's outcomes to the callers, batch by batch in their order."""
        for batch, outcomes in done:
            for future, (ok, value) in zip(batch.futures, outcomes, strict=True):
                if future.done():
                    continue
                try:
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)
                except RuntimeError:  # made on a loop closed since (its call went with a later batch)
                    continue
        self._in_flight -= len(done)
        if not self._in_flight and self._idle is not None:
            self._idle.set()

    def _post(self, job: _Batch | Callable[[], None]) -> None:
        """Runs `job` on the store thread (started on first use), after the jobs posted before it."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="xcron-sqlite", daemon=True)
            self._thread.start()
        self._jobs.put(job)

    def _serve(self) -> None:
        """The store thread: batches waiting one after another run in one transaction, other jobs alone."""
        jobs = self._jobs
        job: Any = jobs.get()
        while job is not None:
            if type(job) is not _Batch:
                job()
                job = jobs.get()
                continue
            gather = self.gather_delay
            if self._several_turns and self._clock() - self._last_end < gather:
                self._sleep(gather)  # calls from several turns keep coming: let more of them join this one
            batches = [job]
            calls = len(job.fns)
            job = _NO_JOB
            while calls < MAX_MERGED_CALLS:
                try:
                    waiting = jobs.get_nowait()
                except queue.Empty:
                    break
                if type(waiting) is not _Batch:
                    job = waiting  # runs after these batches, in order
                    break
                batches.append(waiting)
                calls += len(waiting.fns)
            self._run_batches(batches)
            # A transaction that reached the cap left calls waiting: the next one has company without a wait.
            self._several_turns = len(batches) > 1 and calls < MAX_MERGED_CALLS
            if job is _NO_JOB:
                job = jobs.get()

    async def _on_thread(self, fn: Callable[[], None]) -> None:
        """Runs `fn` on the store thread and waits for it (opening and closing the connection)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def settle(error: BaseException | None) -> None:
            if done.done():
                return
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)

        def job() -> None:
            error: BaseException | None = None
            try:
                fn()
            except BaseException as exc:  # handed to the caller on the loop
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                loop.call_soon_threadsafe(settle, error)

        self._post(job)
        await done

    def _run_batches(self, batches: list[_Batch]) -> None:
        """On the store thread: runs the batches' calls in one transaction and hands the outcomes back to the
        loop in one callback."""
        fns = batches[0].fns if len(batches) == 1 else [fn for batch in batches for fn in batch.fns]
        try:
            outcomes = self._run_batch(fns)
        except BaseException as exc:  # whatever happens, the callers' futures must settle
            outcomes = [(False, StoreUnavailable(f"state store: {exc}"))] * len(fns)
        self._last_end = self._clock()  # before the loop learns of it (and may make the next call)
        done: dict[asyncio.AbstractEventLoop, list[tuple[_Batch, list[Outcome]]]] = {}
        start = 0
        for batch in batches:
            end = start + len(batch.fns)
            done.setdefault(batch.loop, []).append((batch, outcomes[start:end]))
            start = end
        for loop, settled in done.items():  # one loop, but for a store used again after its loop closed
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                loop.call_soon_threadsafe(self._settle, settled)

    def _run_batch(self, fns: list[Callable[[sqlite3.Connection], Any]]) -> list[Outcome]:
        conn = self._conn
        if conn is None:
            return [(False, StoreUnavailable("the state store is closed"))] * len(fns)
        known = self._known
        try:
            return self._run_plain(conn, fns, known)
        except _CallFailed:
            pass  # rolled back: run them again, each in a savepoint, so that the failing call fails alone
        except sqlite3.DatabaseError as exc:  # locked, disk full, corrupt file …: the whole batch failed
            with contextlib.suppress(sqlite3.DatabaseError):
                conn.execute("ROLLBACK")
            known.rollback()
            return [(False, StoreUnavailable(f"state store: {exc}"))] * len(fns)
        known.forget()  # rows written call by call are not tracked
        return self._run_isolated(conn, fns)

    @staticmethod
    def _run_plain(
        conn: sqlite3.Connection, fns: list[Callable[[sqlite3.Connection], Any]], known: _KnownRows
    ) -> list[Outcome]:
        """The usual case, every call succeeds: one transaction and no savepoints (two statements less per call,
        a tenth of the store thread's time). A failing call rolls it all back and raises _CallFailed."""
        outcomes: list[Outcome] = []
        pending: dict[_Table, list[Row]] = {}  # rows of the row writes since the last other call
        conn.execute("BEGIN")
        try:
            for fn in fns:
                if type(fn) is _RowWrite:
                    fn.merge_into(pending)
                    outcomes.append(_WRITTEN)
                    continue
                if pending:  # written before any other call, which may read them
                    _write_pending(conn, pending, known)
                changes = conn.total_changes
                outcomes.append((True, _settled(fn(conn))))
                if conn.total_changes != changes:  # it wrote rows itself: what was known may be stale
                    known.forget()
            if pending:
                _write_pending(conn, pending, known)
        except Exception as exc:
            known.rollback()
            with contextlib.suppress(sqlite3.DatabaseError):
                conn.execute("ROLLBACK")
            raise _CallFailed from exc
        conn.execute("COMMIT")  # if it fails, _run_batch rolls back (and forgets what was noted)
        known.commit()
        return outcomes

    @staticmethod
    def _run_isolated(conn: sqlite3.Connection, fns: list[Callable[[sqlite3.Connection], Any]]) -> list[Outcome]:
        """Each call in a savepoint of its own: one failing call fails alone. Its row writes replace whole rows
        (_RowWrite.__call__), as they are not tracked in _KnownRows."""
        outcomes: list[Outcome] = []
        try:
            conn.execute("BEGIN")
            for fn in fns:
                conn.execute("SAVEPOINT call")
                try:
                    outcomes.append((True, _settled(fn(conn))))
                    conn.execute("RELEASE call")
                except Exception as exc:
                    conn.execute("ROLLBACK TO call")
                    conn.execute("RELEASE call")
                    if isinstance(exc, sqlite3.DatabaseError):
                        exc = StoreUnavailable(f"state store: {exc}")
                    outcomes.append((False, exc))
            conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:  # locked, disk full, corrupt file …: the whole batch failed
            with contextlib.suppress(sqlite3.DatabaseError):
                conn.execute("ROLLBACK")
            return [(False, StoreUnavailable(f"state store: {exc}"))] * len(fns)
        return outcomes

    async def open(self) -> None:
        def connect() -> None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
                conn.row_factory = sqlite3.Row
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA busy_timeout=5000")
                conn.executescript(SCHEMA)
            except (sqlite3.DatabaseError, OSError) as exc:
                raise StoreUnavailable(f"cannot open the state store {self.path}: {exc}") from exc
            self._conn = conn  # autocommit mode: _run_batch opens and commits each transaction itself

        await self._on_thread(connect)

    async def close(self) -> None:
        """Calls made before (held ones too) run to completion; calls made after fail at once (StoreUnavailable)."""
        if self._closed:
            return
        self._closed = True
        self.flush()  # held writes go now
        while self._in_flight and self._idle is not None:
            await self._idle.wait()  # let the calls already made finish

        def disconnect() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await self._on_thread(disconnect)
        if self._thread is not None:
            self._jobs.put(None)  # the thread ends after the jobs before it
            self._thread.join()

    async def load_jobs(self) -> dict[str, JobRecord]:
        def q(c: sqlite3.Connection) -> dict[str, JobRecord]:
            return {r["job_id"]: job_from_row(r, _dt) for r in c.execute("SELECT * FROM jobs")}

        return await self._call(q)

    def save_job(self, record: JobRecord) -> Awaitable[None]:
        return self._write(_RowWrite(_JOBS, (record,)))

    def save_execution(self, record: ExecutionRecord) -> Awaitable[None]:
        return self._write(_RowWrite(_EXECUTIONS, (record,)))

    async def get_execution(self, execution_id: str) -> ExecutionRecord | None:
        def q(c: sqlite3.Connection) -> ExecutionRecord | None:
            row = c.execute("SELECT * FROM executions WHERE id = ?", (execution_id,)).fetchone()
            return _execution(row) if row else None

        return await self._call(q)

    async def find_by_request_id(self, job_id: str, request_id: str) -> ExecutionRecord | None:
        if not request_id:
            return None  # "no request id" is not a key: it would match every run started without one

        def q(c: sqlite3.Connection) -> ExecutionRecord | None:
            row = c.execute(
                "SELECT * FROM executions WHERE job_id = ? AND request_id = ? ORDER BY start_time LIMIT 1",
                (job_id, request_id),
            ).fetchone()
            return _execution(row) if row else None

        return await self._call(q)

    async def list_executions(
        self, job_id: str, *, limit: int, before: ExecutionCursor | None = None
    ) -> list[ExecutionRecord]:
        def q(c: sqlite3.Connection) -> list[ExecutionRecord]:
            sql = "SELECT * FROM executions WHERE job_id = ?"
            args: list[Any] = [job_id]
            if before is not None:
                sql += " AND (start_time < ? OR (start_time = ? AND id < ?))"
                ts = _ts(before.start_time)
                args += [ts, ts, before.execution_id]
            sql += " ORDER BY start_time DESC, id DESC LIMIT ?"
            args.append(limit)
            return [_execution(r) for r in c.execute(sql, args)]

        return await self._call(q)

    async def abort_interrupted(self, now: datetime) -> list[ExecutionRecord]:
        def q(c: sqlite3.Connection) -> list[ExecutionRecord]:
            rows = c.execute("SELECT * FROM executions WHERE state = ?", (ExecutionState.RUNNING.value,)).fetchall()
            c.execute(
                "UPDATE executions SET state = ?, finish_time = ?, error = ?, status_text = ? WHERE state = ?",
                (
                    ExecutionState.ABORTED.value,
                    _ts(now),
                    INTERRUPTED,
                    INTERRUPTED,
                    ExecutionState.RUNNING.value,
                ),
            )
            c.execute(
                "UPDATE jobs SET state = ?, last_finish = ?, status_text = ? WHERE state = ?",
                (JobState.ABORTED.value, _ts(now), INTERRUPTED, JobState.RUNNING.value),
            )
            # The records as they now are (ABORTED), not as they were read.
            return [
                replace(
                    _execution(r),
                    state=ExecutionState.ABORTED,
                    finish_time=_dt(_ts(now)),
                    error=INTERRUPTED,
                    status_text=INTERRUPTED,
                )
                for r in rows
            ]

        return await self._call(q)

    async def purge_executions(self, *, older_than: datetime | None, keep_last: int | None) -> int:
        def q(c: sqlite3.Connection) -> int:
            deleted = 0
            finished = "state != 'running'"
            if older_than is not None:
                deleted += c.execute(
                    f"DELETE FROM executions WHERE {finished} AND start_time < ?", (_ts(older_than),)
                ).rowcount
            if keep_last is not None:
                deleted += c.execute(
                    f"""DELETE FROM executions WHERE {finished} AND id IN (
                          SELECT id FROM (SELECT id, ROW_NUMBER() OVER (
                              PARTITION BY job_id ORDER BY start_time DESC, id DESC) AS n FROM executions)
                          WHERE n > ?)""",
                    (keep_last,),
                ).rowcount
            return deleted

        return await self._call(q)

    async def load_schedule_records(self) -> dict[tuple[str, str], ScheduleRecord]:
        def q(c: sqlite3.Connection) -> dict[tuple[str, str], ScheduleRecord]:
            return {
                (r["job_id"], r["schedule_key"]): ScheduleRecord(
                    job_id=r["job_id"],
                    schedule_key=r["schedule_key"],
                    last_fire=_dt(r["last_fire"]),
                    last_run=_dt(r["last_run"]),
                    overlap_skipped=r["overlap_skipped"],
                    misfire_skipped=r["misfire_skipped"],
                )
                for r in c.execute("SELECT * FROM schedules")
            }

        return await self._call(q)

    async def delete_schedule_records(self, job_id: str, schedule_keys: Sequence[str]) -> None:
        await self._call(
            lambda c: c.executemany(
                "DELETE FROM schedules WHERE job_id = ? AND schedule_key = ?", [(job_id, k) for k in schedule_keys]
            )
        )

    def save_schedule_records(self, records: Sequence[ScheduleRecord]) -> Awaitable[None]:
        return self._write(_RowWrite(_SCHEDULES, tuple(records)))
