"""Progress reports coalesced at the source: the latest report per job, published at most once per
PROGRESS_INTERVAL (once per STORM_INTERVAL while the job storms). Job threads report; the event loop
applies.

A report is what a job does in its tightest loops, and an async job's loop runs on the server's own event
loop: every microsecond a report costs is a microsecond every RPC waits behind it. So a report takes no
lock and touches no shared structure: it overwrites one slot of its run (an atomic attribute write under
the GIL) and only the first report after a publish asks the loop for a flush. Its cost is independent of
the number of watchers and of the report rate."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable

PROGRESS_INTERVAL = 0.05
"""Progress is coalesced at the source: the latest report per job, published at most once per this many
seconds. A report costs a slot write whatever the number of watchers; a quiet job's report goes at once."""
STORM_INTERVAL = 1.0
"""A job whose reports come faster than PROGRESS_INTERVAL (some had to wait) is in a progress storm: its
latest report is published once per this many seconds, until it has been calmer than that for as long.
Every publish costs a message to each watcher, so a storm with 1,000 watchers costs 1,000 messages a
second, not 20 or 20,000."""

Report = tuple[str, float, str | None]
"""(execution id, progress, status text; None keeps the text)."""

Apply = Callable[[str, str, float, str | None], None]


class ProgressSlot:
    """One run's latest report, and the run's progress sink (`JobContext` calls it from any thread).

    Lock-free by ordering: the reporter writes `latest`, then reads `dirty`; the flush clears `dirty`, then
    reads `latest`. Whatever the interleaving, a report is either read by a flush that is under way or
    asks for another one, so the latest report is never stranded."""

    __slots__ = ("_request", "dirty", "execution_id", "job_id", "latest")

    def __init__(self, job_id: str, execution_id: str, request: Callable[[ProgressSlot], None]) -> None:
        self.job_id = job_id
        self.execution_id = execution_id
        self.latest: tuple[float, str | None] | None = None
        self.dirty = False
        self._request = request

    def __call__(self, progress: float, status: str | None) -> None:
        if status is None and (latest := self.latest) is not None:
            status = latest[1]  # None keeps the text, and an unpublished text is still the latest
        self.latest = (progress, status)
        if not self.dirty:
            self.dirty = True
            self._request(self)

    def take(self) -> Report | None:
        """The report not applied yet, if any (the slot is then clean)."""
        if not self.dirty:
            return None
        self.dirty = False
        latest = self.latest
        return None if latest is None else (self.execution_id, *latest)


class ProgressCoalescer:
    def __init__(self, apply: Apply) -> None:
        """`apply(job_id, execution_id, progress, status)` runs on the loop for each report let through."""
        self._apply = apply
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._lock = threading.Lock()  # guards the request list and the flag, not the reports
        self._requested: list[ProgressSlot] = []
        self._flush_requested = False
        self._slots: dict[str, ProgressSlot] = {}
        self._sent: dict[str, float] = {}
        self._storming: set[str] = set()

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._loop_thread = threading.get_ident()

    def sink(self, job_id: str, execution_id: str) -> ProgressSlot:
        """A run's progress sink: call it with (progress, status) from any thread."""
        slot = ProgressSlot(job_id, execution_id, self._request)
        self._slots[job_id] = slot
        return slot

    def take(self, job_id: str) -> Report | None:
        """The job's report not applied yet (removed): a run's last report counts even if not yet published."""
        slot = self._slots.get(job_id)
        return None if slot is None else slot.take()

    def forget(self, job_id: str) -> None:
        """The job's run ended: its next run starts calm."""
        self._slots.pop(job_id, None)
        self._sent.pop(job_id, None)
        self._storming.discard(job_id)

    def _request(self, slot: ProgressSlot) -> None:
        """The slot has a report to publish (the first since its last publish): asks the loop for a flush."""
        loop = self._loop
        if loop is None:
            return
        with self._lock:
            self._requested.append(slot)
            if self._flush_requested:
                return
            self._flush_requested = True
        if threading.get_ident() == self._loop_thread:
            loop.call_soon(self._flush)
        elif not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # closed meanwhile: the server is gone
                loop.call_soon_threadsafe(self._flush)

    def _flush(self) -> None:
        """On the loop: applies and publishes the reports of jobs not published within the interval; the
        others wait for a timer (one for all jobs)."""
        now = time.monotonic()
        with self._lock:
            self._flush_requested = False
            requested, self._requested = self._requested, []
        later: list[ProgressSlot] = []
        next_due = float("inf")
        for slot in requested:
            if not slot.dirty:
                continue  # taken at the run's end, or listed twice
            job_id = slot.job_id
            sent = self._sent.get(job_id, float("-inf"))
            if job_id in self._storming and now - sent > 2 * STORM_INTERVAL:
                self._storming.discard(job_id)  # calm again
            due = sent + (STORM_INTERVAL if job_id in self._storming else PROGRESS_INTERVAL)
            if due > now:
                self._storming.add(job_id)
                later.append(slot)
                next_due = min(next_due, sent + STORM_INTERVAL)
                continue
            report = slot.take()
            if report is not None:
                self._sent[job_id] = now
                self._apply(job_id, *report)
        if not later:
            return
        with self._lock:
            self._requested.extend(later)
            if self._flush_requested:
                return
            self._flush_requested = True
        assert self._loop is not None
        self._loop.call_later(max(0.0, next_due - now), self._flush)
