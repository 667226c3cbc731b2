"""Undecodable requests are INVALID_ARGUMENT, not UNKNOWN.

grpc answers UNKNOWN ("Unexpected DecodeError") when a request's bytes do not parse, which reads
like a server bug, and logs a traceback. This interceptor takes the raw bytes and parses them inside
the handler, so a corrupt request gets INVALID_ARGUMENT with a reason a client can act on, for every
service the server hosts (JobService, health, reflection) and for streamed requests too. Such requests
are logged at most once a minute per method (reflection is open to anyone by default).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias

import grpc
from google.protobuf.message import DecodeError

from xcron.server.api.ratelimit import LogThrottle
from xcron.server.api.status import to_status
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
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method: str = handler_call_details.method
        deserialize = handler.request_deserializer
        if handler.request_streaming:
            return _streamed(handler, method, deserialize)
        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary(data: bytes, context: Context) -> Any:
                try:
                    request = _decode(deserialize, data)
                except InvalidArgument as exc:
                    _note(method, context, exc)
                    await context.abort_with_status(to_status(exc))
                return await inner(request, context)

            return grpc.unary_unary_rpc_method_handler(unary, None, handler.response_serializer)
        if handler.unary_stream is not None:
            stream = handler.unary_stream

            async def streaming(data: bytes, context: Context) -> AsyncIterator[Any]:
                try:
                    request = _decode(deserialize, data)
                except InvalidArgument as exc:
                    _note(method, context, exc)
                    await context.abort_with_status(to_status(exc))
                result = stream(request, context)
                if inspect.isawaitable(result):  # a handler that writes with context.write()
                    await result
                else:
                    async for item in result:
                        yield item

            return grpc.unary_stream_rpc_method_handler(streaming, None, handler.response_serializer)
        return handler


def _streamed(handler: grpc.RpcMethodHandler, method: str, deserialize: Any) -> grpc.RpcMethodHandler:
    """Client-streaming and bidi handlers (reflection): each request decoded as it is read."""

    def decoding(requests: AsyncIterable[bytes], context: Context) -> AsyncIterator[Any]:
        async def messages() -> AsyncIterator[Any]:
            async for data in requests:
                try:
                    yield _decode(deserialize, data)
                except InvalidArgument as exc:
                    _note(method, context, exc)
                    await context.abort_with_status(to_status(exc))

        return messages()

    if handler.stream_stream is not None:
        inner = handler.stream_stream

        async def bidi(requests: AsyncIterable[bytes], context: Context) -> AsyncIterator[Any]:
            result = inner(decoding(requests, context), context)
            if inspect.isawaitable(result):
                await result
            else:
                async for item in result:
                    yield item

        return grpc.stream_stream_rpc_method_handler(bidi, None, handler.response_serializer)
    if handler.stream_unary is not None:
        unary_inner = handler.stream_unary

        async def client_streaming(requests: AsyncIterable[bytes], context: Context) -> Any:
            return await unary_inner(decoding(requests, context), context)

        return grpc.stream_unary_rpc_method_handler(client_streaming, None, handler.response_serializer)
    return handler
