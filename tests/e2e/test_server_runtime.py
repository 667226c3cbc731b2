"""What the server sets in its own process while it runs: everything loaded at start is frozen out of the
collector's passes, and the youngest generation is collected every GC_YOUNGEST_THRESHOLD allocations instead
of every 700 (put back when the last server in the process stops; a process that turned automatic collection
off keeps it off)."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
from core_harness import in_process_config

from xcron.server.app import GC_YOUNGEST_THRESHOLD, XcronServer


@pytest.mark.parametrize("youngest", [700, 0], ids=["default", "automatic-collection-off"])
async def test_a_running_server_collects_young_objects_less_often_and_puts_it_back(
    tmp_path: Path, youngest: int
) -> None:
    before = gc.get_threshold()
    gc.set_threshold(youngest, *before[1:])
    gc.unfreeze()
    server = XcronServer(in_process_config(tmp_path))
    running = False
    try:
        await server.start()
        running = True
        expected = GC_YOUNGEST_THRESHOLD if youngest else 0
        assert gc.get_threshold() == (expected, *before[1:])
        assert gc.get_freeze_count() > 0
        running = False
        await server.stop()
        assert gc.get_threshold() == (youngest, *before[1:])
    finally:
        if running:
            await server.stop()
        gc.set_threshold(*before)
        gc.unfreeze()


async def test_with_two_servers_in_one_process_the_threshold_is_put_back_when_the_last_stops(tmp_path: Path) -> None:
    before = gc.get_threshold()
    gc.set_threshold(700, *before[1:])
    first, second = XcronServer(in_process_config(tmp_path / "a")), XcronServer(in_process_config(tmp_path / "b"))
    running: list[XcronServer] = []
    try:
        for server in (first, second):
            await server.start()
            running.append(server)
        assert gc.get_threshold()[0] == GC_YOUNGEST_THRESHOLD
        running.remove(first)
        await first.stop()
        assert gc.get_threshold()[0] == GC_YOUNGEST_THRESHOLD  # the second still runs
        running.remove(second)
        await second.stop()
        assert gc.get_threshold() == (700, *before[1:])
    finally:
        for server in running:
            await server.stop()
        gc.set_threshold(*before)
        gc.unfreeze()
