"""RunJob throughput end to end: 1,000 runs of a no-op job, each followed to COMPLETED.

A client process keeps one WatchJobs stream over the 50 bench jobs and, per job, a closed loop:
RunJob, then wait until the stream shows that execution finished (a job runs at most once at a time,
so 50 jobs give 50 runs in flight). Target: >= 500 runs/s. Run: `python -m bench.runs [--quick]`.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench import clients
from bench.common import Report, RssSampler, Workers, fmt_ms, parser, percentile, run_main, xcron_server
from bench.jobs import JOB_COUNT, job_id

TARGET = 500.0


def build_parser() -> argparse.ArgumentParser:
    p = parser(__doc__ or "")
    p.add_argument("--runs", type=int, default=None, help="runs in all (default 1000)")
    p.add_argument("--jobs", type=int, default=JOB_COUNT, help=f"jobs run in parallel (1..{JOB_COUNT})")
    return p


def bench(args: argparse.Namespace) -> Report:
    report = Report("runs", args.json)
    runs: int = args.runs or (50 if args.quick else 1000)
    jobs = [job_id(i) for i in range(max(1, min(JOB_COUNT, args.jobs)))]
    with tempfile.TemporaryDirectory(prefix="xcron-bench-runs-") as tmp:
        profile = args.profile / "runs-xcron.prof" if args.profile else None
        with (
            xcron_server(Path(tmp), profile=profile) as xcron,
            Workers(clients.runs_worker, [(xcron.target, jobs)]) as worker,
        ):
            worker.receive(60)
            with RssSampler(xcron.pid) as sampler:
                worker.send_all(runs)
                (answer,) = worker.receive(runs / 10 + 120)
            cpu = sampler.cpu_share(0, float("inf"))
    rate = runs / answer["elapsed"]
    cpu_text = "n/a" if cpu != cpu else f"{cpu:.0%} of a core"
    latencies = answer["latencies"]
    report.row(
        "throughput",
        f"{runs} runs over {len(jobs)} jobs in {answer['elapsed']:.2f} s: {rate:.0f} runs/s "
        f"(RunJob to COMPLETED p50 {fmt_ms(percentile(latencies, 50))} p99 {fmt_ms(percentile(latencies, 99))}; "
        f"{answer['not_completed']} not COMPLETED; server CPU {cpu_text}) (target >= {TARGET:.0f} runs/s)",
        rate >= TARGET and answer["not_completed"] == 0,
        runs_per_s=rate,
        p50_ms=percentile(latencies, 50) * 1000,
        p99_ms=percentile(latencies, 99) * 1000,
    )
    return report


if __name__ == "__main__":
    run_main("runs", build_parser, bench)
