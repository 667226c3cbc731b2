"""RunJob throughput end to end: 3,000 runs of a no-op job, each followed to COMPLETED, after 500 not measured.

A client process keeps one WatchJobs stream over the 50 bench jobs and, per job, a closed loop:
RunJob, then wait until the stream shows that execution finished (a job runs at most once at a time,
so 50 jobs give 50 runs in flight). Targets: >= 500 runs/s, and (issue 16) >= 0.6x the calls/s of a
bare grpc.aio server answering unary GetJob calls with 16 in flight, measured in the same run (before
and after the runs, averaged). Both sides warm up first and are measured for about as long (the bare
server 0.5 s, then 1.5 s; the runs 500, then 3,000: ~1.2 s). Run: `python -m bench.runs [--quick]`.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench import clients
from bench.common import Report, RssSampler, Workers, bare_server, fmt_ms, parser, percentile, run_main, xcron_server
from bench.jobs import JOB_COUNT, job_id
from bench.rpc import Cell, capture, load, write_schedules

TARGET = 500.0
BARE_RATIO = 0.6
BARE_IN_FLIGHT = 16


def build_parser() -> argparse.ArgumentParser:
    p = parser(__doc__ or "")
    p.add_argument("--runs", type=int, default=None, help="runs measured (default 3000)")
    p.add_argument("--warmup-runs", type=int, default=None, help="runs before, not measured (default 500)")
    p.add_argument("--jobs", type=int, default=JOB_COUNT, help=f"jobs run in parallel (1..{JOB_COUNT})")
    return p


def bench(args: argparse.Namespace) -> Report:
    report = Report("runs", args.json)
    runs: int = args.runs or (50 if args.quick else 3000)
    warmup_runs: int = args.warmup_runs if args.warmup_runs is not None else (0 if args.quick else 500)
    jobs = [job_id(i) for i in range(max(1, min(JOB_COUNT, args.jobs)))]
    measure, warmup = (0.3, 0.1) if args.quick else (1.5, 0.5)
    with tempfile.TemporaryDirectory(prefix="xcron-bench-runs-") as tmp:
        folder = Path(tmp)
        (folder / "xcron").mkdir()
        write_schedules(folder / "xcron" / "xcron.xml")
        profile = args.profile / "runs-xcron.prof" if args.profile else None
        bare_cell = Cell()
        with (
            xcron_server(folder / "xcron", profile=profile) as xcron,
            Workers(clients.runs_worker, [(xcron.target, jobs)]) as worker,
            Workers(clients.rpc_worker, [()] * 2) as rpc_workers,
        ):
            get_job, list_jobs = capture(xcron.target, folder)
            with bare_server(folder / "bare", "--get-job", str(get_job), "--list-jobs", str(list_jobs)) as bare:
                load(rpc_workers, bare, "GetJob", BARE_IN_FLIGHT, warmup, measure, bare_cell)
                worker.receive(60)
                warmup_failed = 0
                if warmup_runs:
                    worker.send_all(warmup_runs)
                    (warm,) = worker.receive(warmup_runs / 10 + 120)
                    warmup_failed = warm["not_completed"]
                with RssSampler(xcron.pid) as sampler:
                    cpu_before = xcron.cpu_seconds()
                    worker.send_all(runs)
                    (answer,) = worker.receive(runs / 10 + 120)
                    cpu_per_run = (xcron.cpu_seconds() - cpu_before) / runs  # all its threads: less load-sensitive
                cpu = sampler.cpu_share(0, float("inf"))
                load(rpc_workers, bare, "GetJob", BARE_IN_FLIGHT, warmup, measure, bare_cell)
    rate = runs / answer["elapsed"]
    cpu_text = "n/a" if cpu != cpu else f"{cpu:.0%} of a core"
    latencies = answer["latencies"]
    report.row(
        "throughput",
        f"{runs} runs over {len(jobs)} jobs in {answer['elapsed']:.2f} s: {rate:.0f} runs/s "
        f"(RunJob to COMPLETED p50 {fmt_ms(percentile(latencies, 50))} p99 {fmt_ms(percentile(latencies, 99))}; "
        f"{answer['not_completed']} not COMPLETED, {warmup_failed} of the warm-up's; server CPU {cpu_text}, "
        f"{cpu_per_run * 1e6:.0f} us/run) (target >= {TARGET:.0f} runs/s)",
        rate >= TARGET and answer["not_completed"] == 0 and warmup_failed == 0,
        runs_per_s=rate,
        server_cpu_us_per_run=cpu_per_run * 1e6,
        p50_ms=percentile(latencies, 50) * 1000,
        p99_ms=percentile(latencies, 99) * 1000,
    )
    bare_rate = sum(bare_cell.rates) / len(bare_cell.rates)
    ratio = rate / bare_rate if bare_rate else 0.0
    report.row(
        "vs_bare_unary",
        f"RunJob to COMPLETED {rate:.0f} runs/s | bare grpc.aio unary GetJob, {BARE_IN_FLIGHT} in flight, same run: "
        f"{bare_rate:.0f} calls/s ({', '.join(f'{r:.0f}' for r in bare_cell.rates)}) | ratio {ratio:.2f}x "
        f"(target >= {BARE_RATIO}x)",
        None if args.quick else ratio >= BARE_RATIO,
        runs_per_s=rate,
        bare_calls_per_s=bare_rate,
        ratio=ratio,
    )
    return report


if __name__ == "__main__":
    run_main("runs", build_parser, bench)
