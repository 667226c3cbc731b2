"""Handler wrapping for gRPC server interceptors, written once: the decode guard, the metrics counter and the
auth check each replace a method handler's behaviour with their own around it, keeping its kind."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

Behaviour = Callable[..., Any]
"""A handler's behaviour: (request or request iterator, context) -> awaitable, or async iterator of responses."""


def behaviour_of(handler: grpc.RpcMethodHandler) -> Behaviour | None:
    return handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream  # type: ignore[no-any-return]


def same_kind(handler: grpc.RpcMethodHandler, behaviour: Behaviour, *, decoded: bool = True) -> grpc.RpcMethodHandler:
    """A handler of `handler`'s kind (unary/streaming request and response) running `behaviour`, with the same
    response serializer; its request deserializer too, unless `decoded` is False (the behaviour gets bytes)."""
    deserializer = handler.request_deserializer if decoded else None
    serializer = handler.response_serializer
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(behaviour, deserializer, serializer)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(behaviour, deserializer, serializer)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(behaviour, deserializer, serializer)
    return grpc.unary_unary_rpc_method_handler(behaviour, deserializer, serializer)


async def responses(result: Any) -> AsyncIterator[Any]:
    """What a response-streaming behaviour returned, as messages: an async iterator, or an awaitable for a
    handler that writes with context.write() (or aborts before its first message)."""
    if inspect.isawaitable(result):
        await result
        return
    async for item in result:
        yield item
