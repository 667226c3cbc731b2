"""Progress reports coalesced at the source: the latest report per job, published at most once per
PROGRESS_INTERVAL (once per STORM_INTERVAL while the job storms). Job threads report; the event loop
applies. A report costs a dict write whatever the number of watchers."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable

PROGRESS_INTERVAL = 0.05
"""Progress is coalesced at the source: the latest report per job, published at most once per this many
seconds. A report costs a dict write whatever the number of watchers; a quiet job's report goes at once."""
STORM_INTERVAL = 1.0
"""A job whose reports come faster than PROGRESS_INTERVAL (some had to wait) is in a progress storm: its
latest report is published once per this many seconds, until it has been calmer than that for as long.
Every publish costs a message to each watcher, so a storm with 1,000 watchers costs 1,000 messages a
second, not 20 or 20,000."""

Report = tuple[str, float, str | None]
"""(execution id, progress, status text; None keeps the text)."""


class ProgressCoalescer:
    def __init__(self, apply: Callable[[str, str, float, str | None], None]) -> None:
        """`apply(job_id, execution_id, progress, status)` runs on the loop for each report let through."""
        self._apply = apply
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()  # job threads write reports; the loop publishes them
        self._pending: dict[str, Report] = {}
        self._flush_requested = False
        self._sent: dict[str, float] = {}
        self._storming: set[str] = set()

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def take(self, job_id: str) -> Report | None:
        """The job's report not applied yet (removed): a run's last report counts even if not yet published."""
        with self._lock:
            return self._pending.pop(job_id, None)

    def forget(self, job_id: str) -> None:
        """The job's run ended: its next run starts calm."""
        self._sent.pop(job_id, None)
        self._storming.discard(job_id)

    def report(self, job_id: str, execution_id: str, progress: float, status: str | None) -> None:
        """A report from the job (any thread): kept as the job's latest; published by the loop, at most
        once per PROGRESS_INTERVAL per job. Costs the same whatever the number of watchers."""
        loop = self._loop
        if loop is None:
            return
        with self._lock:
            earlier = self._pending.get(job_id)
            if status is None and earlier is not None and earlier[0] == execution_id:
                status = earlier[2]  # None keeps the text; an unpublished text is still the latest
            self._pending[job_id] = (execution_id, progress, status)
            if self._flush_requested:
                return
            self._flush_requested = True
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:  # a job thread: no loop runs here
            on_loop = False
        if on_loop:
            loop.call_soon(self._flush)
        elif not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # closed meanwhile: the server is gone
                loop.call_soon_threadsafe(self._flush)

    def _flush(self) -> None:
        """On the loop: applies and publishes pending reports of jobs not published within the interval;
        the others wait for a timer (one for all jobs)."""
        now = time.monotonic()
        with self._lock:
            self._flush_requested = False
            pending, self._pending = self._pending, {}
        later: dict[str, tuple[str, float, str | None]] = {}
        next_due = float("inf")
        for job_id, report in pending.items():
            sent = self._sent.get(job_id, float("-inf"))
            if job_id in self._storming and now - sent > 2 * STORM_INTERVAL:
                self._storming.discard(job_id)  # calm again
            due = sent + (STORM_INTERVAL if job_id in self._storming else PROGRESS_INTERVAL)
            if due > now:
                self._storming.add(job_id)
                later[job_id] = report
                next_due = min(next_due, sent + STORM_INTERVAL)
                continue
            self._sent[job_id] = now
            self._apply(job_id, *report)
        if not later:
            return
        with self._lock:
            for job_id, (execution_id, progress, status) in later.items():
                newer = self._pending.get(job_id)
                if newer is None:
                    self._pending[job_id] = (execution_id, progress, status)
                elif newer[2] is None and newer[0] == execution_id:
                    self._pending[job_id] = (execution_id, newer[1], status)
            if self._flush_requested:
                return
            self._flush_requested = True
        assert self._loop is not None
        self._loop.call_later(max(0.0, next_due - now), self._flush)
