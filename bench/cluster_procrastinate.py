"""One procrastinate worker for bench.cluster (`python -m bench.cluster_procrastinate`): `--count` periodic
schedules (`@app.periodic`, one periodic_id each) of one no-op task, as xcron's replicas get `--count`
schedules of no-op jobs; each run appends "<periodic index> <scheduled epoch s> <start epoch s>" to `--out`.

procrastinate's periodic deferrer sleeps until the next cron tick *plus half a second* (periodic.MARGIN, so
as never to wake early); `--margin` sets it (the bench passes 0, so lateness measures procrastinate's queue
and workers rather than that deliberate margin; `--margin 0.5` is procrastinate as shipped).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time

import procrastinate
from procrastinate import periodic

EVERY_SECOND = "* * * * * *"  # croniter's 6-field form: the sixth field is the second


def build_app(dsn: str, count: int, out: int, cron: str) -> procrastinate.App:
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))

    @app.task(name="bench_noop")
    async def noop(timestamp: int, index: int) -> None:
        started = time.time()
        os.write(out, f"{index} {timestamp} {started:.6f}\n".encode())

    for index in range(count):
        app.periodic(cron=cron, periodic_id=f"p{index:04d}", task_kwargs={"index": index})(noop)
    return app


async def _main(args: argparse.Namespace) -> None:
    periodic.MARGIN = args.margin
    out = os.open(args.out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    app = build_app(args.dsn, args.count, out, args.cron)
    async with app.open_async():
        # bench.common.ServerProcess waits for a "listening on HOST:PORT" line: the worker listens (LISTEN/NOTIFY)
        # on the database from here on.
        print(f"procrastinate worker {args.name} listening on {args.pg_address}", flush=True)
        await app.run_worker_async(name=args.name, concurrency=args.concurrency, install_signal_handlers=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dsn", required=True)
    p.add_argument("--pg-address", default="127.0.0.1:5432", help="printed in the ready line")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--cron", default=EVERY_SECOND)
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--margin", type=float, default=0.0)
    p.add_argument("--name", default="worker")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stdout)
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
