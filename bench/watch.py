"""WatchJobs delivery latency with 1,000 streams, against a bare grpc.aio server that streams every
update to every stream.

- moderate: 10 updates/s (across the 50 bench jobs). Target: xcron's p99 <= 1.5x the bare server's.
- heavy: 100 progress updates/s across 50 jobs, then one more watcher that never reads. Targets:
  every update seen by every watcher within 250 ms at p99, before and after the stalled watcher joins
  (it slows nobody: p99 with it <= 1.25x the p99 without, + 10 ms); server RSS flat after warm-up
  (growth <= 10 MiB from the end of warm-up to the end).

Updates come from xcron's own path: 50 running jobs calling ctx.report_progress on a fixed cadence,
with the publish time (ns) in the status text; the clients (two other processes) compute now - then.
An update the server coalesced away counts from its estimated publish time; one never received counts
as infinitely late.

- storm: 1,000 streams reading everything; GetJob p99 (one call in flight, from another process) with
  no storm, and while a job reports progress 20,000 times in a tight loop, run after run; 4 rounds of
  each, alternating, so that other load on the machine falls on both. Target: the p99 during the storm
  <= 2x the p99 without (progress is coalesced at the source, see core.progress).

Run: `python -m bench.watch [--quick] [--only moderate|heavy|storm]`.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
from bench.jobs import JOB_COUNT, Cadence, job_id
from bench.storm_jobs import STORM_JOB
from xcron.client import Client

MODERATE_RATIO = 1.5
HEAVY_P99 = 0.250
STALLED_FACTOR, STALLED_SLACK = 1.25, 0.010
RSS_GROWTH = 10 * 2**20
STORM_RATIO = 2.0
STORM_REPORTS = 20_000
STORM_ROUNDS = 4


def build_parser() -> argparse.ArgumentParser:
    p = parser(__doc__ or "")
    p.add_argument("--only", choices=("moderate", "heavy", "storm"), default=None)
    p.add_argument("--streams", type=int, default=None, help="watch streams (default 1000)")
    p.add_argument("--measure", type=float, default=None, help="seconds measured per phase (default 8 / 5)")
    p.add_argument("--client-processes", type=int, default=2)
    p.add_argument("--per-channel", type=int, default=100, help="streams per client connection")
    return p


@dataclass
class Scenario:
    name: str
    rate: float
    streams: int
    warmup: float
    measure: float
    stalled: bool = False
    settle: float = 1.0
    grace: float = 1.5
    lead: float = 4.0  # for the streams to connect


@dataclass
class Phase:
    name: str
    latencies: list[float]

    @property
    def p50(self) -> float:
        return percentile(self.latencies, 50)

    @property
    def p99(self) -> float:
        return percentile(self.latencies, 99)

    def text(self) -> str:
        return f"p50 {fmt_ms(self.p50)} p99 {fmt_ms(self.p99)} ({len(self.latencies)} deliveries)"


@dataclass
class Outcome:
    phases: list[Phase]
    messages: int
    statuses: int
    coalesced: int
    missing: int
    rss_start: int = 0
    rss_end: int = 0
    rss_peak: int = 0
    stalled_open: bool = False
    silences: list[float] = field(default_factory=list)
    server_cpu: float = math.nan
    notes: list[str] = field(default_factory=list)

    @property
    def p99(self) -> float:
        return percentile([x for phase in self.phases for x in phase.latencies], 99)


def start_source(server: ServerProcess, kind: str, cadence: Cadence, updates: int) -> None:
    if kind == "bare":
        with grpc.insecure_channel(server.target) as channel:
            start = channel.unary_unary("/bench.Bare/Start")
            params = {
                "start_ns": cadence.start_ns,
                "tick_ns": cadence.tick_ns,
                "jobs": cadence.jobs,
                "updates": updates,
            }
            start(json.dumps(params).encode(), timeout=30)
        return
    with Client(server.target, timeout=30) as client:
        for j in range(cadence.jobs):
            client.run_job(
                job_id(j),
                {
                    "updates": updates,
                    "period": cadence.period_ns / 1e9,
                    "start_ns": cadence.start_ns,
                    "offset": j * cadence.tick_ns / 1e9,
                },
            )


def run(
    server: ServerProcess, kind: str, scenario: Scenario, watchers: Workers, stalled: Workers, per_channel: int
) -> Outcome:
    """The update source starts first (on xcron, 50 RunJob calls, each a status that would otherwise
    go to every stream), the cadence `lead` seconds ahead; the streams connect meanwhile."""
    s = 1_000_000_000
    notes: list[str] = []
    cadence = Cadence(time.time_ns() + round(scenario.lead * s), round(1e9 / scenario.rate), JOB_COUNT)
    steady = (
        cadence.start_ns + round(scenario.warmup * s),
        cadence.start_ns + round((scenario.warmup + scenario.measure) * s),
    )
    windows = [("steady", steady)]
    if scenario.stalled:
        begin = steady[1] + round(scenario.settle * s)
        windows.append(("stalled", (begin, begin + round(scenario.measure * s))))
    record = (steady[0], windows[-1][1][1])
    stop_ns = record[1] + round(scenario.grace * s)
    updates = math.ceil((stop_ns - cadence.start_ns) / cadence.period_ns) + 1
    with RssSampler(server.pid) as rss:
        start_source(server, kind, cadence, updates)
        watchers.send(
            [
                {"target": server.target, "streams": n, "per_channel": per_channel, "jobs": JOB_COUNT}
                for n in split(scenario.streams, len(watchers))
            ]
        )
        watchers.receive(180)
        ready = time.time_ns()
        if ready > cadence.start_ns:
            notes.append(f"the streams were ready {(ready - cadence.start_ns) / s:.1f} s after the cadence began")
        watchers.send_all(
            {"cadence": (cadence.start_ns, cadence.tick_ns, cadence.jobs), "record": record, "stop_ns": stop_ns}
        )
        if scenario.stalled:
            stalled.send_all(("open", server.target, steady[1]))
        answers = watchers.receive((stop_ns - time.time_ns()) / s + 120)
        stalled_at = stalled.receive(30)[0] if scenario.stalled else 0
    if scenario.stalled:
        stalled.send_all("close")
        stalled.receive(30)
    seconds: dict[int, list[float]] = {}
    for answer in answers:
        for due, latency in zip(answer["due"], answer["latency"], strict=True):
            seconds.setdefault((due - record[0]) // s, []).append(latency)
    timeline = " ".join(fmt_ms(percentile(seconds[k], 99)).replace(" ", "") for k in sorted(seconds))
    lags: dict[int, list[float]] = {}
    for answer in answers:
        for due, lag in answer["publish_lag"]:
            if record[0] <= due <= record[1]:
                lags.setdefault((due - record[0]) // s, []).append(lag)
    lag_line = " ".join(fmt_ms(max(lags[k])).replace(" ", "") for k in sorted(lags))
    phases = []
    for name, (lo, hi) in windows:
        latencies = [
            latency
            for answer in answers
            for due, latency in zip(answer["due"], answer["latency"], strict=True)
            if lo <= due <= hi
        ]
        phases.append(Phase(name, latencies))
    outcome = Outcome(
        phases=phases,
        messages=sum(a["messages"] for a in answers),
        statuses=sum(a["statuses"] for a in answers),
        coalesced=sum(a["coalesced"] for a in answers),
        missing=sum(a["missing"] for a in answers),
        stalled_open=bool(stalled_at),
        silences=sorted(gap / s for a in answers for gap in a["silences"]),
        notes=[
            *notes,
            f"p99 latency per second of due time: {timeline}",
            f"longest publish lag (published - due, server side) per second: {lag_line}",
        ],
    )
    after_warmup = rss.between(steady[0] / s, steady[0] / s + 1.0)
    at_end = rss.between(record[1] / s - 1.0, record[1] / s)
    if after_warmup and at_end:
        outcome.rss_start = int(statistics.median(after_warmup))
        outcome.rss_end = int(statistics.median(at_end))
        outcome.rss_peak = max(r for _, r, _ in rss.samples)
    outcome.server_cpu = rss.cpu_share(record[0] / s, record[1] / s)
    expected = scenario.streams * sum(
        cadence.last_k_before(j, hi) - cadence.last_k_before(j, lo - 1)
        for _, (lo, hi) in windows
        for j in range(JOB_COUNT)
    )
    delivered = sum(len(p.latencies) for p in phases)
    if delivered != expected:
        outcome.notes.append(f"{delivered} deliveries accounted for, {expected} expected")
    return outcome


def summary(kind: str, outcome: Outcome) -> str:
    batch = outcome.statuses / outcome.messages if outcome.messages else 0.0
    return (
        f"{kind} "
        + " / ".join(f"{p.name} {p.text()}" for p in outcome.phases)
        + f"; {outcome.messages} messages after warm-up ({batch:.1f} statuses each), {outcome.coalesced} coalesced, "
        f"{outcome.missing} never received; longest silence of a stream p50 {fmt_ms(percentile(outcome.silences, 50))} "
        f"max {fmt_ms(max(outcome.silences, default=math.nan))}; server CPU {outcome.server_cpu:.0%} of a core"
    )


def _getjob_phase(rpc: Workers, warmup: float, measure: float) -> list[float]:
    start = time.time() + 0.2
    rpc.send_all(("go", 1, start, start + warmup, start + warmup + measure))
    return [x for answer in rpc.receive(warmup + measure + 60) for x in answer["latencies"]]


def storm(args: argparse.Namespace, report: Report, tmp: Path) -> None:
    """GetJob p99 with 1,000 watchers, without and during progress storms, in alternating rounds (quiet,
    storm, quiet, storm ...) so that whatever else the machine does falls on both sides alike."""
    quick = args.quick
    streams = args.streams or (5 if quick else 1000)
    rounds = 1 if quick else STORM_ROUNDS
    warmup, measure = (0.3, args.measure or 0.6) if quick else (0.5, (args.measure or 8.0) / rounds)
    count = 2_000 if quick else STORM_REPORTS
    processes = 1 if streams < 50 else args.client_processes
    profile = args.profile / "watch-storm-xcron.prof" if args.profile else None
    server = xcron_server(tmp / "storm-xcron", profile=profile, jobs=("bench.jobs", "bench.storm_jobs"))
    quiet: list[float] = []
    during: list[float] = []
    with (
        server,
        Workers(clients.storm_watch_worker, [()] * processes) as watchers,
        Workers(clients.rpc_worker, [()]) as rpc,
    ):
        watchers.send([("open", server.target, n, args.per_channel) for n in split(streams, processes)])
        watchers.receive(180)
        rpc.send_all(("prepare", server.target, "GetJob"))
        rpc.receive(60)
        with Client(server.target, timeout=60) as client:
            for _ in range(rounds):
                quiet += _getjob_phase(rpc, warmup, measure)
                execution = client.run_job(STORM_JOB, {"count": count, "bursts": 1_000_000})
                try:
                    during += _getjob_phase(rpc, warmup, measure)
                finally:
                    client.cancel_job(STORM_JOB)
                deadline = time.monotonic() + 120
                while not (ended := client.get_execution(execution.id)).finished and time.monotonic() < deadline:
                    time.sleep(0.05)
        watchers.send_all(("close",))
        counts = watchers.receive(60)
    p99_quiet, p99_storm = percentile(quiet, 99), percentile(during, 99)
    ratio = p99_storm / p99_quiet if p99_quiet else math.inf
    messages = sum(c["messages"] for c in counts)
    statuses = sum(c["statuses"] for c in counts)
    report.row(
        "storm.getjob",
        f"GetJob with {streams} watchers: no storm p50 {fmt_ms(percentile(quiet, 50))} p99 {fmt_ms(p99_quiet)} "
        f"({len(quiet)} calls); during storms p50 {fmt_ms(percentile(during, 50))} p99 {fmt_ms(p99_storm)} "
        f"({len(during)} calls; {rounds} rounds of each); storm: bursts of {count} reports until cancelled "
        f"({ended.state.name}, "
        f"{ended.status_text!r}); watchers got {messages} messages ({statuses} statuses) | "
        f"p99 ratio {ratio:.2f}x (target <= {STORM_RATIO}x)",
        ratio <= STORM_RATIO,
        quiet_p99_ms=p99_quiet * 1000,
        storm_p99_ms=p99_storm * 1000,
        ratio=ratio,
    )


def bench(args: argparse.Namespace) -> Report:
    report = Report("watch", args.json)
    quick = args.quick
    streams = args.streams or (5 if quick else 1000)
    scenarios = []
    short: dict[str, Any] = {"lead": 0.8, "grace": 0.5, "settle": 0.3} if quick else {}
    if args.only in (None, "moderate"):
        measure = args.measure or (0.6 if quick else 8.0)
        scenarios.append(Scenario("moderate", 10.0, streams, 0.3 if quick else 2.0, measure, **short))
    if args.only in (None, "heavy"):
        measure = args.measure or (0.6 if quick else 5.0)
        scenarios.append(Scenario("heavy", 100.0, streams, 0.3 if quick else 3.0, measure, stalled=True, **short))
    processes = 1 if streams < 50 else args.client_processes
    with (
        tempfile.TemporaryDirectory(prefix="xcron-bench-watch-") as tmp,
        Workers(clients.watch_worker, [()] * processes) as watchers,
        Workers(clients.stalled_worker, [()]) as stalled,
    ):
        if args.only in (None, "storm"):
            storm(args, report, Path(tmp))
        for scenario in scenarios:
            outcomes: dict[str, Outcome] = {}
            # The bare server's heavy run is a reference only; --quick skips it.
            kinds = ["xcron"] if quick and scenario.stalled else ["xcron", "bare"]
            for kind in kinds:
                folder = Path(tmp) / f"{scenario.name}-{kind}"
                if kind == "xcron":
                    profile = args.profile / f"watch-{scenario.name}-xcron.prof" if args.profile else None
                    server = xcron_server(folder, profile=profile)
                else:
                    server = bare_server(folder)
                with server:
                    outcomes[kind] = run(server, kind, scenario, watchers, stalled, args.per_channel)
                for note in outcomes[kind].notes:
                    report.note(f"{scenario.name} {kind}: {note}")
            x = outcomes["xcron"]
            bare = outcomes.get("bare")
            if scenario.name == "moderate":
                assert bare is not None
                ratio = x.p99 / bare.p99 if bare.p99 else math.inf
                report.row(
                    "moderate",
                    f"{summary('xcron', x)} | {summary('bare', bare)} | p99 ratio {ratio:.2f}x "
                    f"(target <= {MODERATE_RATIO}x)",
                    ratio <= MODERATE_RATIO,
                    xcron_p50_ms=x.phases[0].p50 * 1000,
                    xcron_p99_ms=x.p99 * 1000,
                    bare_p50_ms=bare.phases[0].p50 * 1000,
                    bare_p99_ms=bare.p99 * 1000,
                    ratio=ratio,
                )
                continue
            steady, with_stalled = x.phases
            reference = f" | {summary('bare', bare)}" if bare else ""
            report.row(
                "heavy.latency",
                f"{summary('xcron', x)}{reference} | p99 {fmt_ms(x.p99)} (target <= {fmt_ms(HEAVY_P99)})",
                x.p99 <= HEAVY_P99 and max(p.p99 for p in x.phases) <= HEAVY_P99,
                xcron_p50_ms=steady.p50 * 1000,
                xcron_p99_ms=x.p99 * 1000,
                bare_p99_ms=bare.p99 * 1000 if bare else math.nan,
            )
            limit = steady.p99 * STALLED_FACTOR + STALLED_SLACK
            report.row(
                "heavy.stalled",
                f"p99 without the stalled watcher {fmt_ms(steady.p99)}, with it {fmt_ms(with_stalled.p99)} "
                f"(target <= {STALLED_FACTOR}x + {fmt_ms(STALLED_SLACK)} = {fmt_ms(limit)}); "
                f"stalled stream open: {x.stalled_open}",
                x.stalled_open and math.isfinite(limit) and with_stalled.p99 <= limit,
                steady_p99_ms=steady.p99 * 1000,
                stalled_p99_ms=with_stalled.p99 * 1000,
            )
            growth = x.rss_end - x.rss_start
            bare_rss = f"; bare {(bare.rss_end - bare.rss_start) / 2**20:+.1f} MiB" if bare else ""
            report.row(
                "heavy.rss",
                f"xcron RSS {x.rss_start / 2**20:.1f} MiB after warm-up -> {x.rss_end / 2**20:.1f} MiB at the end "
                f"({growth / 2**20:+.1f} MiB, peak {x.rss_peak / 2**20:.1f} MiB){bare_rss} "
                f"(target growth <= {RSS_GROWTH / 2**20:.0f} MiB)",
                bool(x.rss_start) and growth <= RSS_GROWTH,
                rss_start_mib=x.rss_start / 2**20,
                rss_end_mib=x.rss_end / 2**20,
                growth_mib=growth / 2**20,
            )
    return report


if __name__ == "__main__":
    run_main("watch", build_parser, bench)
