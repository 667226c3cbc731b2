"""The sync client against grpcio-testing's channel: no server, no socket. The test plays the server for one
call at a time and sees exactly what the client sent (request, metadata, deadline); it answers with a response
or a status with google.rpc details and sees how the client maps it.

What this covers: request building, metadata (bearer token, caller metadata), per-call deadlines, error
mapping. What it does not: the wire, the server's behaviour (tests/e2e start real servers for that)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import grpc
import grpc_testing
import pytest
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from xcron.client import (
    Client,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    UnavailableError,
    XcronError,
)
from xcron.v1 import job_service_pb2 as pb

T = TypeVar("T")
SERVICE = pb.DESCRIPTOR.services_by_name["JobService"]


class RecordingChannel(grpc.Channel):  # type: ignore[misc]
    """grpc_testing's channel drops the timeout of a call: this wrapper notes it, per method, in call order."""

    def __init__(self, inner: grpc.Channel) -> None:
        self.inner = inner
        self.timeouts: list[tuple[str, float | None]] = []

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        inner = self.inner.unary_unary(method, *args, **kwargs)
        timeouts = self.timeouts

        class Recorded:
            def __call__(self, request: Any, timeout: float | None = None, **kw: Any) -> Any:
                timeouts.append((method, timeout))
                return inner(request, timeout=timeout, **kw)

            def with_call(self, request: Any, timeout: float | None = None, **kw: Any) -> Any:
                timeouts.append((method, timeout))
                return inner.with_call(request, timeout=timeout, **kw)

        return Recorded()

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self.inner.unary_stream(method, *args, **kwargs)

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self.inner.stream_unary(method, *args, **kwargs)

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self.inner.stream_stream(method, *args, **kwargs)

    def subscribe(self, callback: Any, try_to_connect: bool = False) -> None:
        pass

    def unsubscribe(self, callback: Any) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture
def wire() -> Iterator[tuple[RecordingChannel, Any]]:
    channel = RecordingChannel(grpc_testing.channel([SERVICE], grpc_testing.strict_real_time()))
    yield channel, channel.inner


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=1) as executor:
        yield executor


def in_background(pool: ThreadPoolExecutor, call: Callable[[], T]) -> Future[T]:
    return pool.submit(call)


def rich_status(code: int, message: str, *, reason: str, field: str = "") -> tuple[tuple[str, bytes], ...]:
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=reason, domain="xcron.dev", metadata={"method": "RunJob"}))
    details = [info]
    if field:
        bad = any_pb2.Any()
        violation = error_details_pb2.BadRequest.FieldViolation(field=field, description="must be positive")
        bad.Pack(error_details_pb2.BadRequest(field_violations=[violation]))
        details.append(bad)
    status = status_pb2.Status(code=code, message=message, details=details)
    return (("grpc-status-details-bin", status.SerializeToString()),)


def test_run_job_builds_the_request_sends_the_token_and_a_request_id(wire: Any, pool: ThreadPoolExecutor) -> None:
    channel, testing = wire
    client = Client(channel=channel, token="s3cret-token-value", metadata=[("x-team", "ops")], timeout=7.5)
    result = in_background(pool, lambda: client.run_job("reports.daily", {"count": 3, "label": "x", "dry": True}))
    metadata, request, rpc = testing.take_unary_unary(SERVICE.methods_by_name["RunJob"])
    assert request.job_id == "reports.daily"
    assert request.parameters["count"].int_value == 3
    assert request.parameters["label"].string_value == "x"
    assert request.parameters["dry"].bool_value is True
    assert len(request.request_id) >= 32, "a fresh request id makes the call safe to retry"
    assert ("authorization", "Bearer s3cret-token-value") in metadata
    assert ("x-team", "ops") in metadata
    rpc.terminate(
        pb.RunJobResponse(execution=pb.Execution(id="e1", job_id="reports.daily", request_id=request.request_id)),
        (),
        grpc.StatusCode.OK,
        "",
    )
    execution = result.result(timeout=10)
    assert execution.id == "e1" and execution.request_id == request.request_id
    assert channel.timeouts == [("/xcron.v1.JobService/RunJob", 7.5)]


def test_a_given_request_id_is_sent_unchanged_without_authorization(wire: Any, pool: ThreadPoolExecutor) -> None:
    channel, testing = wire
    client = Client(channel=channel, timeout=None)
    result = in_background(pool, lambda: client.run_job("j", request_id="retry-7"))
    metadata, request, rpc = testing.take_unary_unary(SERVICE.methods_by_name["RunJob"])
    assert request.request_id == "retry-7"
    assert all(key != "authorization" for key, _ in metadata or ())
    rpc.terminate(pb.RunJobResponse(execution=pb.Execution(id="e2", job_id="j")), (), grpc.StatusCode.OK, "")
    assert result.result(timeout=10).id == "e2"
    assert channel.timeouts == [("/xcron.v1.JobService/RunJob", None)]


def test_invalid_argument_keeps_reason_and_field_violations(wire: Any, pool: ThreadPoolExecutor) -> None:
    channel, testing = wire
    client = Client(channel=channel)
    result = in_background(pool, lambda: client.get_job("j", next_fire_time_count=3))
    _metadata, request, rpc = testing.take_unary_unary(SERVICE.methods_by_name["GetJob"])
    assert request.job_id == "j" and request.next_fire_time_count == 3
    message = "count: must be positive"
    trailing = rich_status(code_pb2.INVALID_ARGUMENT, message, reason="INVALID_ARGUMENT", field="count")
    rpc.terminate(None, trailing, grpc.StatusCode.INVALID_ARGUMENT, message)
    with pytest.raises(InvalidArgumentError) as caught:
        result.result(timeout=10)
    error = caught.value
    assert isinstance(error, ValueError)
    assert error.reason == "INVALID_ARGUMENT" and error.domain == "xcron.dev"
    assert [(v.field, v.description) for v in error.field_violations] == [("count", "must be positive")]


@pytest.mark.parametrize(
    ("code", "grpc_code", "error_type", "builtin"),
    [
        (code_pb2.NOT_FOUND, grpc.StatusCode.NOT_FOUND, NotFoundError, LookupError),
        (code_pb2.PERMISSION_DENIED, grpc.StatusCode.PERMISSION_DENIED, PermissionDeniedError, PermissionError),
        (code_pb2.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE, UnavailableError, ConnectionError),
    ],
)
def test_status_codes_map_to_client_errors(
    wire: Any, pool: ThreadPoolExecutor, code: int, grpc_code: grpc.StatusCode, error_type: type, builtin: type
) -> None:
    channel, testing = wire
    client = Client(channel=channel)
    result = in_background(pool, lambda: client.cancel_job("j", execution_id="e9"))
    _metadata, request, rpc = testing.take_unary_unary(SERVICE.methods_by_name["CancelJob"])
    assert (request.job_id, request.execution_id) == ("j", "e9")
    rpc.terminate(None, rich_status(code, "nope", reason="X_REASON"), grpc_code, "nope")
    with pytest.raises(error_type) as caught:
        result.result(timeout=10)
    error = caught.value
    assert isinstance(error, builtin) and isinstance(error, XcronError)
    assert error.reason == "X_REASON" and error.metadata == {"method": "RunJob"}


def test_a_status_whose_details_disagree_with_the_call_keeps_the_call(wire: Any, pool: ThreadPoolExecutor) -> None:
    channel, testing = wire
    client = Client(channel=channel)
    result = in_background(pool, lambda: client.get_execution("e1"))
    _metadata, request, rpc = testing.take_unary_unary(SERVICE.methods_by_name["GetExecution"])
    assert request.execution_id == "e1"
    trailing = rich_status(code_pb2.INVALID_ARGUMENT, "other", reason="R")  # code and message disagree
    rpc.terminate(None, trailing, grpc.StatusCode.NOT_FOUND, "execution e1 not found")
    with pytest.raises(NotFoundError) as caught:
        result.result(timeout=10)
    assert caught.value.message == "execution e1 not found" and caught.value.reason is None
