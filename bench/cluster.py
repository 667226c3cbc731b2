"""A cluster on PostgreSQL: three xcron replicas against three procrastinate workers, same database server.

Both get N schedules firing every second (xcron: 1-second interval schedules on N no-op jobs; procrastinate:
N `@app.periodic(cron="* * * * * *")` registrations of one no-op task), all on the whole second, each side on
a database of its own. N steps up (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000 occurrences/s) until a step misses
an occurrence, runs one twice, or its p99 lateness (the job's code start - its occurrence) passes 100 ms.
Per side: the highest sustained rate, the database transactions per occurrence (pg_stat_database
xact_commit + xact_rollback of its database over the window / occurrences due in it), and idle transactions
per second (schedules loaded, nothing due). Exactly-once is checked in the database: each (schedule,
occurrence) one execution across the replicas. See bench.cluster_sides for how a step runs.
Targets (issue 16): xcron's sustained rate >= 1x procrastinate's; <= 2 transactions per occurrence.
Needs PostgreSQL (XCRON_BENCH_PG_DSN, default postgresql://postgres@127.0.0.1:5432/test; a user that may
create databases). Run: `python -m bench.cluster [--quick]`.
"""

from __future__ import annotations

import argparse
import math
import os

from bench.cluster_sides import (
    LATE_LIMIT,
    REPLICAS,
    Database,
    ProcrastinateSide,
    Step,
    Timing,
    XcronSide,
    pg_unreachable,
)
from bench.common import Report, fmt_ms, parser, percentile, run_main

RATES = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
MAX_TX_PER_OCCURRENCE = 2.0
RATE_RATIO = 1.0


def build_parser() -> argparse.ArgumentParser:
    p = parser(__doc__ or "")
    p.add_argument("--rates", type=int, nargs="+", default=None, help=f"occurrences/s, in order (default {RATES})")
    p.add_argument("--measure", type=int, default=None, help="seconds of occurrences measured per step (default 10)")
    p.add_argument("--idle", type=float, default=None, help="seconds of the idle window (default 20)")
    p.add_argument("--idle-schedules", type=int, default=None, help="schedules in the idle phase (default 100)")
    p.add_argument("--sides", nargs="+", choices=("xcron", "procrastinate"), default=["xcron", "procrastinate"])
    p.add_argument("--concurrency", type=int, default=50, help="procrastinate: jobs in parallel per worker")
    p.add_argument(
        "--margin",
        type=float,
        default=0.0,
        help="procrastinate: seconds its deferrer oversleeps each tick (shipped: 0.5, so never under 500 ms late)",
    )
    return p


def describe(step: Step) -> str:
    late = step.lateness
    return (
        f"p50 {fmt_ms(percentile(late, 50))} p99 {fmt_ms(step.p99)} max {fmt_ms(max(late, default=math.nan))}, "
        f"{step.missing} missing, {step.duplicates} run twice, {step.per_occurrence:.2f} tx/occurrence "
        f"({step.per_second:.0f} tx/s over {step.runs} runs in {step.seconds:.0f} s), load {step.load:.1f}"
    )


def best(steps: list[Step]) -> Step | None:
    """The highest step sustained (only steps below the first failure count)."""
    found = None
    for step in steps:
        if not step.sustained:
            break
        found = step
    return found


def bench(args: argparse.Namespace) -> Report:
    report = Report("cluster", args.json)
    reason = pg_unreachable()
    if reason is not None:
        raise RuntimeError(reason)
    quick = args.quick
    rates = args.rates or ([5, 10] if quick else list(RATES))
    measure = args.measure or (2 if quick else 10)
    timing = Timing(warmup=1.5 if quick else 3.0, measure=measure, settle=1.0 if quick else 2.0)
    idle_for = args.idle or (2.0 if quick else 20.0)
    idle_count = args.idle_schedules or (10 if quick else 100)
    tag = os.getpid()
    databases: list[Database] = []
    try:
        sides: list[XcronSide | ProcrastinateSide] = []
        if "xcron" in args.sides:
            databases.append(Database(f"xcron_bench_cluster_{tag}"))
            sides.append(XcronSide(databases[-1], args.profile))
        if "procrastinate" in args.sides:
            databases.append(Database(f"procrastinate_bench_cluster_{tag}"))
            sides.append(ProcrastinateSide(databases[-1], concurrency=args.concurrency, margin=args.margin))
        Report.note(
            f"{REPLICAS} xcron replicas | {REPLICAS} procrastinate workers (concurrency {args.concurrency}, "
            f"deferrer margin {args.margin:g} s); steps {rates}/s, {timing.measure} s each; sustained: 0 missing, "
            f"0 twice, p99 <= {fmt_ms(LATE_LIMIT)}"
        )
        # Idle first: it also measures what starting and stopping cost, which the steps leave out.
        idle = {side.name: side.idle(idle_count, idle_for, 2.0 if quick else 12.0) for side in sides}
        for name, side in zip(idle, sides, strict=True):
            Report.note(f"{name}: starting and stopping cost {side.overhead:.0f} transactions (left out of the steps)")
        steps: dict[str, list[Step]] = {side.name: [] for side in sides}
        for rate in rates:
            for side in sides:  # one after the other at each rate, so load on the machine hits both alike
                done = steps[side.name]
                if done and not done[-1].sustained:
                    continue
                step = side.step(rate, timing)
                done.append(step)
                report.row(
                    f"{side.name}.rate{rate}",
                    f"{side.name}, {rate} schedules every second: {describe(step)}",
                    None,
                    p99_ms=step.p99 * 1000,
                    missing=step.missing,
                    duplicates=step.duplicates,
                    tx_per_occurrence=step.per_occurrence,
                    load=step.load,
                )
            if all(s and not s[-1].sustained for s in steps.values()):
                break
        summarise(report, steps, idle, idle_count, quick)
    finally:
        for db in databases:
            db.close()
    return report


def summarise(
    report: Report, steps: dict[str, list[Step]], idle: dict[str, Step], idle_count: int, quick: bool
) -> None:
    x_steps, p_steps = steps.get("xcron", []), steps.get("procrastinate", [])
    x_best, p_best = best(x_steps), best(p_steps)
    x_rate = x_best.count if x_best else 0
    p_rate = p_best.count if p_best else 0
    if x_steps and p_steps:
        ratio = x_rate / p_rate if p_rate else math.inf
        report.row(
            "sustained",
            f"highest rate sustained: xcron {x_rate}/s | procrastinate {p_rate}/s | ratio {ratio:.2f}x "
            f"(target >= {RATE_RATIO:.0f}x)",
            None if quick else (x_rate > 0 and ratio >= RATE_RATIO),
            xcron_rate=x_rate,
            procrastinate_rate=p_rate,
            ratio=ratio,
        )
    if x_steps:
        twice = sum(s.duplicates for s in x_steps)
        report.row(
            "exactly_once",
            f"xcron: {twice} occurrence(s) run more than once across the replicas in "
            f"{sum(s.expected for s in x_steps)} due (checked in the database)",
            twice == 0,
            duplicates=twice,
        )
        at = x_best or x_steps[0]
        other = next((s for s in p_steps if s.count == at.count), None)
        theirs = f" | procrastinate {other.per_occurrence:.2f} at {other.count}/s" if other else ""
        report.row(
            "tx_per_occurrence",
            f"database transactions per occurrence: xcron {at.per_occurrence:.2f} at {at.count}/s "
            f"({x_steps[0].per_occurrence:.2f} at {x_steps[0].count}/s){theirs} "
            f"(target <= {MAX_TX_PER_OCCURRENCE:.0f})",
            None if quick else at.per_occurrence <= MAX_TX_PER_OCCURRENCE,
            xcron=at.per_occurrence,
            procrastinate=other.per_occurrence if other else math.nan,
        )
    text = " | ".join(f"{name} {s.per_second:.2f} tx/s" for name, s in idle.items())
    report.row(
        "idle",
        f"idle, {idle_count} schedules loaded, nothing due, {REPLICAS} processes each: {text}",
        None,
        **{f"{name}_tx_per_s": s.per_second for name, s in idle.items()},
    )


if __name__ == "__main__":
    run_main("cluster", build_parser, bench)
