"""Interceptors wrap a method's handler once and reuse it (wrapping.WrappedHandlers), and that reuse keeps
every call's own outcome: behind the metrics counter, an auth refusal and an accepted call of the same method
alternate, each counted under its own code, and a malformed request still gets INVALID_ARGUMENT. Without auth
the counter does the decode guard's wrapping itself (one interceptor): same outcomes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from core_harness import Harness

from xcron.server.api.auth import AuthInterceptor, hash_token, parse_token_lines
from xcron.server.api.decode import DecodeGuard, guard_decoding
from xcron.server.api.servicer import Servicer
from xcron.server.api.wrapping import WrappedHandlers
from xcron.server.metrics import Metrics
from xcron.v1 import job_service_pb2 as pb
from xcron.v1 import job_service_pb2_grpc as pb_grpc

READER = "reader-token-0123456789"
GET_JOB = "xcron.v1.JobService/GetJob"


async def _behaviour(request: bytes, context: object) -> bytes:
    return request


def _handler() -> grpc.RpcMethodHandler:
    return grpc.unary_unary_rpc_method_handler(_behaviour)


def test_a_method_is_wrapped_once_while_its_handler_stays_the_same() -> None:
    wrapped: list[str] = []

    def wrap(method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        wrapped.append(method)
        return _handler()

    kept = WrappedHandlers(wrap)
    a, b = _handler(), _handler()
    first = kept.get("/s/A", a)
    assert kept.get("/s/A", a) is first and wrapped == ["/s/A"]
    assert kept.get("/s/B", b) is not first and wrapped == ["/s/A", "/s/B"]


def test_another_handler_for_a_method_is_wrapped_for_its_call_and_then_kept() -> None:
    calls: list[grpc.RpcMethodHandler] = []

    def wrap(method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        calls.append(handler)
        return _handler()

    kept = WrappedHandlers(wrap)
    usual, refusing = _handler(), _handler()
    for_usual = kept.get("/s/A", usual)
    for_refusing = kept.get("/s/A", refusing)
    assert for_refusing is not for_usual and calls == [usual, refusing]
    assert kept.get("/s/A", refusing) is for_refusing  # the latest is kept
    assert kept.get("/s/A", usual) is not for_usual and calls == [usual, refusing, usual]  # wrapped again


@pytest.fixture
async def counted(harness: Harness) -> AsyncIterator[tuple[pb_grpc.JobServiceStub, grpc.aio.Channel, Metrics]]:
    manager = await harness.start()
    metrics = Metrics()
    tokens = parse_token_lines([f"alice read {hash_token(READER)}"])
    server = grpc.aio.server(interceptors=[metrics.interceptor(), AuthInterceptor(tokens), DecodeGuard()])
    pb_grpc.add_JobServiceServicer_to_server(Servicer(manager), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield pb_grpc.JobServiceStub(channel), channel, metrics
    finally:
        await server.stop(None)


def _count(metrics: Metrics, code: str) -> float:
    return metrics.registry.get_sample_value("xcron_rpcs_total", {"method": GET_JOB, "code": code}) or 0.0


async def test_refused_and_accepted_calls_of_one_method_alternate_each_with_its_outcome(
    counted: tuple[pb_grpc.JobServiceStub, grpc.aio.Channel, Metrics],
) -> None:
    stub, channel, metrics = counted
    request = pb.GetJobRequest(job_id="t.tick")
    for _ in range(2):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetJob(request)  # no token
        assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert (await stub.GetJob(request, metadata=(("authorization", f"Bearer {READER}"),))).job.id == "t.tick"
    raw = channel.unary_unary(f"/{GET_JOB}", request_serializer=None)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await raw(b"\x0a\xff\xff\xff", metadata=(("authorization", f"Bearer {READER}"),))
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (_count(metrics, "OK"), _count(metrics, "UNAUTHENTICATED"), _count(metrics, "INVALID_ARGUMENT")) == (
        2.0,
        2.0,
        1.0,
    )


async def test_without_auth_one_interceptor_counts_and_guards_decoding(harness: Harness) -> None:
    manager = await harness.start()
    metrics = Metrics()
    server = grpc.aio.server(interceptors=[metrics.interceptor(guard_decoding)])
    pb_grpc.add_JobServiceServicer_to_server(Servicer(manager), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.JobServiceStub(channel)
            for _ in range(2):
                assert (await stub.GetJob(pb.GetJobRequest(job_id="t.tick"))).job.id == "t.tick"
            raw = channel.unary_unary(f"/{GET_JOB}", request_serializer=None)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await raw(b"\x0a\xff\xff\xff")
            assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            stream = stub.WatchJobs(pb.WatchJobsRequest(job_ids=["t.tick"]))
            assert [s.job_id for s in (await stream.read()).statuses] == ["t.tick"]
            stream.cancel()
    finally:
        await server.stop(None)
    assert (_count(metrics, "OK"), _count(metrics, "INVALID_ARGUMENT")) == (2.0, 1.0)
