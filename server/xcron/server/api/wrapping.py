"""Handler wrapping for gRPC server interceptors, written once: the decode guard, the metrics counter and the
auth check each replace a method handler's behaviour with their own around it, keeping its kind."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

Behaviour = Callable[..., Any]
"""A handler's behaviour: (request or request iterator, context) -> awaitable, or async iterator of responses."""

HandlerWrap = Callable[[str, grpc.RpcMethodHandler], grpc.RpcMethodHandler]
"""An interceptor's work on one method's handler: (full method name, handler) -> the handler to run instead."""


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


class WrappedHandlers:
    """An interceptor's handlers, wrapped once per method instead of once per call.

    The handler a method resolves to is the same object call after call (the service registered it once),
    so its wrapped version is kept by method name and reused while the inner handler is that same object.
    Another handler for the method (an interceptor further in that refuses this call) is wrapped for the
    call and replaces the kept one; nothing wrapped is kept beyond one per method name."""

    def __init__(self, wrap: HandlerWrap) -> None:
        self._wrap = wrap
        self._by_method: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def get(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        kept = self._by_method.get(method)
        if kept is not None and kept[0] is handler:
            return kept[1]
        wrapped = self._wrap(method, handler)
        if len(self._by_method) < MAX_KEPT or method in self._by_method:
            self._by_method[method] = (handler, wrapped)
        return wrapped


MAX_KEPT = 1024
"""Method names resolve only to registered methods (unknown ones get no handler, so are never wrapped);
the bound is a safeguard should a generic handler answer any name."""
