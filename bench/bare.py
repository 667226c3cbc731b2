"""The baseline: a bare grpc.aio server under JobService's method names with nothing behind them.

- GetJob and ListJobs answer a fixed response (the bytes xcron answered, read from a file), serialized
  per call like any server must.
- WatchJobs sends an empty snapshot, then every update to every stream through an unbounded
  per-stream queue (no coalescing, no bookkeeping).
- `/bench.Bare/Start` (JSON request) starts the update source on the same cadence as bench.jobs.

Run as `python -m bench.bare --listen 127.0.0.1:0 [--get-job FILE] [--list-jobs FILE]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypeAlias

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from bench.jobs import Cadence, job_id
from xcron.v1 import job_service_pb2 as pb

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]


class Bare:
    def __init__(self, get_job: pb.GetJobResponse, list_jobs: pb.ListJobsResponse) -> None:
        self._get_job = get_job
        self._list_jobs = list_jobs
        self._queues: set[asyncio.Queue[pb.WatchJobsResponse]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def get_job(self, request: pb.GetJobRequest, context: Context) -> pb.GetJobResponse:
        return self._get_job

    async def list_jobs(self, request: pb.ListJobsRequest, context: Context) -> pb.ListJobsResponse:
        return self._list_jobs

    async def watch_jobs(self, request: pb.WatchJobsRequest, context: Context) -> AsyncIterator[pb.WatchJobsResponse]:
        queue: asyncio.Queue[pb.WatchJobsResponse] = asyncio.Queue()
        self._queues.add(queue)
        try:
            yield pb.WatchJobsResponse(kind=pb.WATCH_EVENT_KIND_SNAPSHOT)
            while True:
                yield await queue.get()
        finally:
            self._queues.discard(queue)

    async def start(self, request: bytes, context: Context) -> bytes:
        params = json.loads(request)
        cadence = Cadence(params["start_ns"], params["tick_ns"], params["jobs"])
        task = asyncio.create_task(self._source(cadence, params["updates"]))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return b"{}"

    async def _source(self, cadence: Cadence, updates: int) -> None:
        started = Timestamp()
        started.FromNanoseconds(time.time_ns())
        executions = [str(uuid.uuid4()) for _ in range(cadence.jobs)]
        for n in range(cadence.jobs * updates):
            job, k = n % cadence.jobs, n // cadence.jobs + 1
            delay = (cadence.due_ns(job, k) - time.time_ns()) / 1e9
            if delay > 0:
                await asyncio.sleep(delay)
            status = pb.JobStatus(
                job_id=job_id(job),
                state=pb.JOB_STATE_RUNNING,
                progress=k / updates,
                status_text=f"{k} {time.time_ns()}",
                last_start_time=started,
                execution_id=executions[job],
                sequence=n + 1,
            )
            message = pb.WatchJobsResponse(kind=pb.WATCH_EVENT_KIND_CHANGES, statuses=[status], sequence=n + 1)
            for queue in self._queues:
                queue.put_nowait(message)


async def serve(listen: str, get_job: pb.GetJobResponse, list_jobs: pb.ListJobsResponse) -> None:
    bare = Bare(get_job, list_jobs)
    service = grpc.method_handlers_generic_handler(
        "xcron.v1.JobService",
        {
            "GetJob": grpc.unary_unary_rpc_method_handler(
                bare.get_job,
                request_deserializer=pb.GetJobRequest.FromString,
                response_serializer=pb.GetJobResponse.SerializeToString,
            ),
            "ListJobs": grpc.unary_unary_rpc_method_handler(
                bare.list_jobs,
                request_deserializer=pb.ListJobsRequest.FromString,
                response_serializer=pb.ListJobsResponse.SerializeToString,
            ),
            "WatchJobs": grpc.unary_stream_rpc_method_handler(
                bare.watch_jobs,
                request_deserializer=pb.WatchJobsRequest.FromString,
                response_serializer=pb.WatchJobsResponse.SerializeToString,
            ),
        },
    )
    control = grpc.method_handlers_generic_handler(
        "bench.Bare", {"Start": grpc.unary_unary_rpc_method_handler(bare.start)}
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((service, control))
    port = server.add_insecure_port(listen)
    await server.start()
    print(f"bare listening on {listen.rsplit(':', 1)[0]}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    await server.stop(grace=1.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--listen", default="127.0.0.1:0")
    p.add_argument("--get-job", type=Path, help="serialized GetJobResponse to answer")
    p.add_argument("--list-jobs", type=Path, help="serialized ListJobsResponse to answer")
    args = p.parse_args()
    get_job = pb.GetJobResponse.FromString(args.get_job.read_bytes()) if args.get_job else pb.GetJobResponse()
    list_jobs = pb.ListJobsResponse.FromString(args.list_jobs.read_bytes()) if args.list_jobs else pb.ListJobsResponse()
    asyncio.run(serve(args.listen, get_job, list_jobs))


if __name__ == "__main__":
    main()
