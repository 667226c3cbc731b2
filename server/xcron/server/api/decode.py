"""Undecodable requests are INVALID_ARGUMENT, not UNKNOWN.

grpc answers UNKNOWN ("Unexpected DecodeError") when a request's bytes do not parse, which reads
like a server bug. This interceptor takes the raw bytes and parses them inside the handler, so a
corrupt request gets INVALID_ARGUMENT with a reason a client can act on.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias

import grpc
from google.protobuf.message import DecodeError

from xcron.server.api.status import to_status
from xcron.server.core.errors import InvalidArgument

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]


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
        if handler is None or handler.request_streaming:
            return handler
        deserialize = handler.request_deserializer
        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary(data: bytes, context: Context) -> Any:
                try:
                    request = _decode(deserialize, data)
                except InvalidArgument as exc:
                    await context.abort_with_status(to_status(exc))
                return await inner(request, context)

            return grpc.unary_unary_rpc_method_handler(unary, None, handler.response_serializer)
        if handler.unary_stream is not None:
            stream = handler.unary_stream

            async def streaming(data: bytes, context: Context) -> AsyncIterator[Any]:
                try:
                    request = _decode(deserialize, data)
                except InvalidArgument as exc:
                    await context.abort_with_status(to_status(exc))
                result = stream(request, context)
                if inspect.isawaitable(result):  # a handler that writes with context.write()
                    await result
                else:
                    async for item in result:
                        yield item

            return grpc.unary_stream_rpc_method_handler(streaming, None, handler.response_serializer)
        return handler
