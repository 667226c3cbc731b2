"""WatchJobs resume as a JavaScript client does it: int64 read as a Number (a double), against a real server."""

from __future__ import annotations

from typing import Any

import grpc

from xcron.client import Client
from xcron.v1 import job_service_pb2 as pb
from xcron.v1 import job_service_pb2_grpc as pb_grpc

MAX_SAFE_INTEGER = 2**53 - 1  # JavaScript's Number.MAX_SAFE_INTEGER


def as_javascript_reads_it(value: int) -> int:
    return int(float(value))  # @grpc/proto-loader with longs: Number


def test_resume_with_a_number_read_as_a_double_replays_the_changes(server: Any) -> None:
    with grpc.insecure_channel(server.target) as channel, Client(server.target, timeout=20) as client:
        stub = pb_grpc.JobServiceStub(channel)
        watch = stub.WatchJobs(pb.WatchJobsRequest(job_ids=["test.tick"]), timeout=30)
        snapshot = next(watch)
        watch.cancel()
        assert snapshot.kind == pb.WATCH_EVENT_KIND_SNAPSHOT
        assert 0 < snapshot.sequence <= MAX_SAFE_INTEGER
        run = client.run_and_wait("test.tick", timeout=20)

        resumed = stub.WatchJobs(
            pb.WatchJobsRequest(job_ids=["test.tick"], after_sequence=as_javascript_reads_it(snapshot.sequence)),
            timeout=30,
        )
        changes = next(resumed)
        resumed.cancel()
        assert changes.kind == pb.WATCH_EVENT_KIND_CHANGES  # not a fresh snapshot: the number was exact
        assert [(s.job_id, s.execution_id, s.state) for s in changes.statuses] == [
            ("test.tick", run.id, pb.JOB_STATE_COMPLETED)
        ]
        assert all(s.sequence <= MAX_SAFE_INTEGER for s in changes.statuses)

        # Resuming with the latest number: nothing is sent until something changes (no empty CHANGES).
        caught_up = stub.WatchJobs(
            pb.WatchJobsRequest(job_ids=["test.tick"], after_sequence=as_javascript_reads_it(changes.sequence)),
            timeout=30,
        )
        second = client.run_and_wait("test.tick", timeout=20)
        first_message = next(caught_up)
        caught_up.cancel()
        assert first_message.kind == pb.WATCH_EVENT_KIND_CHANGES
        assert first_message.statuses and {s.execution_id for s in first_message.statuses} == {second.id}
