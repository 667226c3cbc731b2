"""Smoke tests of the benchmark scripts: each runs with --quick (tiny sizes) and prints its summary
lines. Targets and speed are not asserted: exit 0 (targets met) and 1 (a target missed) both pass,
an error (exit 3, a traceback) does not. The scripts run in parallel to keep this file short."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from requires import require

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 120

# script -> the rows it must print
EXPECTED = {
    "xml_file": ["xml.load", "xml.save", "xml.set_schedule_save"],
    "runs": ["runs.throughput"],
    "rpc": ["rpc.GetJob.inflight1", "rpc.ListJobs.inflight1", "rpc.GetJob.inflight4", "rpc.ListJobs.inflight4"],
    "watch": [
        "watch.moderate",
        "watch.heavy.latency",
        "watch.heavy.stalled",
        "watch.heavy.rss",
        "watch.storm.getjob",
    ],
    "scheduler": ["scheduler.idle", "scheduler.rate10", "scheduler.rate20"],
}


@pytest.fixture(scope="module")
def runs() -> Iterator[dict[str, subprocess.Popen[str]]]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    started = {
        script: subprocess.Popen(
            [sys.executable, "-m", f"bench.{script}", "--quick"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for script in EXPECTED
    }
    yield started
    for process in started.values():
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize("script", list(EXPECTED))
def test_script_runs_and_prints_its_summary(runs: dict[str, subprocess.Popen[str]], script: str) -> None:
    output, _ = runs[script].communicate(timeout=TIMEOUT)
    assert runs[script].returncode in (0, 1), output
    assert "Traceback" not in output, output
    for row in EXPECTED[script]:
        assert re.search(rf"^RESULT {re.escape(row)} (PASS|FAIL|INFO): \S", output, re.MULTILINE), output


def test_cluster_bench_runs_and_prints_its_summary() -> None:
    """bench.cluster needs a PostgreSQL it may create databases on (it makes two of its own and drops them)."""
    sys.path.insert(0, str(ROOT))
    from bench.cluster_sides import pg_unreachable

    reason = pg_unreachable()
    require(reason is None, f"a reachable PostgreSQL ({reason})")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    done = subprocess.run(
        [sys.executable, "-m", "bench.cluster", "--quick"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=TIMEOUT * 2,
    )
    assert done.returncode in (0, 1), done.stdout
    assert "Traceback" not in done.stdout, done.stdout
    for row in ("cluster.xcron.rate5", "cluster.procrastinate.rate5", "cluster.sustained", "cluster.exactly_once",
                "cluster.tx_per_occurrence", "cluster.idle"):  # fmt: skip
        assert re.search(rf"^RESULT {re.escape(row)} (PASS|FAIL|INFO): \S", done.stdout, re.MULTILINE), done.stdout
