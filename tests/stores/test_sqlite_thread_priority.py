"""The SQLite store's thread runs at a lower CPU priority than its process (THREAD_NICENESS higher nice value),
so that the event loop gets a busy core first; never above the process's priority, at most 19, and left
alone when the niceness is 0. Linux only: elsewhere a thread has no priority of its own."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from xcron.server.stores.sqlite import THREAD_NICENESS, SqliteStateStore

pytestmark = pytest.mark.skipif(
    sys.platform != "linux", reason="per-thread nice values need Linux (setpriority on a thread id)"
)


def _nice(thread_id: int | None) -> int:
    assert thread_id is not None
    return os.getpriority(os.PRIO_PROCESS, thread_id)


async def _store_thread_nice(path: Path, **options: int) -> tuple[int, int]:
    """(the loop thread's nice value, the store thread's) once the store has served a call."""
    store = SqliteStateStore(path, **options)
    await store.open()
    try:
        await store.load_jobs()
        assert store._thread is not None
        return _nice(threading.get_native_id()), _nice(store._thread.native_id)
    finally:
        await store.close()


async def test_the_store_thread_runs_niceness_lower_than_the_loop(tmp_path: Path) -> None:
    loop_nice, store_nice = await _store_thread_nice(tmp_path / "state.sqlite3")
    assert THREAD_NICENESS > 0
    assert store_nice == min(19, loop_nice + THREAD_NICENESS)
    assert _nice(threading.get_native_id()) == loop_nice  # the loop's thread keeps its own


async def test_niceness_zero_keeps_the_process_priority(tmp_path: Path) -> None:
    loop_nice, store_nice = await _store_thread_nice(tmp_path / "state.sqlite3", thread_niceness=0)
    assert store_nice == loop_nice


_CHILD = """
import asyncio, os, sys
from pathlib import Path
from xcron.server.stores.sqlite import SqliteStateStore

async def main():
    store = SqliteStateStore(Path(sys.argv[1]))
    await store.open()
    await store.load_jobs()
    print(os.getpriority(os.PRIO_PROCESS, os.getpid()), os.getpriority(os.PRIO_PROCESS, store._thread.native_id))
    await store.close()

asyncio.run(main())
"""


@pytest.mark.parametrize("process_nice", [17, 19])
def test_a_process_started_nice_gets_a_store_thread_at_most_19(tmp_path: Path, process_nice: int) -> None:
    """Started with `nice -n 17` (or 19): the store thread goes to 19, never back up towards 0."""
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tmp_path / "state.sqlite3")],
        preexec_fn=lambda: os.setpriority(os.PRIO_PROCESS, 0, process_nice),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    assert [int(x) for x in out] == [process_nice, 19]
