"""GetJob and ListJobs (50 jobs) against a bare grpc.aio server answering the same bytes.

Both servers run in their own process; the clients run in two other processes (closed loops, raw
stubs), 1, 16 and 64 calls in flight. Target: xcron's throughput >= 0.7x the bare server's at every
concurrency. Run: `python -m bench.rpc [--quick] [--measure SECONDS]`.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc

from bench import clients
from bench.common import (
    Report,
    RssSampler,
    ServerProcess,
    Workers,
    bare_server,
    fmt_ms,
    parser,
    percentile,
    run_main,
    split,
    xcron_server,
)
from bench.jobs import JOBS
from xcron.server.core.model import IntervalSpec, Schedule
from xcron.server.stores.xcron_xml import ScheduleDocument, ScheduleEntry, save_schedule_file
from xcron.v1 import job_service_pb2 as pb
from xcron.v1 import job_service_pb2_grpc as pb_grpc

TARGET_RATIO = 0.7
METHODS = ("GetJob", "ListJobs")


def build_parser() -> argparse.ArgumentParser:
    p = parser(__doc__ or "")
    p.add_argument("--in-flight", type=int, nargs="+", default=None, help="concurrencies (default 1 16 64)")
    p.add_argument("--measure", type=float, default=None, help="seconds measured per round (default 1.5)")
    p.add_argument("--rounds", type=int, default=None, help="alternating rounds per server and cell (default 3)")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--warmup", type=float, default=None, help="seconds of warm-up per cell (default 0.5)")
    p.add_argument("--client-processes", type=int, default=2)
    return p


def write_schedules(path: Path) -> None:
    """One hourly schedule per job (first firing tomorrow), so GetJob shows next fire times."""
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    entries = tuple(
        ScheduleEntry(
            type_name=job.effective_type_name(),
            start_type="schedule",
            schedules=(Schedule(spec=IntervalSpec(every=timedelta(hours=1)), start=start, parameters={"updates": 0}),),
        )
        for job in JOBS
    )
    save_schedule_file(path, ScheduleDocument(entries), default_zone="UTC")


def capture(target: str, folder: Path) -> tuple[Path, Path]:
    """xcron's GetJob and ListJobs answers, for the bare server to give back."""
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.JobServiceStub(channel)
        get_job = stub.GetJob(pb.GetJobRequest(job_id=clients.RPC_JOB))
        list_jobs = stub.ListJobs(pb.ListJobsRequest())
    if len(list_jobs.jobs) != len(JOBS):
        raise RuntimeError(f"ListJobs answered {len(list_jobs.jobs)} jobs, expected {len(JOBS)}")
    (folder / "get_job.bin").write_bytes(get_job.SerializeToString())
    (folder / "list_jobs.bin").write_bytes(list_jobs.SerializeToString())
    return folder / "get_job.bin", folder / "list_jobs.bin"


@dataclass
class Cell:
    rates: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    size: int = 0
    calls: int = 0
    cpu: float = 0.0  # server CPU seconds over the measured windows

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)

    def text(self) -> str:
        spread = f" ({min(self.rates):.0f}..{max(self.rates):.0f})" if len(self.rates) > 1 else ""
        return (
            f"{self.rate:.0f}/s{spread} p50 {fmt_ms(percentile(self.latencies, 50))} "
            f"p99 {fmt_ms(percentile(self.latencies, 99))} server CPU {self.cpu_per_call * 1e6:.0f} us/call"
        )

    @property
    def cpu_per_call(self) -> float:
        return self.cpu / self.calls if self.calls else math.nan


def load(
    workers: Workers, server: ServerProcess, method: str, in_flight: int, warmup: float, measure: float, cell: Cell
) -> None:
    """One round: closed loops with `in_flight` calls in flight in all, spread over the client processes."""
    shares = split(in_flight, min(len(workers), in_flight))
    shares += [0] * (len(workers) - len(shares))
    workers.send_all(("prepare", server.target, method))
    cell.size = workers.receive(60)[0]
    start = time.time() + 0.2
    workers.send([("go", share, start, start + warmup, start + warmup + measure) for share in shares])
    with RssSampler(server.pid, interval=0.1) as sampler:
        latencies = [x for answer in workers.receive(warmup + measure + 60) for x in answer["latencies"]]
    cell.rates.append(len(latencies) / measure)
    cell.latencies += latencies
    cell.calls += len(latencies)
    cell.cpu += sampler.cpu_share(start + warmup, start + warmup + measure) * measure


def bench(args: argparse.Namespace) -> Report:
    report = Report("rpc", args.json)
    in_flight: list[int] = args.in_flight or ([1, 4] if args.quick else [1, 16, 64])
    measure: float = args.measure or (0.3 if args.quick else 1.5)
    rounds: int = args.rounds or (1 if args.quick else 3)
    warmup: float = args.warmup or (0.1 if args.quick else 0.5)
    with tempfile.TemporaryDirectory(prefix="xcron-bench-rpc-") as tmp:
        folder = Path(tmp)
        (folder / "xcron").mkdir()
        write_schedules(folder / "xcron" / "xcron.xml")
        profile = args.profile / "rpc-xcron.prof" if args.profile else None
        with (
            xcron_server(folder / "xcron", profile=profile) as xcron,
            Workers(clients.rpc_worker, [()] * args.client_processes) as workers,
        ):
            get_job, list_jobs = capture(xcron.target, folder)
            with bare_server(folder / "bare", "--get-job", str(get_job), "--list-jobs", str(list_jobs)) as bare:
                for n in in_flight:
                    for method in args.methods:
                        x, b = Cell(), Cell()
                        for _ in range(rounds):  # alternating, so drift on the machine hits both alike
                            load(workers, xcron, method, n, warmup, measure, x)
                            load(workers, bare, method, n, warmup, measure, b)
                        if x.size != b.size:
                            raise RuntimeError(f"response sizes differ: xcron {x.size} B, bare {b.size} B")
                        ratio = x.rate / b.rate if b.rate else 0.0
                        report.row(
                            f"{method}.inflight{n}",
                            f"xcron {x.text()} | bare {b.text()} | {x.size} B, median of {rounds} rounds | "
                            f"ratio {ratio:.2f}x (target >= {TARGET_RATIO}x)",
                            ratio >= TARGET_RATIO,
                            xcron_rps=x.rate,
                            xcron_p50_ms=percentile(x.latencies, 50) * 1000,
                            xcron_p99_ms=percentile(x.latencies, 99) * 1000,
                            bare_rps=b.rate,
                            bare_p50_ms=percentile(b.latencies, 50) * 1000,
                            bare_p99_ms=percentile(b.latencies, 99) * 1000,
                            bytes=x.size,
                            xcron_cpu_us_per_call=x.cpu_per_call * 1e6,
                            bare_cpu_us_per_call=b.cpu_per_call * 1e6,
                            ratio=ratio,
                        )
    return report


if __name__ == "__main__":
    run_main("rpc", build_parser, bench)
