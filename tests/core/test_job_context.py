"""JobContext's cancellation, seen from a blocking job's thread: its threading.Event is made on the first
wait (most runs never wait), so a cancel requested before, or while, a job waits must still end the wait."""

from __future__ import annotations

import threading

import pytest

from xcron.server.core.jobs import JobCancelled, JobContext
from xcron.server.core.model import Trigger


def _context() -> JobContext:
    return JobContext(
        job_id="j", execution_id="e", parameters={}, trigger=Trigger.MANUAL, scheduled_time=None, on_progress=print
    )


def test_a_cancel_before_the_first_wait_ends_it_at_once() -> None:
    ctx = _context()
    assert not ctx.cancel_requested and not ctx.wait(0)
    ctx = _context()
    ctx.request_cancel()
    assert ctx.cancel_requested
    assert ctx.wait(60) is True  # would block for a minute if the cancel were lost
    with pytest.raises(JobCancelled):
        ctx.raise_if_cancelled()


def test_a_cancel_ends_a_wait_in_progress_on_another_thread() -> None:
    ctx = _context()
    result: list[bool] = []
    waiting = threading.Thread(target=lambda: result.append(ctx.wait(60)))
    waiting.start()
    ctx.request_cancel()  # before or after the thread made its Event: either way the wait ends
    waiting.join(30)
    assert result == [True]
