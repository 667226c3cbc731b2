"""The event bus behind WatchJobs: snapshots, sequence numbers, resume, coalescing."""

from __future__ import annotations

import asyncio

import pytest

from xcron.server.core.errors import LimitExceeded
from xcron.server.core.events import (
    MAX_SAFE_INTEGER,
    MESSAGES_PER_SECOND,
    PACE,
    WAKE_BATCH,
    BatchKind,
    EventBus,
    JobStatus,
)
from xcron.server.core.model import JobState
from xcron.server.core.ports import JobRecord


def status(job_id: str, progress: float = 0.0, state: JobState = JobState.RUNNING) -> JobStatus:
    return JobStatus(JobRecord(job_id=job_id, state=state, progress=progress))


def seeded(replay_size: int = 100) -> EventBus:
    bus = EventBus(replay_size=replay_size)
    bus.seed([status("a", state=JobState.NOT_YET_RUN), status("b", state=JobState.NOT_YET_RUN)])
    return bus


async def test_first_batch_is_a_snapshot_of_the_watched_jobs() -> None:
    bus = seeded()
    everything = await bus.subscribe().next_batch()
    assert everything.kind is BatchKind.SNAPSHOT
    assert [s.job_id for s in everything.statuses] == ["a", "b"]
    only_b = await bus.subscribe(["b"]).next_batch()
    assert [s.job_id for s in only_b.statuses] == ["b"]


async def test_changes_are_numbered_increasingly_and_filtered() -> None:
    bus = seeded()
    watcher = bus.subscribe(["a"])
    snapshot = await watcher.next_batch()
    bus.publish(status("b", 0.1))
    published = bus.publish(status("a", 0.2))
    batch = await watcher.next_batch()
    assert batch.kind is BatchKind.CHANGES
    assert [(s.job_id, s.record.progress) for s in batch.statuses] == [("a", 0.2)]
    assert batch.sequence == published.sequence > snapshot.sequence


async def test_slow_watcher_gets_the_latest_state_per_job_and_bounded_memory() -> None:
    bus = seeded()
    watcher = bus.subscribe()
    await watcher.next_batch()
    for i in range(1000):
        bus.publish(status("a", i / 1000))
        bus.publish(status("b", i / 1000))
    batch = await watcher.next_batch()  # one batch, one status per job: nothing piles up
    assert [(s.job_id, s.record.progress) for s in batch.statuses] == [("a", 0.999), ("b", 0.999)]
    assert watcher.coalesced == 1998


async def test_next_batch_waits_for_a_change() -> None:
    bus = seeded()
    watcher = bus.subscribe()
    await watcher.next_batch()
    pending = asyncio.create_task(watcher.next_batch())
    await asyncio.sleep(0)
    assert not pending.done()
    bus.publish(status("b", 0.5))
    batch = await asyncio.wait_for(pending, 5)
    assert batch.statuses[0].job_id == "b"


async def test_resume_replays_what_was_missed() -> None:
    bus = seeded()
    seen = bus.publish(status("a", 0.1)).sequence
    bus.publish(status("a", 0.2))
    bus.publish(status("b", 0.3))
    resumed = await bus.subscribe(after_sequence=seen).next_batch()
    assert resumed.kind is BatchKind.CHANGES
    assert [(s.job_id, s.record.progress) for s in resumed.statuses] == [("a", 0.2), ("b", 0.3)]


async def test_resume_too_far_back_or_from_another_process_gets_a_fresh_snapshot() -> None:
    bus = seeded(replay_size=3)
    old = bus.publish(status("a", 0.1)).sequence
    for i in range(5):
        bus.publish(status("b", i / 10))
    assert (await bus.subscribe(after_sequence=old).next_batch()).kind is BatchKind.SNAPSHOT
    assert (await bus.subscribe(after_sequence=bus.sequence + 10).next_batch()).kind is BatchKind.SNAPSHOT
    assert (await bus.subscribe(after_sequence=1).next_batch()).kind is BatchKind.SNAPSHOT


async def test_sequences_continue_across_restarts(monkeypatch: pytest.MonkeyPatch) -> None:
    boot = 1_800_000_000 * 10**9
    monkeypatch.setattr("time.time_ns", lambda: boot)
    first = EventBus()
    for _ in range(500):  # a busy first process: 500 changes in its first second
        last = first.publish(status("a")).sequence
    monkeypatch.setattr("time.time_ns", lambda: boot + 10**9)  # restarted a second later
    second = EventBus()
    assert second.publish(status("a")).sequence > last


async def test_sequences_are_exact_as_javascript_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    """A JS client reads int64 as a double: every number must survive that round trip, so resume works."""
    now = seeded()
    seen = now.publish(status("a", 0.1)).sequence
    now.publish(status("b", 0.2))
    as_javascript_reads_it = int(float(seen))
    assert as_javascript_reads_it == seen <= MAX_SAFE_INTEGER
    resumed = await now.subscribe(after_sequence=as_javascript_reads_it).next_batch()
    assert resumed.kind is BatchKind.CHANGES and [s.job_id for s in resumed.statuses] == ["b"]
    monkeypatch.setattr("time.time_ns", lambda: 4_102_444_800 * 10**9)  # booted on 2100-01-01
    late = EventBus()
    for _ in range(100_000):
        last = late.publish(status("a")).sequence
    assert last <= MAX_SAFE_INTEGER and float(last) == last


async def test_resume_at_the_latest_sequence_sends_nothing_until_a_change() -> None:
    bus = seeded()
    latest = bus.publish(status("a", 0.1)).sequence
    watcher = bus.subscribe(after_sequence=latest)
    pending = asyncio.create_task(watcher.next_batch())
    await asyncio.sleep(0)  # let it reach its wait: it must not return an empty CHANGES batch
    assert not pending.done()
    bus.publish(status("b", 0.5))
    batch = await asyncio.wait_for(pending, 5)
    assert batch.kind is BatchKind.CHANGES and [(s.job_id, s.record.progress) for s in batch.statuses] == [("b", 0.5)]
    fresh = seeded()  # no change yet: the snapshot's number is the boot number, and resumes as well
    snapshot = await fresh.subscribe().next_batch()
    quiet = asyncio.create_task(fresh.subscribe(after_sequence=snapshot.sequence).next_batch())
    await asyncio.sleep(0)
    assert not quiet.done()
    quiet.cancel()


async def test_a_sequence_from_before_a_restart_gets_a_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    boot = 1_800_000_000 * 10**9
    monkeypatch.setattr("time.time_ns", lambda: boot)
    first = seeded()
    for i in range(50):
        last = first.publish(status("a", i / 100)).sequence
    monkeypatch.setattr("time.time_ns", lambda: boot + 10**9)
    second = seeded()
    second._tag = first._tag  # even with the same tag: the old number is older than the new process
    second._sequence = second._sequence - second._sequence % EventBus.TAGS + first._tag
    for i in range(50):
        second.publish(status("b", i / 100))
    assert (await second.subscribe(after_sequence=last).next_batch()).kind is BatchKind.SNAPSHOT


async def test_watcher_limit_and_close() -> None:
    bus = seeded()
    bus.max_watchers = 2
    w1, w2 = bus.subscribe(), bus.subscribe()
    with pytest.raises(LimitExceeded):
        bus.subscribe()
    w1.close()
    assert bus.watcher_count == 1
    bus.subscribe()
    w2.close()


async def test_a_sequence_from_another_replica_gets_a_snapshot_not_replays() -> None:
    a, b = seeded(), seeded()
    while b._tag == a._tag:  # replicas draw random tags; make these two differ
        b = seeded()
    b._sequence = a._sequence - a._tag + b._tag  # booted in the same microsecond: numbers interleave
    for i in range(3):
        b.publish(status("b", i / 10))
    a.publish(status("a", 0.4))
    from_a = a.publish(status("a", 0.5)).sequence
    held = [s.sequence for s in b._replay]
    assert held[0] < from_a < held[-1]  # a's number falls inside b's replay buffer …
    resumed = await b.subscribe(after_sequence=from_a).next_batch()
    assert resumed.kind is BatchKind.SNAPSHOT  # … yet b does not replay from it
    own = await b.subscribe(after_sequence=held[0]).next_batch()
    assert own.kind is BatchKind.CHANGES  # its own numbers still resume


async def test_a_change_wakes_watchers_a_group_per_turn_and_reaches_all() -> None:
    """1,000 watchers woken at once would make every RPC wait for 1,000 stream writes in one turn."""
    bus = seeded()
    watchers = [bus.subscribe() for _ in range(3 * WAKE_BATCH + 1)]
    for watcher in watchers:
        await watcher.next_batch()  # the snapshot
    bus.publish(status("a", 0.5))
    assert sum(watcher._wakeup.is_set() for watcher in watchers) == WAKE_BATCH
    bus.publish(status("b", 0.5))  # a second change before the rest are woken queues no one twice
    batches = await asyncio.wait_for(asyncio.gather(*(w.next_batch() for w in watchers)), 5)
    assert all([s.job_id for s in batch.statuses][-1] == "b" for batch in batches)
    assert all(not watcher._pending for watcher in watchers)
    assert len(bus._to_wake) == 0


def test_pacing_bounds_what_all_watchers_cost_not_what_one_watcher_waits() -> None:
    """A watcher alone (a client following its runs) is not held back PACE per batch; a thousand are paced at
    PACE, so all of them together get at most MESSAGES_PER_SECOND batches a second."""
    bus = seeded()
    watchers = [bus.subscribe()]
    assert bus.pace == 1 / MESSAGES_PER_SECOND
    watchers += [bus.subscribe() for _ in range(999)]
    assert bus.pace == PACE and len(watchers) / bus.pace <= MESSAGES_PER_SECOND
    watchers.append(bus.subscribe())
    assert bus.pace == PACE  # never slower than PACE
    for watcher in watchers[1:]:
        watcher.close()
    assert bus.pace == 1 / MESSAGES_PER_SECOND
