"""The run records core/runs.py builds field by field (cheaper than dataclasses.replace) keep every field; the
waiter a start's writes are awaited through (`settled`) waits for all of them and, cancelled, cancels none;
execution ids are time-ordered UUIDs."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import MISSING, fields, replace
from datetime import UTC, datetime, timedelta

import pytest

from xcron.server.core.model import ExecutionState, Trigger
from xcron.server.core.ports import ExecutionRecord, JobRecord
from xcron.server.core.runs import ExecutionIds, ended, outcome, settled, started_at

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _record() -> ExecutionRecord:
    """Every field away from its default, so a field left out shows."""
    return ExecutionRecord(
        id="e",
        job_id="j",
        parameters={"n": 1},
        trigger=Trigger.SCHEDULE,
        state=ExecutionState.RUNNING,
        start_time=T0,
        finish_time=T0 + timedelta(seconds=9),
        error="x",
        progress=0.5,
        status_text="half",
        scheduled_time=T0 - timedelta(seconds=1),
        request_id="r",
        cancel_requested=True,
    )


def test_the_sample_record_sets_every_field() -> None:
    """A field added to ExecutionRecord fails here until _record() sets it, and so the tests below check it."""
    sample = _record()
    for field in fields(ExecutionRecord):
        assert field.default is MISSING or getattr(sample, field.name) != field.default, field.name


def test_started_at_changes_the_start_time_only() -> None:
    later = T0 + timedelta(seconds=1)
    assert started_at(_record(), later) == replace(_record(), start_time=later)


def test_ended_keeps_every_field_it_does_not_set() -> None:
    now = T0 + timedelta(seconds=2)
    record, job = ended(_record(), JobRecord(job_id="j"), ExecutionState.ABORTED, "boom", now)
    expected = replace(_record(), state=ExecutionState.ABORTED, finish_time=now, error="boom", status_text="boom")
    assert record == expected
    assert job.execution_id == "e" and job.last_finish == now


async def test_settled_waits_for_every_future_whatever_its_outcome() -> None:
    loop = asyncio.get_running_loop()
    ok, failed, cancelled = loop.create_future(), loop.create_future(), loop.create_future()
    waiter = settled(ok, failed, cancelled)
    ok.set_result(None)
    failed.set_exception(ValueError("x"))
    await asyncio.sleep(0)  # the done callbacks run on the loop's next turns
    assert not waiter.done()
    cancelled.cancel()
    await waiter
    assert outcome(ok) is None
    assert isinstance(outcome(failed), ValueError)
    assert isinstance(outcome(cancelled), asyncio.CancelledError)


async def test_cancelling_the_settled_waiter_leaves_the_futures_alone() -> None:
    """As asyncio.shield: a start's caller cancelled meanwhile must not cancel its writes."""
    loop = asyncio.get_running_loop()
    write = loop.create_future()

    async def start() -> None:  # as the executor's _record_start awaits it
        await settled(write)

    task = asyncio.create_task(start())
    await asyncio.sleep(0)  # one turn: the task now waits on settled()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not write.done()
    again = settled(write)
    write.set_result(None)
    await again
    assert outcome(write) is None


def test_execution_ids_are_version_7_uuids_ordered_by_their_millisecond() -> None:
    """RFC 9562: 48 bits of Unix milliseconds, version 7, the RFC 4122 variant, 74 random bits. Ids of a
    later millisecond sort after earlier ones (a store's index appends them); within one they are random."""
    now = [1_796_018_862_424_000_000]
    ids = ExecutionIds(now_ns=lambda: now[0])
    batches = []
    for _ in range(3):
        batches.append([ids.new() for _ in range(500)])  # more than one draw of the random pool
        now[0] += 1_000_000  # the next millisecond
    everything = [i for batch in batches for i in batch]
    assert len(set(everything)) == len(everything)
    for text in everything:
        parsed = uuid.UUID(text)
        assert str(parsed) == text  # canonical form: lower-case hex, 8-4-4-4-12
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    stamps = [[uuid.UUID(i).int >> 80 for i in batch] for batch in batches]
    assert [set(s) for s in stamps] == [{1_796_018_862_424}, {1_796_018_862_425}, {1_796_018_862_426}]
    assert max(batches[0]) < min(batches[1]) and max(batches[1]) < min(batches[2])
    assert sorted(batches[0]) != batches[0]  # random within the millisecond
    assert len({uuid.UUID(i).int >> 64 & 0xFFF for i in everything}) > 1000  # rand_a: 12 random bits too
