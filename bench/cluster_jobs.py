"""The jobs of bench.cluster's xcron replicas (`--jobs bench.cluster_jobs`): XCRON_BENCH_CLUSTER_JOBS no-op
jobs, each noting how late its code started into a file of its replica's own.

Each run appends "<job index> <scheduled epoch s> <start epoch s>" to XCRON_BENCH_CLUSTER_OUT/<pid>.txt (one
write(2) per run, no buffering: the bench reads the files while the replicas still run).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from xcron.server.core.jobs import Job, JobContext

COUNT = int(os.environ.get("XCRON_BENCH_CLUSTER_JOBS", "0"))
_fd: int | None = None


def job_id(index: int) -> str:
    return f"bench.cl-{index:04d}"


def type_name(index: int) -> str:
    return f"Bench.Cluster{index:04d}, bench"


def _out() -> int:
    global _fd
    if _fd is None:
        folder = Path(os.environ.get("XCRON_BENCH_CLUSTER_OUT", "."))
        _fd = os.open(folder / f"{os.getpid()}.txt", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    return _fd


class ClusterJob(Job):
    """No-op apart from noting when its code started, against the occurrence it runs for."""

    description = "Cluster benchmark: records its own lateness."
    index = -1

    async def run(self, ctx: JobContext) -> None:
        started = time.time()
        if ctx.scheduled_time is not None:
            os.write(_out(), f"{self.index} {ctx.scheduled_time.timestamp():.6f} {started:.6f}\n".encode())


def _make(index: int) -> type[ClusterJob]:
    name = f"ClusterJob{index:04d}"
    return type(
        name,
        (ClusterJob,),
        {
            "id": job_id(index),
            "name": f"Cluster {index:04d}",
            "type_name": type_name(index),
            "index": index,
            "__qualname__": name,
        },
    )


JOBS: tuple[type[ClusterJob], ...] = tuple(_make(i) for i in range(COUNT))
# The registry collects the Job classes a module exports by name.
globals().update({job.__name__: job for job in JOBS})
