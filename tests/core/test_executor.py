"""Executor unit tests: in-process, on a real SQLite store in tmp and a fake clock, no scheduler, no server.
What RunJob, CancelJob and shutdown rely on: one run per job, idempotent request ids, the running limit,
cancellation, refusal while shutting down, and a start the store refuses leaving nothing behind."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from core_harness import START, Gate, Recorder, Tick

from xcron.server.core.clock import FakeClock
from xcron.server.core.errors import Conflict, FailedPrecondition, LimitExceeded, NotFound, StoreUnavailable
from xcron.server.core.events import EventBus
from xcron.server.core.executor import Executor
from xcron.server.core.model import ExecutionState, JobState, Trigger
from xcron.server.core.ports import ExecutionRecord
from xcron.server.core.registry import JobRegistry
from xcron.server.stores.sqlite import SqliteStateStore


class Parts:
    def __init__(self, tmp: Path, *, max_running: int = 1000) -> None:
        self.store = SqliteStateStore(tmp / "state.sqlite3")
        self.bus = EventBus()
        self.clock = FakeClock(START)
        self.executor = Executor(JobRegistry((Tick, Gate)), self.store, self.bus, self.clock, max_running=max_running)
        self.finished = Recorder()
        self.executor.add_finish_listener(self.finished)

    async def run(self, job_id: str, **kwargs: object) -> ExecutionRecord:
        parameters = {"label": "none"} if job_id == Tick.id else {}
        return await self.executor.run(job_id, parameters, trigger=Trigger.MANUAL, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
async def parts(tmp_path: Path) -> AsyncIterator[Parts]:
    Gate.gate, Gate.started = asyncio.Event(), asyncio.Event()
    p = Parts(tmp_path)
    await p.store.open()
    await p.executor.start()
    yield p
    Gate.gate.set()
    await p.executor.shutdown(1.0)
    await p.store.close()


async def test_a_run_is_recorded_running_then_completed(parts: Parts) -> None:
    record = await parts.run(Tick.id)
    assert record.state is ExecutionState.RUNNING and record.start_time == START
    (done,) = await parts.finished.wait_for(1)
    assert done.id == record.id and done.state is ExecutionState.COMPLETED
    assert done.status_text == "label=none" and done.progress == 1.0
    job = parts.executor.job_record(Tick.id)
    assert job.state is JobState.COMPLETED and job.execution_id == record.id
    assert (await parts.store.get_execution(record.id)) == done


async def test_one_run_per_job_at_a_time(parts: Parts) -> None:
    first = await parts.run(Gate.id)
    assert Gate.started is not None
    await asyncio.wait_for(Gate.started.wait(), 10)
    with pytest.raises(Conflict) as caught:
        await parts.run(Gate.id)
    assert caught.value.reason == "JOB_ALREADY_RUNNING" and first.id in caught.value.message
    assert parts.executor.running(Gate.id) is not None


async def test_a_request_id_names_one_run(parts: Parts) -> None:
    first = await parts.run(Tick.id, request_id="req-1")
    await parts.finished.wait_for(1)
    again = await parts.run(Tick.id, request_id="req-1")
    assert again.id == first.id and again.state is ExecutionState.COMPLETED
    other = await parts.run(Tick.id, request_id="req-2")
    assert other.id != first.id


async def test_the_running_limit_is_kept(tmp_path: Path) -> None:
    Gate.gate, Gate.started = asyncio.Event(), asyncio.Event()
    p = Parts(tmp_path, max_running=1)
    await p.store.open()
    await p.executor.start()
    try:
        await p.run(Gate.id)
        with pytest.raises(LimitExceeded):
            await p.run(Tick.id)
    finally:
        Gate.gate.set()
        await p.executor.shutdown(1.0)
        await p.store.close()


async def test_cancel_ends_a_cancellable_run_cancelled(parts: Parts) -> None:
    record = await parts.run(Gate.id)
    assert Gate.started is not None
    await asyncio.wait_for(Gate.started.wait(), 10)
    requested = await parts.executor.cancel(Gate.id, record.id)
    assert requested.cancel_requested
    (done,) = await parts.finished.wait_for(1)
    assert done.state is ExecutionState.CANCELLED
    with pytest.raises(FailedPrecondition) as refused:
        await parts.executor.cancel(Gate.id)
    assert refused.value.reason == "JOB_NOT_RUNNING"
    with pytest.raises(NotFound):
        await parts.executor.cancel("no.such.job")


async def test_no_new_run_once_shutting_down(parts: Parts) -> None:
    await parts.executor.shutdown(1.0)
    with pytest.raises(FailedPrecondition) as caught:
        await parts.run(Tick.id)
    assert caught.value.reason == "SHUTTING_DOWN"


async def test_a_start_the_store_refuses_leaves_the_job_as_it_was(parts: Parts) -> None:
    before = parts.executor.job_record(Tick.id)
    real = parts.store.save_execution

    async def refuse(record: ExecutionRecord) -> None:
        raise StoreUnavailable("state store: database or disk is full")

    parts.store.save_execution = refuse  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailable):
        await parts.run(Tick.id)
    parts.store.save_execution = real  # type: ignore[method-assign]
    assert parts.executor.running(Tick.id) is None
    assert parts.executor.job_record(Tick.id) == before
    assert await parts.store.list_executions(Tick.id, limit=10) == []
    again = await parts.run(Tick.id)  # nothing is left half-done: the job runs again
    assert again.state is ExecutionState.RUNNING
