"""xcronctl's entry point: argument parsing, settings (flags, then XCRON_* variables, then defaults), the
channel, and the mapping of every failure to a message and an exit code.

Exit codes: 0 success; 1 a waited-for run ended ABORTED; 2 a usage error (nothing was changed); 3 a waited-for
run ended CANCELLED; 4 the server refused the call or could not be reached; 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TextIO

import grpc
from rich.console import Console

from xcron.client import Client, XcronError

from . import _parse as parse
from ._commands import COMMANDS, EXIT_INTERRUPTED, EXIT_SERVER, EXIT_USAGE
from ._parse import UsageError
from ._render import PROG, Output

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_TIMEOUT = 30.0


# --- arguments ----------------------------------------------------------------------------------------------


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be zero (no limit) or more: {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def _common_options() -> argparse.ArgumentParser:
    """Options accepted both before and after the command.

    Their defaults are SUPPRESS so that a subcommand's parser does not overwrite a value given before the
    command; :func:`_settings` fills in the environment and the real defaults afterwards.
    """
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    group = common.add_argument_group("connection and output (before or after the command)")
    group.add_argument("--target", metavar="HOST:PORT", help=f"server address (env XCRON_TARGET; {DEFAULT_TARGET})")
    group.add_argument(
        "--timeout",
        type=_non_negative_float,
        metavar="SECONDS",
        help=f"deadline of each call, 0 for none (env XCRON_TIMEOUT; {DEFAULT_TIMEOUT:g})",
    )
    group.add_argument("--token", help="bearer token sent as 'authorization: Bearer …' (env XCRON_TOKEN)")
    group.add_argument("--tls", action="store_true", help="use TLS with the system's roots (env XCRON_TLS=1)")
    group.add_argument("--ca-cert", metavar="PATH", help="PEM roots to trust; implies --tls (env XCRON_CA_CERT)")
    group.add_argument(
        "--client-cert", metavar="PATH", help="PEM client certificate, mutual TLS (env XCRON_CLIENT_CERT)"
    )
    group.add_argument("--client-key", metavar="PATH", help="PEM key of --client-cert (env XCRON_CLIENT_KEY)")
    group.add_argument(
        "-o", "--output", choices=("table", "json"), help="table for people (default) or json for scripts"
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common_options()
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run, schedule and watch the jobs of an xcron server.",
        parents=[common],
        epilog="Exit codes: 0 ok, 1 run aborted, 2 usage error, 3 run cancelled, 4 server error, 130 interrupted.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, parents=[common], help=help_text, description=help_text)

    command("jobs", "List the jobs with their schedules and state.")

    show = command("show", "Show one job: parameters, schedules with next fire times, recent runs.")
    show.add_argument("job")
    show.add_argument("--next", type=_positive_int, default=5, metavar="N", help="next fire times per schedule")

    run = command("run", "Run a job now.")
    run.add_argument("job")
    run.add_argument(
        "-p", "--param", action="append", default=[], metavar="NAME=VALUE", help="a parameter, typed as declared"
    )
    run.add_argument("-w", "--wait", action="store_true", help="follow the run with a progress bar until it ends")
    run.add_argument("--request-id", metavar="ID", help="idempotency key: repeating it returns the first execution")

    cancel = command("cancel", "Ask a job's running execution to stop.")
    cancel.add_argument("job")
    cancel.add_argument("--execution", default="", metavar="ID", help="only if this is the running execution")

    schedule = command(
        "schedule",
        "Set a job's schedule (replacing its schedules, or --add), clear, pause or resume them; "
        "with no action, show them.",
    )
    schedule.add_argument("job")
    what = schedule.add_argument_group("what (one of)")
    what.add_argument("--every", metavar="DURATION", help="an interval: 90s, 15m, 2h, 1h30m or seconds")
    what.add_argument("--days", metavar="DAYS", help="with --at: mon,fri or mon-fri, weekdays, weekends, daily")
    what.add_argument("--at", metavar="HH:MM", help="time of day (with --days; alone: once)")
    what.add_argument(
        "--cron",
        metavar="EXPR",
        help='a cron expression: minute hour day month weekday, e.g. "0 3 * * *"; '
        "with seconds they come LAST (Quartz and Cronos put them first)",
    )
    what.add_argument("--clear", action="store_true", help="remove all of the job's schedules")
    what.add_argument("--pause", action="store_true", help="stop the schedules from firing, keeping them")
    what.add_argument("--resume", action="store_true", help="let paused schedules fire again")
    how = schedule.add_argument_group("options of a new schedule")
    how.add_argument("--add", action="store_true", help="append to the existing schedules instead of replacing them")
    how.add_argument("--tz", metavar="ZONE", default="", help="IANA zone for --at/--cron, e.g. Europe/Paris")
    how.add_argument("--start", metavar="ISO", help="no occurrence before (the phase of --every)")
    how.add_argument("--stop", metavar="ISO", help="no occurrence after")
    how.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE", help="run with this parameter")
    how.add_argument("--misfire", choices=("run_once", "skip", "run_all"), help="what to do with missed occurrences")
    how.add_argument("--misfire-grace", metavar="DURATION", help="drop missed occurrences older than this")
    how.add_argument("--max-catchup", type=_positive_int, metavar="N", help="with --misfire run_all: at most N runs")
    how.add_argument("--overlap", choices=("skip", "buffer_one", "cancel_other"), help="when still running")

    watch = command("watch", "Live table of all (or the given) jobs until Ctrl-C.")
    watch.add_argument("jobs", nargs="*", metavar="JOB")
    watch.add_argument("--count", type=_positive_int, metavar="N", help="stop after N events (for scripts)")

    history = command("history", "A job's executions, newest first.")
    history.add_argument("job")
    history.add_argument("-n", "--limit", type=_positive_int, default=20, metavar="N", help="at most N (20)")

    command("reload", "Make the server re-read xcron.xml.")
    return parser


@dataclass(frozen=True)
class Settings:
    """The connection and output settings, after the environment and the defaults were applied."""

    target: str
    timeout: float | None
    token: str
    tls: bool
    ca_cert: str
    client_cert: str
    client_key: str
    json: bool


def _settings(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    def pick(name: str, env: str, default: str = "") -> str:
        value = getattr(args, name, None)
        return str(value) if value is not None else environ.get(env, default)

    timeout_text = pick("timeout", "XCRON_TIMEOUT", str(DEFAULT_TIMEOUT))
    try:
        timeout = _non_negative_float(timeout_text)
    except argparse.ArgumentTypeError as error:
        raise UsageError(f"XCRON_TIMEOUT: {error}") from None
    tls_env = environ.get("XCRON_TLS", "")
    try:
        tls = bool(getattr(args, "tls", False)) or (parse.parse_bool(tls_env) if tls_env else False)
    except ValueError as error:
        raise UsageError(f"XCRON_TLS: {error}") from None
    return Settings(
        target=pick("target", "XCRON_TARGET", DEFAULT_TARGET) or DEFAULT_TARGET,
        timeout=timeout or None,
        token=pick("token", "XCRON_TOKEN"),
        tls=tls,
        ca_cert=pick("ca_cert", "XCRON_CA_CERT"),
        client_cert=pick("client_cert", "XCRON_CLIENT_CERT"),
        client_key=pick("client_key", "XCRON_CLIENT_KEY"),
        json=getattr(args, "output", "table") == "json",
    )


def _read_pem(path: str, option: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as error:
        raise UsageError(f"{option} {path}: {error.strerror or error}") from None


def credentials(settings: Settings) -> grpc.ChannelCredentials | None:
    """TLS credentials when asked for (--tls, a CA, or a client certificate); None for plaintext."""
    if bool(settings.client_cert) != bool(settings.client_key):
        raise UsageError("--client-cert and --client-key go together")
    if not (settings.tls or settings.ca_cert or settings.client_cert):
        return None
    roots = _read_pem(settings.ca_cert, "--ca-cert") if settings.ca_cert else None
    chain = _read_pem(settings.client_cert, "--client-cert") if settings.client_cert else None
    key = _read_pem(settings.client_key, "--client-key") if settings.client_key else None
    return grpc.ssl_channel_credentials(root_certificates=roots, private_key=key, certificate_chain=chain)


def connect(settings: Settings) -> Client:
    metadata = [("authorization", f"Bearer {settings.token}")] if settings.token else []
    return Client(settings.target, timeout=settings.timeout, metadata=metadata, credentials=credentials(settings))


# --- entry point --------------------------------------------------------------------------------------------


def _server_error(out: Output, error: XcronError) -> int:
    out.error(f"{error.code.name}: {error.message}")
    for violation in error.field_violations:
        print(f"  {violation.field}: {violation.description}", file=out.stderr)
    return EXIT_SERVER


def main(
    argv: Sequence[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run one xcronctl command and return its exit code; never lets a traceback reach the user."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    args = build_parser().parse_args(argv)
    out = Output(json=False, console=Console(file=stdout, highlight=False), stdout=stdout, stderr=stderr)
    try:
        settings = _settings(args, os.environ if environ is None else environ)
        out.json = settings.json
        with connect(settings) as client:
            return COMMANDS[args.command](client, args, out)
    except UsageError as error:
        out.error(str(error))
        return EXIT_USAGE
    except XcronError as error:
        return _server_error(out, error)
    except grpc.RpcError as error:  # the client maps every call's error; this is a last line of defence
        code = error.code().name if hasattr(error, "code") else "UNKNOWN"
        details = error.details() if hasattr(error, "details") else str(error)
        out.error(f"{code}: {details}")
        return EXIT_SERVER
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`xcronctl jobs -o json | head`): silence the flush at exit, as a shell tool should.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
