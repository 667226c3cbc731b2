"""Interceptors wrap a method's handler once and reuse it (wrapping.WrappedHandlers), and that reuse keeps
every call's own outcome: behind the metrics counter, an auth refusal and an accepted call of the same method
alternate, each counted under its own code, and a malformed request still gets INVALID_ARGUMENT. Without auth
the counter and the decode guard wrap each handler once at registration (WrappingRegistrar, no interceptor):
same outcomes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import grpc
import pytest
from core_harness import Harness

from xcron.server.api.auth import AuthInterceptor, hash_token, parse_token_lines
from xcron.server.api.decode import DecodeGuard, guard_decoding
from xcron.server.api.servicer import WATCH_JOBS, Servicer, add_to_server
from xcron.server.api.wrapping import WrappedHandlers, WrappingRegistrar
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
    add_to_server(Servicer(manager), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield pb_grpc.JobServiceStub(channel), channel, metrics
    finally:
        await server.stop(None)


def _count(metrics: Metrics, code: str, method: str = GET_JOB) -> float:
    return metrics.registry.get_sample_value("xcron_rpcs_total", {"method": method, "code": code}) or 0.0


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


async def _job_id(request: pb.GetJobRequest, context: object) -> bytes:
    return request.job_id.encode()


async def test_without_auth_handlers_wrapped_at_registration_count_and_guard_decoding(harness: Harness) -> None:
    """The server's own set-up without auth: no interceptor; registered methods (the generated code's fast
    path) and generic handlers both come out counted and decode-guarded; an unknown method is not counted."""
    manager = await harness.start()
    metrics = Metrics()
    server = grpc.aio.server()
    registrar = WrappingRegistrar(server, metrics.handler_wrap(guard_decoding))
    add_to_server(Servicer(manager), registrar)
    echo = grpc.unary_unary_rpc_method_handler(_job_id, pb.GetJobRequest.FromString, lambda data: data)
    registrar.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", {"JobId": echo}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.JobServiceStub(channel)
            for _ in range(2):
                assert (await stub.GetJob(pb.GetJobRequest(job_id="t.tick"))).job.id == "t.tick"
            echo_call = channel.unary_unary("/test.Echo/JobId", request_serializer=None, response_deserializer=None)
            assert await echo_call(pb.GetJobRequest(job_id="abc").SerializeToString()) == b"abc"
            for method in (f"/{GET_JOB}", "/test.Echo/JobId"):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await channel.unary_unary(method, request_serializer=None)(b"\x0a\xff\xff\xff")
                assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT, method
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await channel.unary_unary("/test.Echo/Nothing", request_serializer=None)(b"")
            assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED
            stream = stub.WatchJobs(pb.WatchJobsRequest(job_ids=["t.tick"]))
            assert [s.job_id for s in (await stream.read()).statuses] == ["t.tick"]
            stream.cancel()
    finally:
        await server.stop(None)
    assert (_count(metrics, "OK"), _count(metrics, "INVALID_ARGUMENT")) == (2.0, 1.0)
    echoed = "test.Echo/JobId"
    assert (_count(metrics, "OK", echoed), _count(metrics, "INVALID_ARGUMENT", echoed)) == (1.0, 1.0)
    assert _count(metrics, "UNIMPLEMENTED", "test.Echo/Nothing") == 0.0


class _Capturing:
    """A registrar that keeps what services register, to look at the handlers."""

    def __init__(self) -> None:
        self.generic: list[grpc.GenericRpcHandler] = []
        self.registered: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler], /) -> None:
        self.generic.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler], /) -> None:
        self.registered.update({f"/{service}/{name}": handler for name, handler in handlers.items()})


class _Details(grpc.HandlerCallDetails):  # type: ignore[misc]
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


async def test_watch_jobs_sends_its_encoded_messages_as_they_are_on_both_registration_paths(harness: Harness) -> None:
    """WatchJobs yields WatchJobsResponse's bytes: its serializer passes bytes on and still serializes a message,
    through the generated generic handler and through the one its registered methods became; other methods
    keep the generated serializer."""
    manager = await harness.start()
    captured = _Capturing()
    add_to_server(Servicer(manager), captured)
    assert captured.registered == {}  # served by generic handlers only
    generated, from_registered = captured.generic
    message = pb.WatchJobsResponse(kind=pb.WATCH_EVENT_KIND_CHANGES, sequence=7)
    for generic in (generated, from_registered):
        handler = generic.service(_Details(WATCH_JOBS))
        assert handler.response_serializer(b"\x08\x02") == b"\x08\x02"
        assert handler.response_serializer(message) == message.SerializeToString()
        get_job = generic.service(_Details(f"/{GET_JOB}"))
        assert get_job.response_serializer is pb.GetJobResponse.SerializeToString


@pytest.mark.parametrize("wrapped", [False, True], ids=["plain", "wrapped"])
def test_registered_methods_are_served_by_a_generic_handler(wrapped: bool) -> None:
    """grpc.aio waits on one pending request per registered method for every call it accepts, so the registrar
    turns a service's registered methods into a generic handler serving the same handlers (wrapped alike)."""
    captured = _Capturing()
    seen: list[str] = []

    def wrap(method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        seen.append(method)
        return handler

    registrar = WrappingRegistrar(captured, wrap if wrapped else None)
    a, b = _handler(), _handler()
    registrar.add_registered_method_handlers("test.S", {"A": a, "B": b})
    assert captured.registered == {}
    (generic,) = captured.generic
    assert generic.service(_Details("/test.S/A")) is a and generic.service(_Details("/test.S/B")) is b
    assert generic.service(_Details("/test.S/C")) is None
    assert seen == (["/test.S/A", "/test.S/B"] if wrapped else [])
