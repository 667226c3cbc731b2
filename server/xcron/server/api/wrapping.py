"""Handler wrapping for gRPC server interceptors, written once: the decode guard, the metrics counter and the
auth check each replace a method handler's behaviour with their own around it, keeping its kind."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol

import grpc

Behaviour = Callable[..., Any]
"""A handler's behaviour: (request or request iterator, context) -> awaitable, or async iterator of responses."""

HandlerWrap = Callable[[str, grpc.RpcMethodHandler], grpc.RpcMethodHandler]
"""An interceptor's work on one method's handler: (full method name, handler) -> the handler to run instead."""


def behaviour_of(handler: grpc.RpcMethodHandler) -> Behaviour | None:
    return handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream  # type: ignore[no-any-return]


def same_kind(
    handler: grpc.RpcMethodHandler,
    behaviour: Behaviour,
    *,
    decoded: bool = True,
    serializer: Callable[[Any], bytes] | None = None,
) -> grpc.RpcMethodHandler:
    """A handler of `handler`'s kind (unary/streaming request and response) running `behaviour`, with the same
    response serializer unless another is given; its request deserializer too, unless `decoded` is False (the
    behaviour gets bytes)."""
    deserializer = handler.request_deserializer if decoded else None
    serializer = serializer or handler.response_serializer
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(behaviour, deserializer, serializer)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(behaviour, deserializer, serializer)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(behaviour, deserializer, serializer)
    return grpc.unary_unary_rpc_method_handler(behaviour, deserializer, serializer)


def sending_encoded(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """`handler` whose responses may also be bytes its behaviour encoded itself: those are sent as they are,
    messages are serialized as before."""
    serialize = handler.response_serializer
    behaviour = behaviour_of(handler)
    if serialize is None or behaviour is None:
        return handler

    def serializer(response: Any) -> bytes:
        return response if type(response) is bytes else serialize(response)

    return same_kind(handler, behaviour, serializer=serializer)


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


class HandlerRegistry(Protocol):
    """Where services register their handlers: a grpc.aio server, or a WrappingRegistrar in front of one."""

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler], /) -> None: ...

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: dict[str, grpc.RpcMethodHandler], /
    ) -> None: ...


class _WrappedGeneric(grpc.GenericRpcHandler):  # type: ignore[misc]
    """A generic handler whose handlers come out wrapped (once per method, kept)."""

    def __init__(self, inner: grpc.GenericRpcHandler, wrapped: WrappedHandlers) -> None:
        self._inner = inner
        self._wrapped = wrapped

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = self._inner.service(handler_call_details)
        if handler is None:
            return None
        return self._wrapped.get(handler_call_details.method, handler)


class WrappingRegistrar:
    """Stands in for a grpc.aio server while services register (generated `add_…_to_server`, health,
    reflection): each handler is registered wrapped by `wrap` (if given), as an interceptor would wrap it,
    and every service is served through generic handlers only (see add_registered_method_handlers).

    grpc.aio awaits every interceptor on every call before it finds the handler, which cost the RunJob
    path ~5-10 % of its server CPU; a wrapping that needs nothing from the call before the handler runs
    (the metrics counter, the decode guard) can be applied once here instead. The auth check chooses
    the handler per call, so it stays an interceptor (and then the counter stays one too, to count the
    calls auth refuses)."""

    def __init__(self, server: HandlerRegistry, wrap: HandlerWrap | None = None) -> None:
        self._server = server
        self._wrap = wrap
        self._wrapped = WrappedHandlers(wrap) if wrap is not None else None

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler], /) -> None:
        wrapped = self._wrapped
        if wrapped is None:
            self._server.add_generic_rpc_handlers(tuple(handlers))
        else:
            self._server.add_generic_rpc_handlers(tuple(_WrappedGeneric(handler, wrapped) for handler in handlers))

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: dict[str, grpc.RpcMethodHandler], /
    ) -> None:
        """Served by a generic handler instead. grpc.aio's accept loop keeps one pending request per registered
        method and waits on all of them (asyncio.wait) for every call it accepts: with JobService, health and
        reflection that is ~17 futures to hook and unhook per call, ~5 % of RunJob's server CPU (measured in
        bench.runs), where a generic handler costs one. The generated `add_…_to_server` has registered the same
        handlers as a generic handler just before, so this one is a fallback that lookups do not reach."""
        wrap = self._wrap
        if wrap is not None:
            method_handlers = {name: wrap(f"/{service_name}/{name}", h) for name, h in method_handlers.items()}
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service_name, method_handlers),))
