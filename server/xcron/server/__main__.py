"""`xcron-server` / `python -m xcron.server`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import threading
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from xcron.server.app import ServerConfig, local_zone_name, serve
from xcron.server.stores.xcron_xml import ScheduleFileError


def parse_args(argv: list[str] | None = None) -> ServerConfig:
    parser = argparse.ArgumentParser(prog="xcron-server", description="Run the xcron job service.")
    parser.add_argument("--listen", default="127.0.0.1:50051", help="address to serve gRPC on (port 0: any free)")
    parser.add_argument(
        "--schedule-file", type=Path, default=Path("xcron.xml"), help="the SanteDB-format schedule file"
    )
    parser.add_argument("--data-dir", type=Path, default=Path(".xcron-data"), help="where state and history are kept")
    parser.add_argument("--jobs", action="append", default=[], metavar="MODULE", help="also load jobs from MODULE")
    parser.add_argument(
        "--no-entry-points",
        action="store_true",
        help="do not load job packages from the xcron.jobs entry points",
    )
    parser.add_argument("--time-zone", default=local_zone_name(), help="zone for schedules that name none")
    parser.add_argument("--shutdown-grace", type=float, default=10.0, help="seconds running jobs get on shutdown")
    parser.add_argument("--max-threads", type=int, default=8, help="threads for blocking jobs")
    parser.add_argument("--history-keep-last", type=int, default=1000, help="runs kept per job by xcron.purge-history")
    parser.add_argument("--history-max-age-days", type=int, default=90, help="age limit used by xcron.purge-history")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    try:
        ZoneInfo(args.time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        parser.error(f"--time-zone: unknown IANA zone {args.time_zone!r}")
    if args.history_keep_last < 0 or args.history_max_age_days < 0:
        parser.error("history limits must not be negative")
    if args.max_threads < 1:
        parser.error("--max-threads must be at least 1")
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return ServerConfig(
        listen=args.listen,
        schedule_file=args.schedule_file,
        data_dir=args.data_dir,
        job_modules=args.jobs,
        load_entry_points=not args.no_entry_points,
        time_zone=args.time_zone,
        shutdown_grace=args.shutdown_grace,
        max_threads=args.max_threads,
        history_keep_last=args.history_keep_last,
        history_max_age_days=args.history_max_age_days,
    )


def main(argv: list[str] | None = None) -> None:
    config = parse_args(argv)
    try:
        asyncio.run(serve(config))
    except ScheduleFileError as exc:
        print(f"xcron-server: refusing to start: {exc} (the file was left untouched)", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        pass
    stuck = [t.name for t in threading.enumerate() if t.name.startswith("xcron-job") and t.is_alive()]
    if stuck:
        # A blocking job that ignores cancellation cannot be stopped from outside its thread. Its run
        # is already recorded ABORTED and the state is flushed, so leave without waiting for it.
        logging.getLogger("xcron.server").warning("exiting with %d job thread(s) still running", len(stuck))
        logging.shutdown()
        sys.stdout.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
