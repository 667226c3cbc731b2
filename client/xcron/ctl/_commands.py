"""The commands of xcronctl: each takes the client, its parsed arguments and where to write, and returns the
exit code. Every value is checked before a call that changes something is sent (UsageError, exit 2)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Generator, Mapping, Sequence
from datetime import datetime, timedelta, tzinfo

from rich.live import Live
from rich.text import Text

from xcron.client import (
    Client,
    Execution,
    ExecutionState,
    Job,
    JobStatus,
    MisfirePolicy,
    OverlapPolicy,
    ParameterValue,
    Schedule,
    ScheduleOptions,
    UnavailableError,
    WatchEvent,
    WatchEventKind,
)

from . import _json as js
from . import _parse as parse
from . import _render as render
from . import _text as fmt
from ._parse import UsageError
from ._render import Output

EXIT_OK = 0
EXIT_ABORTED = 1
EXIT_USAGE = 2
EXIT_CANCELLED = 3
EXIT_SERVER = 4
EXIT_INTERRUPTED = 130

_RUN_EXIT_CODES = {
    ExecutionState.COMPLETED: EXIT_OK,
    ExecutionState.ABORTED: EXIT_ABORTED,
    ExecutionState.CANCELLED: EXIT_CANCELLED,
}


def cmd_jobs(client: Client, args: argparse.Namespace, out: Output) -> int:
    jobs = list(client.iter_jobs())
    if out.json:
        out.document({"jobs": [js.job_json(job) for job in jobs]})
    else:
        out.console.print(render.jobs_table(jobs))
    return EXIT_OK


def cmd_show(client: Client, args: argparse.Namespace, out: Output) -> int:
    job = client.get_job(args.job, next_fire_time_count=args.next)
    executions = client.list_executions(args.job, page_size=10).items[:10]
    if out.json:
        out.document({"job": js.job_json(job), "executions": [js.execution_json(e) for e in executions]})
    else:
        out.console.print(render.job_detail(job, executions))
    return EXIT_OK


def cmd_history(client: Client, args: argparse.Namespace, out: Output) -> int:
    """Follows the pages only as far as ``--limit`` needs."""
    limit: int = args.limit
    executions: list[Execution] = []
    for execution in client.iter_executions(args.job, page_size=min(limit, 1000)):
        executions.append(execution)
        if len(executions) >= limit:
            break
    if out.json:
        out.document({"job_id": args.job, "executions": [js.execution_json(e) for e in executions]})
    elif executions:
        out.console.print(render.executions_table(executions, f"History of {args.job} (newest first)"))
    else:
        out.console.print(Text(f"{args.job} has never run.", style="dim"))
    return EXIT_OK


def _run_parameters(job: Job, items: Sequence[str]) -> dict[str, ParameterValue]:
    """The typed ``--param`` values; a missing required one is a usage error here rather than a server error."""
    values = parse.parse_parameters(job.id, job.parameters, items)
    missing = [p.name for p in job.parameters if p.required and p.name not in values]
    if missing:
        raise UsageError(
            "missing required parameter" + ("s " if len(missing) > 1 else " ") + ", ".join(repr(m) for m in missing)
        )
    return values


def cmd_run(client: Client, args: argparse.Namespace, out: Output) -> int:
    job = client.get_job(args.job, next_fire_time_count=1)
    parameters = _run_parameters(job, args.param)
    if not args.wait:
        execution = client.run_job(job.id, parameters, request_id=args.request_id)
        if out.json:
            out.document({"execution": js.execution_json(execution)})
        else:
            out.stdout.write(execution.id + "\n")
        return EXIT_OK
    final = _run_and_follow(client, job.id, parameters, args.request_id, out)
    if out.json:
        out.document({"execution": js.execution_json(final)})
    else:
        out.console.print(render.run_summary(final), soft_wrap=True)
    if final.state in (ExecutionState.ABORTED, ExecutionState.CANCELLED):
        out.error(f"{final.job_id} {final.state.name}: {final.error or 'no error text'}")
    return _RUN_EXIT_CODES.get(final.state, EXIT_SERVER)


def _latest_status(event: WatchEvent, job_id: str) -> JobStatus | None:
    """The job's last status in an event: the only one that counts, as the server coalesces per job."""
    latest = None
    for status in event.statuses:
        if status.job_id == job_id:
            latest = status
    return latest


def follow_execution(
    client: Client,
    events: Generator[WatchEvent, None, None],
    execution: Execution,
    on_status: Callable[[float, str], None],
) -> Execution:
    """Follow the job's watch stream until ``execution`` ends; returns its full record.

    The server keeps only the latest status per job for a slow reader, so when the stream shows another
    execution (or a fresh snapshot without ours) the end may have been coalesced away: GetExecution decides.
    """
    if execution.finished:  # a repeated request id of a run that is long over
        return client.get_execution(execution.id)
    for event in events:
        latest = _latest_status(event, execution.job_id)
        if latest is not None and latest.execution_id == execution.id:
            on_status(latest.progress, latest.status_text)
            if latest.state.finished:
                return client.get_execution(execution.id)
            continue
        if latest is None and event.kind is not WatchEventKind.SNAPSHOT:
            continue
        record = client.get_execution(execution.id)
        if record.finished:
            return record
    record = client.get_execution(execution.id)
    if record.finished:
        return record
    raise UnavailableError(f"the watch stream ended before execution {execution.id} finished")


def _run_and_follow(
    client: Client, job_id: str, parameters: Mapping[str, ParameterValue], request_id: str | None, out: Output
) -> Execution:
    events = client.watch_jobs([job_id])
    try:
        next(events, None)  # the snapshot: from here on the subscription is live, so the end cannot be missed
        execution = client.run_job(job_id, parameters, request_id=request_id)
        if out.json or not out.live:
            return follow_execution(client, events, execution, lambda progress, text: None)
        with render.RunProgress(out.console, job_id) as view:
            view.update(execution.progress, execution.status_text or "running")
            final = follow_execution(client, events, execution, view.update)
            view.finish(final)
        return final
    finally:
        events.close()


def cmd_cancel(client: Client, args: argparse.Namespace, out: Output) -> int:
    execution = client.cancel_job(args.job, execution_id=args.execution)
    if out.json:
        out.document({"execution": js.execution_json(execution)})
    else:
        out.console.print(Text(f"cancel requested for {execution.job_id} (execution {execution.id})"))
    return EXIT_OK


def _time_option(option: str, text: str | None, zone: tzinfo | None) -> datetime | None:
    """--start/--stop: ISO-8601 with an offset, or without one when --tz says where it is."""
    if not text:
        return None
    try:
        return parse.parse_timestamp(text, zone)
    except ValueError as error:
        raise UsageError(f"{option}: {error}") from None


def _new_schedule(job: Job, args: argparse.Namespace) -> Schedule:
    """The schedule the options describe; every value is checked here, before SetSchedule is sent."""
    zone: tzinfo | None = None
    if args.tz:
        try:
            zone = parse.parse_zone(args.tz)
        except ValueError as error:
            raise UsageError(f"--tz: {error}") from None
    options: ScheduleOptions = {"time_zone": args.tz}
    start = _time_option("--start", args.start, zone)
    end = _time_option("--stop", args.stop, zone)
    if start is not None and end is not None and end < start:
        raise UsageError("--stop is before --start")
    options["start_time"], options["end_time"] = start, end
    if args.param:
        options["parameters"] = parse.parse_parameters(job.id, job.parameters, args.param)
    if args.misfire:
        options["misfire_policy"] = MisfirePolicy[args.misfire.upper()]
    if args.overlap:
        options["overlap_policy"] = OverlapPolicy[args.overlap.upper()]
    if args.max_catchup:
        options["max_catchup_runs"] = args.max_catchup
    try:
        if args.misfire_grace:
            options["misfire_grace_period"] = parse.parse_duration(args.misfire_grace)
        if args.every:
            every = parse.parse_duration(args.every)
            if every < timedelta(seconds=1) or every.microseconds:
                raise ValueError(f"--every {args.every!r}: must be whole seconds, at least 1s")
            return Schedule.every(every, **options)
        if args.cron:
            return Schedule.cron(args.cron, **options)
        days = parse.parse_days(args.days) if args.days else frozenset()
        return Schedule.on_days(days, parse.parse_time_of_day(args.at), **options)
    except ValueError as error:
        raise UsageError(str(error)) from None


def _check_schedule_args(args: argparse.Namespace) -> str:
    """Which action the options ask for; UsageError when they contradict each other."""
    actions = [
        name
        for name, given in (
            ("every", args.every),
            ("calendar", args.days or args.at),
            ("cron", args.cron),
            ("clear", args.clear),
            ("pause", args.pause),
            ("resume", args.resume),
        )
        if given
    ]
    if len(actions) > 1:
        raise UsageError("give one of --every, --days/--at, --cron, --clear, --pause or --resume")
    if args.days and not args.at:
        raise UsageError("--days needs --at (the time of day)")
    action = actions[0] if actions else "show"
    options = {
        "--add": args.add,
        "--tz": args.tz,
        "--start": args.start,
        "--stop": args.stop,
        "--param": args.param,
        "--misfire": args.misfire,
        "--misfire-grace": args.misfire_grace,
        "--max-catchup": args.max_catchup,
        "--overlap": args.overlap,
    }
    if action in ("clear", "pause", "resume", "show"):
        extra = [name for name, value in options.items() if value]
        if extra:
            what = f"--{action}" if action != "show" else "no schedule (--every, --days/--at or --cron)"
            raise UsageError(f"{', '.join(extra)} cannot be used with {what}")
    return action


def cmd_schedule(client: Client, args: argparse.Namespace, out: Output) -> int:
    action = _check_schedule_args(args)
    if action == "pause":
        job = client.pause_schedule(args.job)
        message = f"schedules of {job.id} paused"
    elif action == "resume":
        job = client.resume_schedule(args.job)
        message = f"schedules of {job.id} resumed"
    elif action == "clear":
        job = client.clear_schedule(args.job)
        message = f"schedules of {job.id} cleared"
    elif action == "show":
        job = client.get_job(args.job)
        message = ""
    else:
        current = client.get_job(args.job)
        schedule = _new_schedule(current, args)
        schedules = [*current.schedules, schedule] if args.add else [schedule]
        job = client.set_schedule(current.id, schedules)
        verb = "added to" if args.add else "set for"
        message = f"schedule {fmt.schedule_summary(schedule)} {verb} {job.id}"
    if out.json:
        out.document({"job": js.job_json(job)})
        return EXIT_OK
    if message:
        out.console.print(Text(message), soft_wrap=True)
    if job.schedules:
        out.console.print(render.schedules_table(job))
    else:
        out.console.print(Text(f"{job.id} has no schedules.", style="dim"))
    return EXIT_OK


def cmd_watch(client: Client, args: argparse.Namespace, out: Output) -> int:
    """A snapshot replaces the whole table (it is sent again after a resume the server cannot honour)."""
    count: int | None = args.count
    statuses: dict[str, JobStatus] = {}
    events = client.watch_jobs(args.jobs)
    try:
        if out.json:
            for seen, event in enumerate(events, 1):
                out.line(js.event_json(event))
                if count is not None and seen >= count:
                    break
            return EXIT_OK
        caption = "" if count is not None else "Ctrl-C to stop"
        with Live(
            render.watch_table(statuses, 0, caption),
            console=out.console,
            auto_refresh=False,
            vertical_overflow="visible",
        ) as live:
            for seen, event in enumerate(events, 1):
                if event.kind is WatchEventKind.SNAPSHOT:
                    statuses.clear()
                statuses.update((s.job_id, s) for s in event.statuses)
                live.update(render.watch_table(statuses, event.sequence, caption), refresh=True)
                if count is not None and seen >= count:
                    break
        if not out.live:
            out.console.line()  # a terminal gets its newline from Live; a pipe gets the final table only
    finally:
        events.close()
    return EXIT_OK


def cmd_reload(client: Client, args: argparse.Namespace, out: Output) -> int:
    result = client.reload_schedules()
    if out.json:
        out.document(
            {"scheduled_job_count": result.scheduled_job_count, "unknown_entry_count": result.unknown_entry_count}
        )
    else:
        out.console.print(
            f"xcron.xml reloaded: {result.scheduled_job_count} scheduled job(s), "
            f"{result.unknown_entry_count} entr(ies) for unknown jobs kept"
        )
    return EXIT_OK


COMMANDS: dict[str, Callable[[Client, argparse.Namespace, Output], int]] = {
    "jobs": cmd_jobs,
    "show": cmd_show,
    "run": cmd_run,
    "cancel": cmd_cancel,
    "schedule": cmd_schedule,
    "watch": cmd_watch,
    "history": cmd_history,
    "reload": cmd_reload,
}
