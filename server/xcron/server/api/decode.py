"""Undecodable requests are INVALID_ARGUMENT, not UNKNOWN.

grpc answers UNKNOWN ("Unexpected DecodeError") when a request's bytes do not parse, which reads
like a server bug, and logs a traceback. This interceptor takes the raw bytes and parses them inside
the handler, so a corrupt request gets INVALID_ARGUMENT with a reason a client can act on, for every
service the server hosts (JobService, health, reflection) and for streamed requests too. Such requests
are logged at most once a minute per method (reflection is open to anyone by default).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias

import grpc
from google.protobuf.message import DecodeError

from xcron.server.api.ratelimit import LogThrottle
from xcron.server.api.status import to_status
from xcron.server.api.wrapping import WrappedHandlers, behaviour_of, responses, same_kind
from xcron.server.core.errors import InvalidArgument

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]

log = logging.getLogger(__name__)
_throttle = LogThrottle(log)


def _note(method: str, context: Context, exc: InvalidArgument) -> None:
    _throttle.warning(method, "malformed request to %s from %s: %s", method, context.peer(), exc.message)


def _decode(deserializer: Callable[[bytes], Any] | None, data: bytes) -> Any:
    if deserializer is None:
        return data
    try:
        return deserializer(data)
    except (DecodeError, ValueError, TypeError) as exc:
        raise InvalidArgument("", f"the request could not be decoded: {exc}", reason="MALFORMED_REQUEST") from exc


class DecodeGuard(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self) -> None:
        self._wrapped = WrappedHandlers(guard_decoding)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        return self._wrapped.get(handler_call_details.method, handler)


def guard_decoding(method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """`handler` taking the request's bytes and decoding them itself (what DecodeGuard does to every handler,
    for an interceptor that does it along with its own work)."""
    deserialize = handler.request_deserializer
    inner = behaviour_of(handler)
    if inner is None:
        return handler
    if handler.request_streaming:  # reflection: each request decoded as it is read
        if handler.response_streaming:

            async def bidi(requests: AsyncIterable[bytes], context: Context) -> AsyncIterator[Any]:
                async for item in responses(inner(_decoding(requests, method, deserialize, context), context)):
                    yield item

            return same_kind(handler, bidi, decoded=False)

        async def client_streaming(requests: AsyncIterable[bytes], context: Context) -> Any:
            return await inner(_decoding(requests, method, deserialize, context), context)

        return same_kind(handler, client_streaming, decoded=False)
    if not handler.response_streaming:

        async def unary(data: bytes, context: Context) -> Any:
            try:  # decoded inline, not in a coroutine of its own: this runs for every call
                request = _decode(deserialize, data)
            except InvalidArgument as exc:
                await _refuse(method, context, exc)
                raise  # unreachable: _refuse raises
            return await inner(request, context)

        return same_kind(handler, unary, decoded=False)

    async def streaming(data: bytes, context: Context) -> AsyncIterator[Any]:
        try:
            request = _decode(deserialize, data)
        except InvalidArgument as exc:
            await _refuse(method, context, exc)
            raise  # unreachable: _refuse raises
        async for item in responses(inner(request, context)):
            yield item

    return same_kind(handler, streaming, decoded=False)


async def _refuse(method: str, context: Context, exc: InvalidArgument) -> None:
    """Aborts the call with INVALID_ARGUMENT (raises)."""
    _note(method, context, exc)
    await context.abort_with_status(to_status(exc))


async def _decoded(data: bytes, method: str, deserialize: Any, context: Context) -> Any:
    """The request, or the call aborted with INVALID_ARGUMENT."""
    try:
        return _decode(deserialize, data)
    except InvalidArgument as exc:
        await _refuse(method, context, exc)
        raise  # unreachable: _refuse raises


async def _decoding(
    requests: AsyncIterable[bytes], method: str, deserialize: Any, context: Context
) -> AsyncIterator[Any]:
    async for data in requests:
        yield await _decoded(data, method, deserialize, context)
