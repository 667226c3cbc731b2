"""Waiting for state that can only be observed by asking again (a scrape, another replica's view)."""

from __future__ import annotations

import time
from collections.abc import Callable


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Asks until `check` holds; bounded, and never a fixed sleep standing in for an event."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.02)
