"""The gRPC adapter in-process: the servicer over the core harness's manager, behind the decode guard and the
auth interceptor, on a grpc.aio server bound to loopback port 0 inside the test's event loop. Checks what the
adapter adds to the handlers: error -> status mapping with google.rpc details, undecodable requests, auth,
and the principal reaching the handlers' CallContext."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from core_harness import Harness
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from xcron.server.api.auth import AuthInterceptor, hash_token, parse_token_lines
from xcron.server.api.decode import DecodeGuard
from xcron.server.api.handlers import CallContext
from xcron.server.api.servicer import Servicer, add_to_server
from xcron.v1 import job_service_pb2 as pb
from xcron.v1 import job_service_pb2_grpc as pb_grpc

READER = "reader-token-0123456789"
RUNNER = "runner-token-0123456789"


class Served:
    def __init__(self, channel: grpc.aio.Channel, servicer: Servicer) -> None:
        self.channel = channel
        self.stub = pb_grpc.JobServiceStub(channel)
        self.servicer = servicer


@pytest.fixture
async def served(harness: Harness) -> AsyncIterator[Served]:
    manager = await harness.start()
    tokens = parse_token_lines([f"alice read {hash_token(READER)}", f"bob read,run {hash_token(RUNNER)}"])
    server = grpc.aio.server(interceptors=[AuthInterceptor(tokens), DecodeGuard()])
    servicer = Servicer(manager)
    add_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield Served(channel, servicer)
    finally:
        await server.stop(None)


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def details(error: grpc.aio.AioRpcError) -> tuple[error_details_pb2.ErrorInfo, list[str]]:
    status = rpc_status.from_call(error)
    assert status is not None, "a rich status is sent"
    info, fields = error_details_pb2.ErrorInfo(), []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields += [v.field for v in bad.field_violations]
    return info, fields


async def test_core_errors_become_statuses_with_details(served: Served) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await served.stub.GetJob(pb.GetJobRequest(job_id="no.such.job"), metadata=bearer(READER))
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    info, _ = details(caught.value)
    assert info.reason == "NOT_FOUND" and info.domain == "xcron.dev"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await served.stub.GetJob(pb.GetJobRequest(job_id=""), metadata=bearer(READER))
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert details(caught.value)[1] == ["job_id"]


async def test_an_undecodable_request_is_invalid_argument(served: Served) -> None:
    raw = served.channel.unary_unary("/xcron.v1.JobService/GetJob", request_serializer=None)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await raw(b"\x0a\xff\xff\xff", metadata=bearer(READER))  # a length past the end
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert details(caught.value)[0].reason == "MALFORMED_REQUEST"


async def test_auth_refusals_carry_reason_and_role(served: Served) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await served.stub.ListJobs(pb.ListJobsRequest())
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert details(caught.value)[0].reason == "UNAUTHENTICATED"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await served.stub.RunJob(pb.RunJobRequest(job_id="t.tick"), metadata=bearer(READER))
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    info, _ = details(caught.value)
    assert info.reason == "PERMISSION_DENIED" and info.metadata["required_role"] == "run"


async def test_the_principal_and_peer_reach_the_handlers(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[CallContext] = []
    real = served.servicer.handlers.get_job

    async def spy(request: pb.GetJobRequest, call: CallContext) -> Any:
        seen.append(call)
        return await real(request, call)

    monkeypatch.setattr(served.servicer.handlers, "get_job", spy)
    await served.stub.GetJob(pb.GetJobRequest(job_id="t.tick"), metadata=bearer(RUNNER), timeout=30)
    (call,) = seen
    assert call.principal == "bob" and call.peer.startswith("ipv4:127.0.0.1:")
    assert call.deadline is not None and 25 < call.deadline < 31  # the 30 s the client gave, as the server sees it


async def test_watch_refuses_with_a_status_then_streams(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in served.stub.WatchJobs(pb.WatchJobsRequest(job_ids=["nope"]), metadata=bearer(READER)):
            pass
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    call = served.stub.WatchJobs(pb.WatchJobsRequest(job_ids=["t.tick"]), metadata=bearer(READER))
    first = await call.read()
    assert isinstance(first, pb.WatchJobsResponse) and [s.job_id for s in first.statuses] == ["t.tick"]
    bus = served.servicer.handlers._manager.bus
    assert bus.watcher_count == 1
    unsubscribed = asyncio.Event()
    real = bus.unsubscribe

    def unsubscribe(watcher: Any) -> None:
        real(watcher)
        unsubscribed.set()

    monkeypatch.setattr(bus, "unsubscribe", unsubscribe)
    call.cancel()
    await asyncio.wait_for(unsubscribed.wait(), 10)  # the client's cancel closes the server's watcher
    assert bus.watcher_count == 0
