"""`xcron-server` / `python -m xcron.server`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from xcron.server import logs
from xcron.server.api.auth import TokenFileError, hash_token_main, load_token_table
from xcron.server.api.tls import (
    InsecureListenError,
    TlsConfigError,
    TlsFiles,
    check_plaintext_allowed,
    read_tls_files,
)
from xcron.server.app import ListenError, ServerConfig, export_schedules, import_schedules, local_zone_name, serve
from xcron.server.core.errors import StoreUnavailable
from xcron.server.core.limits import Limits
from xcron.server.core.zones import is_iana_zone
from xcron.server.stores.datadir import DataDirLocked
from xcron.server.stores.xcron_xml import ScheduleFileError


def parse_args(argv: list[str] | None = None) -> ServerConfig:
    """The command line as a checked ServerConfig (exits with usage on a bad one); `--hash-token` runs and exits."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.hash_token:
        sys.exit(hash_token_main(sys.stdin, sys.stdout, sys.stderr))
    tls = _check_args(parser, args)
    logs.configure(args.log_level, args.log_format)
    return _config(args, tls)


def build_parser() -> argparse.ArgumentParser:
    """The options (an argument table; checks live in _check_args)."""
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
    parser.add_argument(
        "--event-loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="uvloop (default; asyncio's own loop where uvloop is not installed) or asyncio",
    )
    parser.add_argument("--log-format", choices=("plain", "json"), default="plain", help="json: one object per line")
    parser.add_argument(
        "--http-listen",
        metavar="HOST:PORT",
        help="also serve JobService over Connect (JSON, binary) and gRPC-Web, and the jobs panel at /, here",
    )
    parser.add_argument("--metrics-listen", metavar="HOST:PORT", help="serve Prometheus metrics at /metrics here")
    cluster = parser.add_argument_group("PostgreSQL store and replicas")
    cluster.add_argument(
        "--store", metavar="DSN", help="postgresql://… keeps state, history and schedules there (shared by replicas)"
    )
    cluster.add_argument("--store-schema", default="xcron", help="schema in that database (%(default)s)")
    cluster.add_argument("--replica-id", help="this replica's name (default: host:pid:random); must be unique")
    cluster.add_argument("--lease", type=float, default=15.0, help="seconds before a silent replica's runs are aborted")
    cluster.add_argument(
        "--import", dest="import_file", type=Path, metavar="XML", help="replace the stored schedules, exit"
    )
    cluster.add_argument("--export", dest="export_file", type=Path, metavar="XML", help="write them to a file, exit")
    defaults = Limits()
    limits = parser.add_argument_group("limits (exceeding one is answered RESOURCE_EXHAUSTED or INVALID_ARGUMENT)")
    for name, help_text in (
        ("max_request_bytes", "largest request accepted"),
        ("max_parameters", "parameters per run or schedule"),
        ("max_parameter_bytes", "bytes of one string parameter"),
        ("max_schedules_per_job", "schedules one job may have"),
        ("max_running", "runs in progress at once"),
        ("max_watchers", "WatchJobs streams at once"),
    ):
        limits.add_argument(
            "--" + name.replace("_", "-"), type=int, default=getattr(defaults, name), help=f"{help_text} (%(default)s)"
        )
    security = parser.add_argument_group(
        "security", "plaintext is served only on loopback addresses unless --allow-insecure is given"
    )
    security.add_argument("--tls-cert", type=Path, metavar="PEM", help="serve TLS with this certificate (chain)")
    security.add_argument("--tls-key", type=Path, metavar="PEM", help="the private key of --tls-cert")
    security.add_argument(
        "--tls-client-ca", type=Path, metavar="PEM", help="require client certificates signed by this CA (mutual TLS)"
    )
    security.add_argument(
        "--allow-insecure", action="store_true", help="allow plaintext on a non-loopback address (trusted network)"
    )
    security.add_argument(
        "--tokens-file",
        type=Path,
        metavar="PATH",
        help="require bearer tokens; lines 'NAME ROLE[,ROLE...] hmac-sha256$KEY$MAC' (read once at start)",
    )
    security.add_argument("--reflection-requires-token", action="store_true", help="reflection needs a valid token too")
    security.add_argument(
        "--hash-token", action="store_true", help="print the tokens-file HASH of the token read from stdin, and exit"
    )
    return parser


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> TlsFiles | None:
    """What the options' types cannot say; parser.error() (exit 2) on the first problem. Returns the TLS files."""
    if not is_iana_zone(args.time_zone):
        parser.error(f"--time-zone: unknown IANA zone {args.time_zone!r} (a name such as Europe/Paris or UTC)")
    if args.history_keep_last < 0 or args.history_max_age_days < 0:
        parser.error("history limits must not be negative")
    if args.max_threads < 1:
        parser.error("--max-threads must be at least 1")
    tls = _check_security(parser, args)
    for name in ("max_request_bytes", "max_parameters", "max_parameter_bytes", "max_schedules_per_job", "max_running",
                 "max_watchers"):  # fmt: skip
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if (args.import_file or args.export_file) and not args.store:
        parser.error("--import and --export move schedules to and from a --store")
    if args.import_file and args.export_file:
        parser.error("--import and --export: one at a time (each does its one thing and exits)")
    if args.lease <= 0:
        parser.error("--lease must be positive")
    if args.http_listen is not None and ":" not in args.http_listen:
        parser.error("--http-listen takes HOST:PORT")
    if args.metrics_listen is not None and ":" not in args.metrics_listen:
        parser.error("--metrics-listen takes HOST:PORT")
    return tls


def _config(args: argparse.Namespace, tls: TlsFiles | None) -> ServerConfig:
    return ServerConfig(
        limits=Limits(
            max_request_bytes=args.max_request_bytes,
            max_parameters=args.max_parameters,
            max_parameter_bytes=args.max_parameter_bytes,
            max_schedules_per_job=args.max_schedules_per_job,
            max_running=args.max_running,
            max_watchers=args.max_watchers,
        ),
        metrics_listen=args.metrics_listen,
        http_listen=args.http_listen,
        store_dsn=args.store,
        store_schema=args.store_schema,
        replica_id=args.replica_id,
        lease_seconds=args.lease,
        import_file=args.import_file,
        export_file=args.export_file,
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
        tls=tls,
        allow_insecure=args.allow_insecure,
        tokens_file=args.tokens_file,
        reflection_requires_token=args.reflection_requires_token,
        event_loop=args.event_loop,
    )


def _check_security(parser: argparse.ArgumentParser, args: argparse.Namespace) -> TlsFiles | None:
    """Refuses (exit 2) half-given TLS, unreadable PEM or tokens files, and plaintext off loopback."""
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    if args.tls_client_ca is not None and args.tls_cert is None:
        parser.error("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key")
    if args.reflection_requires_token and args.tokens_file is None:
        parser.error("--reflection-requires-token needs --tokens-file")
    tls = None
    try:
        if args.tls_cert is not None:
            tls = TlsFiles(cert=args.tls_cert, key=args.tls_key, client_ca=args.tls_client_ca)
            read_tls_files(tls)
        else:
            check_plaintext_allowed(args.listen, allow_insecure=args.allow_insecure)
            if args.http_listen is not None:
                check_plaintext_allowed(args.http_listen, allow_insecure=args.allow_insecure)
        if args.tokens_file is not None:
            load_token_table(args.tokens_file)
    except (TlsConfigError, InsecureListenError, TokenFileError) as exc:
        parser.error(str(exc))
    return tls


def _run(config: ServerConfig, main: Coroutine[Any, Any, None]) -> None:
    """asyncio.run, on uvloop's loop unless --event-loop asyncio (or uvloop is not installed)."""
    if config.event_loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            uvloop.run(main)
            return
    asyncio.run(main)


def main(argv: list[str] | None = None) -> None:
    config = parse_args(argv)
    try:
        if config.import_file:
            _run(config, import_schedules(config))
        else:
            _run(config, export_schedules(config) if config.export_file else serve(config))
    except StoreUnavailable as exc:
        print(f"xcron-server: the store is unavailable: {exc.message}", file=sys.stderr)
        sys.exit(2)
    except ScheduleFileError as exc:
        print(f"xcron-server: refusing to start: {exc} (the file was left untouched)", file=sys.stderr)
        sys.exit(2)
    except (TlsConfigError, InsecureListenError, TokenFileError) as exc:  # a file changed since the flags were checked
        print(f"xcron-server: refusing to start: {exc}", file=sys.stderr)
        sys.exit(2)
    except (DataDirLocked, ListenError) as exc:  # one server per data dir and per port
        print(f"xcron-server: refusing to start: {exc}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:
        if exc.filename is None:
            raise
        print(f"xcron-server: refusing to start: {exc.filename}: {exc.strerror}", file=sys.stderr)
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
