"""uvloop instead of asyncio's default loop, for measuring it (issue 16): imported
(`XCRON_BENCH_PATCH=bench.with_uvloop`, the in-process scheduler phases) it installs uvloop's loop
policy; run as a module (`XCRON_BENCH_SERVER_MODULE=bench.with_uvloop`) it also starts the server.
xcron itself does not use uvloop (see bench/RESULTS.md for why)."""

from __future__ import annotations

import asyncio

import uvloop

asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

if __name__ == "__main__":
    from xcron.server.__main__ import main

    main()
