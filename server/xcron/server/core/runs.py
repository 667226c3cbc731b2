"""What the executor builds for each run, kept apart from how it runs them: the run's records at its start
and end, its context, its id, and the cluster hooks the executor calls. Built directly (no
`dataclasses.replace`, no uuid4 system call per run): the scheduler starts up to a thousand runs a second."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from xcron.server.core.jobs import JobContext
from xcron.server.core.model import ExecutionState, JobState, ParameterValue, Trigger
from xcron.server.core.ports import ExecutionRecord, JobRecord

FinishListener = Callable[[ExecutionRecord], None]

JOB_STATE = {
    ExecutionState.RUNNING: JobState.RUNNING,
    ExecutionState.COMPLETED: JobState.COMPLETED,
    ExecutionState.ABORTED: JobState.ABORTED,
    ExecutionState.CANCELLED: JobState.CANCELLED,
}


class ClusterHooks(Protocol):
    # try_start_run writes the RUNNING execution and points the job row at it, in one transaction.
    async def try_start_run(self, record: ExecutionRecord) -> ExecutionRecord | None: ...
    async def cancel_remote(self, job_id: str, execution_id: str) -> ExecutionRecord | None: ...
    async def claim(self, job_id: str, schedule_key: str, due: datetime, *, run: bool = True) -> bool: ...
    async def settle_run(self, record: ExecutionRecord, job: JobRecord) -> tuple[ExecutionRecord, JobRecord]: ...


def log_ids(record: ExecutionRecord) -> dict[str, str]:
    """The `extra` of every log line about a run."""
    return {"job_id": record.job_id, "execution_id": record.id}


class ExecutionIds:
    """Time-ordered (version 7, RFC 9562) UUIDs as text: 48 bits of Unix milliseconds, then 74 random bits
    drawn from os.urandom 4 KiB at a time (one system call per 409 ids; uuid.uuid4 makes one per id).

    Time order keeps a store's index on the id appending at its end, as PostgreSQL's and SQLite's B-trees
    like best: random ids dirty a page of the index per row written (a third of SQLite's work per run)."""

    _RANDOM_MASK = (1 << 74) - 1
    _VERSION_BITS = 0x7 << 76 | 0x2 << 62  # version 7 after the timestamp, RFC 4122 variant

    def __init__(self, now_ns: Callable[[], int] = time.time_ns) -> None:
        self._now_ns = now_ns
        self._pool = b""
        self._at = 0

    def new(self) -> str:
        at = self._at
        if at + 10 > len(self._pool):
            self._pool, at = os.urandom(4090), 0
        self._at = at + 10
        random = int.from_bytes(self._pool[at : at + 10]) & self._RANDOM_MASK
        # rand_a (12 bits) above the variant, rand_b (62 bits) below it
        value = (
            (self._now_ns() // 1_000_000 & 0xFFFF_FFFF_FFFF) << 80
            | self._VERSION_BITS
            | (random >> 62) << 64
            | random & 0x3FFF_FFFF_FFFF_FFFF
        )
        h = value.to_bytes(16).hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass
class StartWrites:
    """Which rows of a start may be in the store: the execution's, the job's."""

    execution: bool = False
    job: bool = False

    def note(self, outcomes: Sequence[object]) -> None:
        self.execution = not isinstance(outcomes[0], BaseException)
        self.job = not isinstance(outcomes[1], BaseException)


@dataclass
class Running:
    record: ExecutionRecord
    context: JobContext
    task: asyncio.Task[None] | None = None


def new_run(
    execution_id: str,
    job_id: str,
    parameters: Mapping[str, ParameterValue],
    trigger: Trigger,
    request_id: str,
    scheduled_time: datetime | None,
    now: datetime,
    on_progress: Callable[[float, str | None], None],
    services: Mapping[str, Any],
    loop: asyncio.AbstractEventLoop,
) -> Running:
    record = ExecutionRecord(
        id=execution_id,
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
        execution_id=execution_id,
        parameters=parameters,
        trigger=trigger,
        scheduled_time=scheduled_time,
        on_progress=on_progress,
        services=services,
    )
    context.bind_loop(loop)
    return Running(record=record, context=context)


def started_at(record: ExecutionRecord, now: datetime) -> ExecutionRecord:
    """`record` with its start time stamped `now` (built directly, as `ended` does)."""
    return ExecutionRecord(
        id=record.id,
        job_id=record.job_id,
        parameters=record.parameters,
        trigger=record.trigger,
        state=record.state,
        start_time=now,
        finish_time=record.finish_time,
        error=record.error,
        progress=record.progress,
        status_text=record.status_text,
        scheduled_time=record.scheduled_time,
        request_id=record.request_id,
        cancel_requested=record.cancel_requested,
    )


def running_job(record: ExecutionRecord, before: JobRecord) -> JobRecord:
    """The job's row while `record` runs."""
    return JobRecord(
        job_id=record.job_id,
        state=JobState.RUNNING,
        progress=record.progress,
        status_text=record.status_text,
        last_start=record.start_time,
        last_finish=before.last_finish,
        execution_id=record.id,
    )


def ended(
    record: ExecutionRecord, before: JobRecord, state: ExecutionState, error: str, now: datetime
) -> tuple[ExecutionRecord, JobRecord]:
    """The execution's and the job's rows once the run ended in `state` at `now`."""
    if state is ExecutionState.COMPLETED:
        progress = 1.0
        # A job's last progress text stands, unless it never reported one (or not to the end).
        kept = record.progress >= 1 and record.status_text not in ("starting", "")
        status = record.status_text if kept else "completed"
    else:
        progress = record.progress
        status = "cancelled" if state is ExecutionState.CANCELLED else error
    record = ExecutionRecord(  # built directly: dataclasses.replace costs three times as much
        id=record.id,
        job_id=record.job_id,
        parameters=record.parameters,
        trigger=record.trigger,
        state=state,
        start_time=record.start_time,
        finish_time=now,
        error=error,
        progress=progress,
        status_text=status,
        scheduled_time=record.scheduled_time,
        request_id=record.request_id,
        cancel_requested=record.cancel_requested,
    )
    job = JobRecord(
        job_id=record.job_id,
        state=JOB_STATE[state],
        progress=progress,
        status_text=status,
        last_start=before.last_start,
        last_finish=now,
        execution_id=record.id,
    )
    return record, job


def settled(*futures: asyncio.Future[Any]) -> asyncio.Future[None]:
    """A new future, done once every one of `futures` is, whatever their outcomes (read them with `outcome`).

    What `asyncio.shield(asyncio.gather(..., return_exceptions=True))` gives, for a start's writes: cancelling
    the caller cancels this waiter, never the writes. Three loop callbacks a run fewer than gather and shield,
    and no task."""
    waiter = futures[0].get_loop().create_future()
    left = len(futures)

    def one_done(_: asyncio.Future[Any]) -> None:
        nonlocal left
        left -= 1
        if not left and not waiter.done():
            waiter.set_result(None)

    for future in futures:
        future.add_done_callback(one_done)
    return waiter


def outcome(future: asyncio.Future[Any]) -> BaseException | None:
    """A done future's failure (its CancelledError if cancelled), None if it succeeded; retrieves it."""
    if future.cancelled():
        return asyncio.CancelledError()
    return future.exception()


async def all_written(*writes: asyncio.Future[None]) -> None:
    """Waits for every write (none left unretrieved), then raises the first failure. Cheaper than gather."""
    failure: BaseException | None = None
    for write in writes:
        try:
            await write
        except Exception as exc:
            failure = failure or exc
    if failure is not None:
        raise failure
