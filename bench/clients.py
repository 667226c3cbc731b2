"""Load generators. Each runs in its own process (bench.common.Workers), so the server under test never
shares an event loop or a GIL with its clients. They use the raw generated stub against xcron and the
bare baseline alike, so client-side costs are the same for both."""

from __future__ import annotations

import asyncio
import math
import time
from array import array
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, cast

import grpc

from bench.jobs import Cadence, job_index
from xcron.v1 import job_service_pb2 as pb
from xcron.v1 import job_service_pb2_grpc as pb_grpc

RPC_JOB = "bench.job-07"
# Separate connections per channel: channels to one target would otherwise share one subchannel.
_OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


def async_stub(channel: grpc.aio.Channel) -> pb_grpc.JobServiceAsyncStub:
    """The generated stub on an asyncio channel (the same class; its .pyi types the aio flavour apart)."""
    return cast("pb_grpc.JobServiceAsyncStub", pb_grpc.JobServiceStub(channel))


async def _recv(conn: Connection) -> Any:
    return await asyncio.to_thread(conn.recv)


# -- unary RPC load --------------------------------------------------------------------------------


def rpc_worker(conn: Connection) -> None:
    """Rounds of closed-loop unary calls. Messages: ("prepare", target, method) -> response size;
    ("go", in_flight, start, measure_from, end) -> {"latencies": [...]} for calls ending in the window."""
    asyncio.run(_rpc_worker(conn))


async def _rpc_worker(conn: Connection) -> None:
    channels: dict[str, grpc.aio.Channel] = {}
    call: Callable[[Any], Any] | None = None
    request: Any = None
    try:
        while (message := await _recv(conn)) is not None:
            if message[0] == "prepare":
                _, target, method = message
                if target not in channels:
                    channels[target] = grpc.aio.insecure_channel(target, options=_OWN_CONNECTION)
                stub = async_stub(channels[target])
                if method == "GetJob":
                    call, request = stub.GetJob, pb.GetJobRequest(job_id=RPC_JOB)
                else:
                    call, request = stub.ListJobs, pb.ListJobsRequest()
                for _ in range(20):  # connect and warm up
                    response = await call(request)
                conn.send(response.ByteSize())
            else:
                _, in_flight, start, measure_from, end = message
                assert call is not None
                conn.send({"latencies": await _closed_loop(call, request, in_flight, start, measure_from, end)})
    finally:
        for channel in channels.values():
            await channel.close()


async def _closed_loop(
    call: Callable[[Any], Any], request: Any, in_flight: int, start: float, measure_from: float, end: float
) -> array[float]:
    latencies: array[float] = array("d")

    async def one() -> None:
        await asyncio.sleep(max(0.0, start - time.time()))
        while True:
            t0 = time.perf_counter()
            await call(request)
            t1 = time.perf_counter()
            now = time.time()
            if now >= end:
                return
            if now >= measure_from:
                latencies.append(t1 - t0)

    await asyncio.gather(*(one() for _ in range(in_flight)))
    return latencies


# -- WatchJobs -------------------------------------------------------------------------------------


class _Deliveries:
    """Latency of every update each stream should see: received ones from their publish time; ones the
    server coalesced away from their estimated publish time (the successor's minus whole periods);
    ones never received by the end count as infinitely late."""

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self.cadence: Cadence | None = None
        self.record_from = 0
        self.record_to = 0
        self.due: array[int] = array("q")
        self.latency: array[float] = array("d")
        self.messages = 0
        self.statuses = 0
        self.coalesced = 0
        self.missing = 0
        self.last_seen: list[list[int]] = []
        # Per stream: [longest silence (ns) between messages inside the window, time of the last message].
        self.silences: list[list[int]] = []
        # (due, published - due) of the updates the first stream received: how late the server published.
        self.publish_lag: list[tuple[int, float]] = []

    def record(self, due_ns: int, latency_s: float) -> None:
        """One update's latency, kept when it was due inside the recording window."""
        if self.record_from <= due_ns <= self.record_to:
            self.due.append(due_ns)
            self.latency.append(latency_s)

    def finish(self) -> None:
        """Counts what each stream never received (due inside the window) as infinitely late."""
        cadence = self.cadence
        assert cadence is not None
        for last in self.last_seen:
            for job in range(self.jobs):
                first = cadence.last_k_before(job, self.record_from - 1) + 1
                for k in range(max(last[job] + 1, first), cadence.last_k_before(job, self.record_to) + 1):
                    self.missing += 1
                    self.record(cadence.due_ns(job, k), math.inf)


async def _watch_stream(stub: pb_grpc.JobServiceAsyncStub, deliveries: _Deliveries, ready: Callable[[], None]) -> None:
    last = [0] * deliveries.jobs
    deliveries.last_seen.append(last)
    silence = [0, 0]
    deliveries.silences.append(silence)
    sample_lag = len(deliveries.silences) == 1
    call = stub.WatchJobs(pb.WatchJobsRequest())
    first = True
    async for response in call:
        now = time.time_ns()
        if first:  # the snapshot
            first = False
            ready()
            continue
        cadence = deliveries.cadence
        if cadence is None:
            continue
        inside = now > deliveries.record_from
        if inside:
            deliveries.messages += 1
            deliveries.statuses += len(response.statuses)
            silence[0] = max(silence[0], now - max(silence[1], deliveries.record_from))
        silence[1] = now
        for status in response.statuses:
            k_text, _, published_text = status.status_text.partition(" ")
            if not k_text.isdigit() or not published_text.isdigit():
                continue  # "starting" and the like
            k, j = int(k_text), job_index(status.job_id)
            previous = last[j]
            if k <= previous:
                continue  # the final COMPLETED status repeats the last report
            published = int(published_text)
            for skipped in range(previous + 1, k):
                deliveries.coalesced += 1
                estimate = published - (k - skipped) * cadence.period_ns
                deliveries.record(cadence.due_ns(j, skipped), (now - estimate) / 1e9)
            due = cadence.due_ns(j, k)
            deliveries.record(due, (now - published) / 1e9)
            if sample_lag:
                deliveries.publish_lag.append((due, (published - due) / 1e9))
            last[j] = k


def watch_worker(conn: Connection) -> None:
    """Rounds of WatchJobs streams. Per round: {"target", "streams", "per_channel", "jobs"} opens the
    streams and answers "ready" once each got its first message; then {"cadence": (start_ns, tick_ns,
    jobs), "record": (from_ns, to_ns), "stop_ns": ns} answers the deliveries once stop_ns has passed."""
    asyncio.run(_watch_worker(conn))


async def _watch_worker(conn: Connection) -> None:
    while (setup := await _recv(conn)) is not None:
        conn.send(await _watch_round(conn, setup["target"], setup["streams"], setup["per_channel"], setup["jobs"]))


async def _watch_round(conn: Connection, target: str, streams: int, per_channel: int, jobs: int) -> dict[str, Any]:
    channels = [
        grpc.aio.insecure_channel(target, options=_OWN_CONNECTION) for _ in range(math.ceil(streams / per_channel))
    ]
    stubs = [async_stub(channel) for channel in channels]
    deliveries = _Deliveries(jobs)
    connected = 0
    all_connected = asyncio.Event()
    if not streams:
        all_connected.set()

    def ready() -> None:
        nonlocal connected
        connected += 1
        if connected == streams:
            all_connected.set()

    tasks = [asyncio.create_task(_watch_stream(stubs[i // per_channel], deliveries, ready)) for i in range(streams)]
    try:
        await asyncio.wait_for(all_connected.wait(), 120)
        conn.send("ready")
        go = await _recv(conn)
        deliveries.record_from, deliveries.record_to = go["record"]
        deliveries.cadence = Cadence(*go["cadence"])
        await asyncio.sleep(max(0.0, (go["stop_ns"] - time.time_ns()) / 1e9))
        failed = [t for t in tasks if t.done() and t.exception() is not None]
        if failed:
            raise RuntimeError(f"{len(failed)} streams failed") from failed[0].exception()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for channel in channels:
            await channel.close()
    deliveries.finish()
    return {
        "due": deliveries.due,
        "latency": deliveries.latency,
        "messages": deliveries.messages,
        "statuses": deliveries.statuses,
        "coalesced": deliveries.coalesced,
        "missing": deliveries.missing,
        "publish_lag": deliveries.publish_lag,
        "silences": [
            max(gap, deliveries.record_to - max(seen, deliveries.record_from)) for gap, seen in deliveries.silences
        ],
    }


def stalled_worker(conn: Connection) -> None:
    """A watcher that never reads. Per round: ("open", target, at_ns) opens a WatchJobs stream at that
    time and answers (the time) once the server sent its headers; it never reads a message and closes
    the stream on the next message ("close", answered with "closed")."""
    asyncio.run(_stalled_worker(conn))


async def _stalled_worker(conn: Connection) -> None:
    while (message := await _recv(conn)) is not None:
        _, target, at_ns = message
        await asyncio.sleep(max(0.0, (at_ns - time.time_ns()) / 1e9))
        async with grpc.aio.insecure_channel(target, options=_OWN_CONNECTION) as channel:
            call = async_stub(channel).WatchJobs(pb.WatchJobsRequest())
            await call.initial_metadata()
            conn.send(time.time_ns())
            await _recv(conn)
            call.cancel()
        conn.send("closed")


def storm_watch_worker(conn: Connection) -> None:
    """Watchers that read everything and count it. ("open", target, streams, per_channel) opens the
    streams and answers once each has its snapshot; ("close",) answers {"messages", "statuses"}."""
    asyncio.run(_storm_watch_worker(conn))


async def _storm_watch_worker(conn: Connection) -> None:
    while (message := await _recv(conn)) is not None:
        _, target, streams, per_channel = message
        conn.send(await _storm_round(conn, target, streams, per_channel))


async def _storm_round(conn: Connection, target: str, streams: int, per_channel: int) -> dict[str, int]:
    channels = [
        grpc.aio.insecure_channel(target, options=_OWN_CONNECTION) for _ in range(max(1, streams // per_channel))
    ]
    counts = {"messages": 0, "statuses": 0, "snapshots": 0}
    all_ready = asyncio.Event()

    async def read(stub: pb_grpc.JobServiceAsyncStub) -> None:
        first = True
        async for response in stub.WatchJobs(pb.WatchJobsRequest()):
            if first:
                first = False
                counts["snapshots"] += 1
                if counts["snapshots"] == streams:
                    all_ready.set()
                continue
            counts["messages"] += 1
            counts["statuses"] += len(response.statuses)

    tasks = [asyncio.create_task(read(async_stub(channels[i % len(channels)]))) for i in range(streams)]
    await asyncio.wait_for(all_ready.wait(), 120)
    conn.send("ready")
    await _recv(conn)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for channel in channels:
        await channel.close()
    return counts


# -- RunJob to COMPLETED ---------------------------------------------------------------------------


def runs_worker(conn: Connection, target: str, jobs: list[str]) -> None:
    """One WatchJobs stream over `jobs` plus one closed loop per job: RunJob, then wait until the stream
    shows that execution finished. Answers "ready", then, round after round, takes the number of runs and
    answers {"elapsed", "latencies", "not_completed"}; None ends it."""
    asyncio.run(_runs_worker(conn, target, jobs))


async def _runs_worker(conn: Connection, target: str, jobs: list[str]) -> None:
    loop = asyncio.get_running_loop()
    async with grpc.aio.insecure_channel(target) as channel:
        stub = async_stub(channel)
        waiting: dict[str, asyncio.Future[int]] = {}
        finished: dict[str, int] = {}  # seen before RunJob answered
        snapshot = asyncio.Event()

        async def read() -> None:
            async for response in stub.WatchJobs(pb.WatchJobsRequest(job_ids=jobs)):
                snapshot.set()
                for status in response.statuses:
                    if status.state in (pb.JOB_STATE_COMPLETED, pb.JOB_STATE_ABORTED, pb.JOB_STATE_CANCELLED):
                        future = waiting.pop(status.execution_id, None)
                        if future is not None:
                            future.set_result(status.state)
                        else:
                            finished[status.execution_id] = status.state

        reader = asyncio.create_task(read())
        await asyncio.wait_for(snapshot.wait(), 60)
        conn.send("ready")
        remaining = 0
        latencies: array[float] = array("d")
        not_completed = 0

        async def closed_loop(job: str) -> None:
            nonlocal remaining, not_completed
            while remaining > 0:
                remaining -= 1
                t0 = time.perf_counter()
                execution = (await stub.RunJob(pb.RunJobRequest(job_id=job))).execution.id
                if execution in finished:
                    state = finished.pop(execution)
                else:
                    waiting[execution] = future = loop.create_future()
                    state = await asyncio.wait_for(future, 60)
                latencies.append(time.perf_counter() - t0)
                not_completed += state != pb.JOB_STATE_COMPLETED

        while (total := await _recv(conn)) is not None:  # one round per message
            remaining, latencies, not_completed = total, array("d"), 0
            started = time.perf_counter()
            await asyncio.gather(*(closed_loop(job) for job in jobs))
            elapsed = time.perf_counter() - started
            conn.send({"elapsed": elapsed, "latencies": latencies, "not_completed": not_completed})
        reader.cancel()
