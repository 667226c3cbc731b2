"""Watchers under load, against a real server process: 1,000 watchers and one that never reads.
The server's memory stays flat, every reading watcher sees the final state, and the stalled one
slows nobody."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import psutil

from xcron.v1 import job_service_pb2 as pb
from xcron.v1 import job_service_pb2_grpc as pb_grpc

WATCHERS = 1000
CHANNELS = 10
MiB = 1024 * 1024


class Completions:
    """Counts, per execution, how many watchers have seen it COMPLETED; tests await a count."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.changed = asyncio.Condition()

    async def saw(self, execution_id: str) -> None:
        async with self.changed:
            self.counts[execution_id] = self.counts.get(execution_id, 0) + 1
            self.changed.notify_all()

    async def wait(self, execution_id: str, watchers: int) -> None:
        async with asyncio.timeout(120), self.changed:
            await self.changed.wait_for(lambda: self.counts.get(execution_id, 0) >= watchers)


async def follow(stub: pb_grpc.JobServiceStub, ready: asyncio.Event, completions: Completions) -> None:
    """Reads a watch stream, reporting each test.spam execution it sees COMPLETED."""
    call = stub.WatchJobs(pb.WatchJobsRequest(job_ids=["test.spam"]))
    async for message in call:
        ready.set()
        for status in message.statuses:
            if status.state == pb.JOB_STATE_COMPLETED:
                await completions.saw(status.execution_id)


async def run_spam(stub: pb_grpc.JobServiceStub, count: int) -> str:
    response = await stub.RunJob(
        pb.RunJobRequest(job_id="test.spam", parameters={"count": pb.ParameterValue(int_value=count)})
    )
    return str(response.execution.id)


async def test_thousand_watchers_and_a_stalled_one_keep_memory_flat(server: Any) -> None:
    process = psutil.Process(server.process.pid)
    channels = [grpc.aio.insecure_channel(server.target) for _ in range(CHANNELS)]
    stubs = [pb_grpc.JobServiceStub(c) for c in channels]
    stalled = stubs[0].WatchJobs(pb.WatchJobsRequest())  # opened, never read
    completions = Completions()
    readies = [asyncio.Event() for _ in range(WATCHERS)]
    tasks = [asyncio.create_task(follow(stubs[i % CHANNELS], readies[i], completions)) for i in range(WATCHERS)]
    try:
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 60)
        warm = await run_spam(stubs[1], 10_000)  # warm-up: allocate what steady state needs
        await completions.wait(warm, WATCHERS)
        baseline = process.memory_info().rss
        for _ in range(3):
            execution_id = await run_spam(stubs[1], 10_000)
            await completions.wait(execution_id, WATCHERS)
        grown = process.memory_info().rss - baseline
        assert grown < 20 * MiB, f"server RSS grew by {grown / MiB:.1f} MiB after warm-up"
        # The stalled watcher holds no backlog that blocks the server: it still answers at once.
        job = await stubs[2].GetJob(pb.GetJobRequest(job_id="test.spam"), timeout=10)
        assert job.job.state == pb.JOB_STATE_COMPLETED and job.job.progress == 1.0
    finally:
        stalled.cancel()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for channel in channels:
            await channel.close()
