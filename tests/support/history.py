"""The history the cluster fault tests record (`test.record` appends a JSON line when a run really starts
and when it really ends, on whichever replica), and a checker over it."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Run:
    execution_id: str
    job_id: str
    pid: int
    scheduled: str | None
    start: float
    end: float | None = None
    how: str = ""


def load(path: Path) -> dict[str, Run]:
    runs: dict[str, Run] = {}
    if not path.exists():
        return runs
    for line in path.read_text().splitlines():
        event = json.loads(line)
        if event["event"] == "start":
            runs[event["execution_id"]] = Run(
                event["execution_id"], event["job_id"], event["pid"], event["scheduled"], event["t"]
            )
        else:
            run = runs[event["execution_id"]]
            run.end, run.how = event["t"], event["how"]
    return runs


def started(path: Path, execution_id: str) -> bool:
    return execution_id in load(path)


def ended(path: Path, execution_id: str) -> bool:
    run = load(path).get(execution_id)
    return run is not None and run.end is not None


def overlap(first: Run, second: Run) -> float:
    """Seconds during which both runs really executed (0 when they did not overlap)."""
    assert first.end is not None and second.end is not None
    return max(0.0, min(first.end, second.end) - max(first.start, second.start))


@dataclass
class Verdict:
    runs: int
    max_overlap: float


def check(runs: dict[str, Run], *, overlap_allowed: float) -> Verdict:
    """Every run ended; every scheduled occurrence ran at most once; no two runs of one job overlapped by
    more than `overlap_allowed` seconds. Returns the largest overlap seen (a measurement, for the README)."""
    unfinished = [r.execution_id for r in runs.values() if r.end is None]
    assert not unfinished, f"runs never ended: {unfinished}"
    occurrences = [(r.job_id, r.scheduled) for r in runs.values() if r.scheduled is not None]
    repeated = {o for o in occurrences if occurrences.count(o) > 1}
    assert not repeated, f"occurrences that ran more than once: {sorted(map(str, repeated))}"
    worst = 0.0
    by_job = sorted(runs.values(), key=lambda r: (r.job_id, r.start))
    for _, group in itertools.groupby(by_job, key=lambda r: r.job_id):
        for first, second in itertools.combinations(list(group), 2):
            both = overlap(first, second)
            worst = max(worst, both)
            assert both <= overlap_allowed, (
                f"runs {first.execution_id} (pid {first.pid}) and {second.execution_id} (pid {second.pid}) of "
                f"{first.job_id} overlapped {both:.3f} s, more than the allowed {overlap_allowed:.3f} s"
            )
    return Verdict(runs=len(runs), max_overlap=worst)
