"""How xcronctl shows things to people: rich tables and the live views of ``run --wait`` and ``watch``.

Tables build :class:`rich.text.Text` rather than markup, so a job name with ``[brackets]`` shows as it is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TextIO

from rich import box
from rich.console import Console, Group, RenderableType
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from xcron.client import Execution, ExecutionState, Job, JobState, JobStatus, MisfirePolicy

from ._json import Json, write_json
from ._text import (
    format_duration,
    format_time,
    local_zone_caption,
    parameters_text,
    percent,
    run_time,
    schedule_summary,
    value_text,
    zone_named,
)

PROG = "xcronctl"

# --- where output goes --------------------------------------------------------------------------------------


@dataclass
class Output:
    """Where results go: JSON or rich on stdout, messages on stderr."""

    json: bool
    console: Console
    stdout: TextIO
    stderr: TextIO

    def document(self, document: Json) -> None:
        write_json(document, self.stdout)

    def line(self, document: Json) -> None:
        write_json(document, self.stdout, one_line=True)

    def error(self, message: str) -> None:
        print(f"{PROG}: {message}", file=self.stderr, flush=True)

    @property
    def live(self) -> bool:
        """Whether stdout is a terminal that can redraw (a pipe gets only the final picture)."""
        return self.console.is_terminal and not self.console.is_dumb_terminal


# --- tables -------------------------------------------------------------------------------------------------


def _short_time(value: datetime | None) -> str:
    """A time in a listing, whose caption names the zone."""
    return format_time(value, with_zone=False)


def _listing(title: str, caption: str | None = None, *, lines: bool = False) -> Table:
    """A compact table for lists (no vertical rules), so that it still fits an 80-column terminal."""
    return Table(
        show_lines=lines,
        title=title,
        title_justify="left",
        title_style="bold",
        caption=local_zone_caption() if caption is None else caption or None,
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )


def schedules_summary(job: Job) -> Text:
    """All of a job's schedules, one per line, with a ``paused`` marker."""
    if not job.schedules:
        return Text("-", style="dim")
    text = Text()
    if job.schedules_paused:
        text.append("paused\n", style="bold yellow")
    text.append("\n".join(schedule_summary(s) for s in job.schedules))
    return text


_STATE_STYLES = {
    "RUNNING": "bold cyan",
    "COMPLETED": "green",
    "ABORTED": "bold red",
    "CANCELLED": "yellow",
    "NOT_YET_RUN": "dim",
}


def state_text(state: JobState | ExecutionState) -> Text:
    """The state's name, coloured; the colour stays on the name when more text is appended."""
    return Text.assemble((state.name, _STATE_STYLES.get(state.name, "")))


def jobs_table(jobs: Iterable[Job]) -> Table:
    table = _listing("xcron jobs")
    # On a narrow terminal the times wrap (date over time) before the name and schedule are squeezed away.
    table.add_column("ID", style="bold", no_wrap=True)
    table.add_column("Name", min_width=6)
    table.add_column("Schedule", min_width=12)
    table.add_column("State", no_wrap=True)
    table.add_column("Prog", justify="right", no_wrap=True)
    table.add_column("Last start", min_width=10)
    table.add_column("Last finish", min_width=10)
    for job in jobs:
        table.add_row(
            Text(job.id),
            Text(job.name),
            schedules_summary(job),
            state_text(job.state),
            percent(job.progress) if job.last_start_time else "-",
            _short_time(job.last_start_time),
            _short_time(job.last_finish_time),
        )
    return table


def executions_table(executions: Iterable[Execution], title: str) -> Table:
    table = _listing(title)
    table.add_column("Execution", min_width=8, overflow="fold")
    table.add_column("Trigger", no_wrap=True)
    table.add_column("State", no_wrap=True)
    table.add_column("Started", min_width=10)
    table.add_column("Took", justify="right", no_wrap=True)
    table.add_column("Prog", justify="right", no_wrap=True)
    table.add_column("Status / error", min_width=12)
    for execution in executions:
        took = run_time(execution)
        detail = Text(execution.status_text)
        if execution.error and execution.error != execution.status_text:
            if detail:
                detail.append("\n")
            detail.append(execution.error, style="red")
        table.add_row(
            Text(execution.id),
            execution.trigger.name.lower(),
            state_text(execution.state),
            _short_time(execution.start_time),
            format_duration(took) if took is not None else "-",
            percent(execution.progress),
            detail,
        )
    return table


def schedules_table(job: Job) -> Table:
    """A job's schedules; each one's times are shown in its own zone, as it fires in that zone."""
    paused = " (paused: none of them fires)" if job.schedules_paused else ""
    table = _listing(f"Schedules{paused}", "times in each schedule's zone", lines=True)
    table.add_column("#", justify="right")
    table.add_column("Schedule", min_width=20)
    table.add_column("Next fire times", no_wrap=True)
    table.add_column("Last fire", min_width=10)
    table.add_column("Skipped", no_wrap=True)
    for index, schedule in enumerate(job.schedules):
        zone = zone_named(schedule.time_zone)
        what = Text(schedule_summary(schedule), style="bold")
        if schedule.start_time is not None:
            what.append(f"\nfrom {format_time(schedule.start_time, zone)}")
        if schedule.end_time is not None:
            what.append(f"\nuntil {format_time(schedule.end_time, zone)}")
        if schedule.parameters:
            what.append(f"\nwith {parameters_text(schedule.parameters)}")
        policies = [
            f"misfire {schedule.misfire_policy.name.lower()}",
            f"overlap {schedule.overlap_policy.name.lower()}",
        ]
        if schedule.misfire_grace_period is not None:
            policies.append(f"grace {format_duration(schedule.misfire_grace_period)}")
        if schedule.misfire_policy is MisfirePolicy.RUN_ALL and schedule.max_catchup_runs:
            policies.append(f"max catch-up {schedule.max_catchup_runs}")
        what.append("\n" + ", ".join(policies), style="dim")
        table.add_row(
            str(index),
            what,
            "\n".join(format_time(t, zone) for t in schedule.next_fire_times) or "-",
            format_time(schedule.last_fire_time, zone),
            f"overlap {schedule.overlap_skipped_count}\nmisfire {schedule.misfire_skipped_count}"
            + (f"\nnot started {schedule.not_started_count}" if schedule.not_started_count else ""),
        )
    return table


def parameters_table(job: Job) -> Table:
    table = _listing("Parameters", "")
    table.add_column("Name", style="bold", no_wrap=True)
    table.add_column("Type", no_wrap=True)
    table.add_column("Required", no_wrap=True)
    table.add_column("Default", min_width=8)
    table.add_column("Description", min_width=12)
    for p in job.parameters:
        table.add_row(
            Text(p.name),
            p.type.name.lower(),
            "yes" if p.required else "no",
            Text(value_text(p.default_value)),
            Text(p.description),
        )
    return table


def job_header(job: Job) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("Job", Text(f"{job.id}  {job.name}"))
    if job.description:
        grid.add_row("Description", Text(job.description))
    state = state_text(job.state)
    if job.last_start_time is not None:
        state.append(f"  {percent(job.progress)}")
    if job.status_text:
        state.append(f"  {job.status_text}")
    grid.add_row("State", state)
    grid.add_row("Last start", format_time(job.last_start_time))
    grid.add_row("Last finish", format_time(job.last_finish_time))
    if job.execution_id:
        grid.add_row("Execution", Text(job.execution_id))
    grid.add_row("Can cancel", "yes" if job.can_cancel else "no")
    if job.type_name:
        grid.add_row("xcron.xml type", Text(job.type_name))
    return grid


def job_detail(job: Job, executions: Iterable[Execution]) -> Group:
    """``xcronctl show``: the job, its parameters, its schedules and its recent runs."""
    runs = list(executions)
    parts: list[RenderableType] = [
        job_header(job),
        parameters_table(job) if job.parameters else Text("No parameters.", style="dim"),
        schedules_table(job) if job.schedules else Text("No schedules.", style="dim"),
        executions_table(runs, "Recent runs") if runs else Text("Never run.", style="dim"),
    ]
    spaced: list[RenderableType] = []
    for part in parts:
        spaced.extend((part, Text()))
    return Group(*spaced[:-1])


def watch_table(statuses: Mapping[str, JobStatus], sequence: int, caption: str = "Ctrl-C to stop") -> Table:
    """The live view of ``xcronctl watch``: one row per watched job, sorted by id."""
    zone = local_zone_caption()
    table = _listing(f"xcron jobs (sequence {sequence})", f"{zone}; {caption}" if caption else zone)
    table.add_column("ID", style="bold", no_wrap=True)
    table.add_column("State", no_wrap=True)
    table.add_column("Progress", no_wrap=True)
    table.add_column("Status", min_width=10)
    table.add_column("Last start", min_width=10)
    table.add_column("Last finish", min_width=10)
    for job_id in sorted(statuses):
        status = statuses[job_id]
        progress = Table.grid(padding=(0, 1))
        if status.last_start_time is not None:
            bar = ProgressBar(total=1.0, completed=max(0.0, min(1.0, status.progress)), width=10)
            bar.complete_style = "cyan" if status.state is JobState.RUNNING else "green"
            progress.add_row(bar, Text(percent(status.progress), justify="right"))
        else:
            progress.add_row("-")
        table.add_row(
            Text(job_id),
            state_text(status.state),
            progress,
            Text(status.status_text),
            _short_time(status.last_start_time),
            _short_time(status.last_finish_time),
        )
    return table


# --- run --wait ---------------------------------------------------------------------------------------------


class RunProgress:
    """The live progress bar of ``xcronctl run --wait``: the job's progress and its status text."""

    def __init__(self, console: Console, job_id: str) -> None:
        self._progress = Progress(
            SpinnerColumn(finished_text="•"),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[status]}", markup=False),
            console=console,
            transient=False,
        )
        self._task: TaskID = self._progress.add_task(job_id, total=1.0, status="starting")

    def __enter__(self) -> RunProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def update(self, progress: float, status_text: str) -> None:
        self._progress.update(self._task, completed=max(0.0, min(1.0, progress)), status=status_text)

    def finish(self, execution: Execution) -> None:
        """Show the final state; a finished bar stops its spinner and clock."""
        self._progress.update(
            self._task,
            completed=max(0.0, min(1.0, execution.progress)),
            total=1.0,
            status=execution.status_text or execution.state.name,
        )
        self._progress.stop_task(self._task)


def run_summary(execution: Execution) -> Text:
    """The line ``run --wait`` ends with: state, job, time taken and the status text."""
    text = state_text(execution.state)
    text.append(f" {execution.job_id}", style="bold")
    took = run_time(execution)
    if took is not None:
        text.append(f" in {format_duration(took)}")
    if execution.status_text:
        text.append(f": {execution.status_text}")
    return text
