"""What the server sets in its own process once started: everything loaded so far frozen out of the collector's
passes, and the youngest generation collected every GC_YOUNGEST_THRESHOLD allocations instead of every 700."""

from __future__ import annotations

import gc
from pathlib import Path

from xcron.server.app import GC_YOUNGEST_THRESHOLD, ServerConfig, XcronServer


async def test_a_started_server_freezes_what_it_loaded_and_collects_young_objects_less_often(tmp_path: Path) -> None:
    config = ServerConfig(
        listen="127.0.0.1:0",
        schedule_file=tmp_path / "xcron.xml",
        data_dir=tmp_path / "data",
        load_entry_points=False,
        time_zone="UTC",
        shutdown_grace=1.0,
    )
    before = gc.get_threshold()
    gc.set_threshold(700, *before[1:])
    gc.unfreeze()
    server = XcronServer(config)
    try:
        await server.start()
        assert gc.get_threshold() == (GC_YOUNGEST_THRESHOLD, *before[1:])
        assert GC_YOUNGEST_THRESHOLD > 700
        assert gc.get_freeze_count() > 0
    finally:
        await server.stop()
        gc.set_threshold(*before)
