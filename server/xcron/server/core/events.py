"""The event bus behind WatchJobs: latest status per job, numbered changes, per-watcher coalescing.

Every change gets a sequence number: (milliseconds from 2025-01-01 to boot + changes since) * 2048
+ a random tag of this process. So numbers keep increasing across restarts, stay below 2^53 until
2164 (a JavaScript client that reads int64 as a Number keeps them exact), and a watcher resuming
with a number from an earlier process, or from another replica of a cluster, gets a fresh snapshot
instead of wrong replays. A resume with the latest number sends nothing until the next change.
Each watcher holds at most one pending status
per job (the latest): a slow reader gets coalesced updates, its memory is bounded by the number
of jobs, and publishing never waits for any watcher.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from enum import StrEnum

from xcron.server.core.errors import LimitExceeded
from xcron.server.core.ports import JobRecord


@dataclass(frozen=True)
class JobStatus:
    """A change of a job's status as the bus delivers it: the job's record (core/ports.py: the one type of a
    job's status), numbered by the bus."""

    record: JobRecord
    sequence: int = 0
    origin: str = ""
    """The replica the change came from; "" for this process."""

    @property
    def job_id(self) -> str:
        return self.record.job_id


PACE = 0.05
"""At most one batch per watcher per PACE seconds while changes keep coming..."""
MESSAGES_PER_SECOND = 20_000
"""...or rather per watchers / MESSAGES_PER_SECOND seconds, when that is less: pacing bounds what all
watchers together cost (each batch is a message to send), so 1,000 watchers are paced at PACE, while
one watcher following its runs (a client waiting for each run's end) is not held back 50 ms a batch;
its batches still coalesce while the previous one is being sent."""

WAKE_BATCH = 32
"""Watchers woken per turn of the event loop. Sending a change to 1,000 watchers costs ~1,000 stream writes;
woken all at once they would run in one turn and every RPC arriving meanwhile would queue behind all of
them. Woken 32 at a time, the loop polls for other work between groups, so an RPC waits for one group at
most, while the total work and the order of delivery stay the same."""


class BatchKind(StrEnum):
    SNAPSHOT = "snapshot"
    CHANGES = "changes"


@dataclass(frozen=True)
class WatchBatch:
    kind: BatchKind
    statuses: tuple[JobStatus, ...]
    sequence: int


class Watcher:
    """One subscriber. Not thread-safe: used on the event loop only."""

    def __init__(self, bus: EventBus, job_ids: frozenset[str] | None, first: WatchBatch | None) -> None:
        self._bus = bus
        self.job_ids = job_ids
        self._first: WatchBatch | None = first
        self._pending: dict[str, JobStatus] = {}
        self._wakeup = asyncio.Event()
        self._queued = False  # in the bus's queue of watchers to wake
        self._closed = False
        self._sent_at = float("-inf")
        self.coalesced = 0

    def wants(self, job_id: str) -> bool:
        return self.job_ids is None or job_id in self.job_ids

    def offer(self, status: JobStatus) -> bool:
        """Takes the change; True if the watcher needs waking (it had nothing pending)."""
        if status.job_id in self._pending:
            self.coalesced += 1
            del self._pending[status.job_id]  # re-insert so the batch stays in change order
            self._pending[status.job_id] = status
            return False
        self._pending[status.job_id] = status
        if self._queued or self._wakeup.is_set():
            return False
        self._queued = True
        return True

    def wake(self) -> None:
        self._queued = False
        self._wakeup.set()

    async def next_batch(self) -> WatchBatch:
        """The snapshot first, then all changes pending since the last call (waits for one)."""
        if self._first is not None:
            first, self._first = self._first, None
            return first
        while not self._pending:
            if self._closed:
                raise asyncio.CancelledError("watcher closed")
            self._wakeup.clear()
            await self._wakeup.wait()
        # Pace only when changes come fast: within PACE of the last batch, wait out the rest so the
        # changes meanwhile join this batch (coalesced); a change after a quiet spell goes at once.
        loop = asyncio.get_running_loop()
        wait = self._sent_at + self._bus.pace - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        self._sent_at = loop.time()
        statuses = tuple(self._pending.values())
        self._pending.clear()
        return WatchBatch(BatchKind.CHANGES, statuses, max(s.sequence for s in statuses))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._wakeup.set()
            self._bus.unsubscribe(self)


MAX_SAFE_INTEGER = 2**53 - 1
"""JavaScript's Number.MAX_SAFE_INTEGER: every sequence number stays at or below it."""

EPOCH_NS = 1_735_689_600 * 10**9
"""2025-01-01T00:00:00Z: sequence numbers count milliseconds from here (2^53 / 2048 ms is 139 years)."""


class EventBus:
    TAGS = 2048

    def __init__(self, *, replay_size: int = 10_000, max_watchers: int = 10_000) -> None:
        self._tag = random.randrange(self.TAGS)
        self._sequence = max(0, time.time_ns() - EPOCH_NS) // 1_000_000 * self.TAGS + self._tag
        self._latest: dict[str, JobStatus] = {}
        self._replay: deque[JobStatus] = deque(maxlen=replay_size)
        self._watchers: set[Watcher] = set()
        self.max_watchers = max_watchers
        self._listeners: list[Callable[[JobStatus], None]] = []
        self._to_wake: deque[Watcher] = deque()
        self._waking = False

    @property
    def sequence(self) -> int:
        return self._sequence

    @property
    def watcher_count(self) -> int:
        return len(self._watchers)

    @property
    def pace(self) -> float:
        """Seconds between two batches to one watcher while changes keep coming (see MESSAGES_PER_SECOND)."""
        return min(PACE, len(self._watchers) / MESSAGES_PER_SECOND)

    def seed(self, statuses: Iterable[JobStatus]) -> None:
        """Sets the starting status of jobs without counting it as a change."""
        for status in statuses:
            self._latest[status.job_id] = replace(status, sequence=self._sequence)

    def add_listener(self, listener: Callable[[JobStatus], None]) -> None:
        """Called synchronously with every change (the cluster relay); it must not block."""
        self._listeners.append(listener)

    def publish(self, status: JobStatus) -> JobStatus:
        self._sequence += self.TAGS
        numbered = JobStatus(status.record, self._sequence, status.origin)
        job_id = status.record.job_id
        self._latest[job_id] = numbered
        self._replay.append(numbered)
        to_wake = self._to_wake
        for watcher in self._watchers:
            if watcher.wants(job_id) and watcher.offer(numbered):
                to_wake.append(watcher)
        if to_wake and not self._waking:
            self._waking = True
            self._wake_some()
        for listener in self._listeners:
            listener(numbered)
        return numbered

    def _wake_some(self) -> None:
        """Wakes the next WAKE_BATCH watchers; the rest on the next turn of the loop."""
        to_wake = self._to_wake
        for _ in range(min(WAKE_BATCH, len(to_wake))):
            to_wake.popleft().wake()
        if not to_wake:
            self._waking = False
            return
        try:
            asyncio.get_running_loop().call_soon(self._wake_some)
        except RuntimeError:  # no loop runs here (a synchronous caller): wake them all now
            while to_wake:
                to_wake.popleft().wake()
            self._waking = False

    def unsubscribe(self, watcher: Watcher) -> None:
        """Forgets a watcher (Watcher.close calls it)."""
        self._watchers.discard(watcher)

    def subscribe(self, job_ids: Iterable[str] = (), *, after_sequence: int = 0) -> Watcher:
        if len(self._watchers) >= self.max_watchers:
            raise LimitExceeded(f"too many watchers (limit {self.max_watchers}); retry later")
        wanted = frozenset(job_ids) or None
        first = self._resume(wanted, after_sequence) if after_sequence > 0 else None
        if first is None:
            statuses = tuple(s for job_id, s in sorted(self._latest.items()) if wanted is None or job_id in wanted)
            first = WatchBatch(BatchKind.SNAPSHOT, statuses, self._sequence)
        elif not first.statuses:
            first = None  # resumed at the latest change: nothing to send until the next one
        watcher = Watcher(self, wanted, first)
        self._watchers.add(watcher)
        return watcher

    def _resume(self, wanted: frozenset[str] | None, after: int) -> WatchBatch | None:
        """Changes after `after`, if the replay buffer still holds all of them; else None."""
        if after > self._sequence or after % self.TAGS != self._tag:
            return None
        oldest_held = self._replay[0].sequence if self._replay else self._sequence + 1
        if after < oldest_held - self.TAGS:
            return None
        latest_per_job: dict[str, JobStatus] = {}
        for status in self._replay:
            if status.sequence > after and (wanted is None or status.job_id in wanted):
                latest_per_job.pop(status.job_id, None)
                latest_per_job[status.job_id] = status
        return WatchBatch(BatchKind.CHANGES, tuple(latest_per_job.values()), self._sequence)
