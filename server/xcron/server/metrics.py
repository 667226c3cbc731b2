"""Prometheus metrics (prometheus-client): the core's observations, gauges read on scrape, and
every RPC by method and status code through a server interceptor."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from xcron.server.stores.state import ExecutionRecord

RUN_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600)
LATENESS_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 60, 300)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.runs_started = Counter("xcron_runs_started", "Runs started", ["job", "trigger"], registry=r)
        self.runs_finished = Counter("xcron_runs_finished", "Runs finished", ["job", "outcome"], registry=r)
        self.run_duration = Histogram(
            "xcron_run_duration_seconds", "Run duration", ["job"], buckets=RUN_BUCKETS, registry=r
        )
        self.lateness_seconds = Histogram(
            "xcron_schedule_lateness_seconds",
            "Actual start minus due time of scheduled runs",
            ["job"],
            buckets=LATENESS_BUCKETS,
            registry=r,
        )
        self.misfires = Counter(
            "xcron_misfires", "Occurrences dropped by misfire policies", ["job", "policy"], registry=r
        )
        self.overlap_skips = Counter(
            "xcron_overlap_skips", "Occurrences skipped because the job still ran", ["job", "policy"], registry=r
        )
        self.running = Gauge("xcron_running_jobs", "Jobs running now", registry=r)
        self.watchers = Gauge("xcron_watchers", "Connected WatchJobs streams", registry=r)
        self.rpcs = Counter("xcron_rpcs", "RPCs handled", ["method", "code"], registry=r)
        self.auth_failures = Counter(
            "xcron_auth_failures", "Calls refused for their token, by peer address", ["peer", "reason"], registry=r
        )

    def auth_failed(self, peer: str, reason: str) -> None:
        self.auth_failures.labels(peer, reason).inc()

    # -- Observer ---------------------------------------------------------------------------

    def run_started(self, record: ExecutionRecord) -> None:
        self.runs_started.labels(record.job_id, record.trigger.value).inc()

    def run_finished(self, record: ExecutionRecord) -> None:
        self.runs_finished.labels(record.job_id, record.state.value).inc()
        if record.finish_time is not None:
            self.run_duration.labels(record.job_id).observe((record.finish_time - record.start_time).total_seconds())

    def misfired(self, job_id: str, policy: str, dropped: int) -> None:
        self.misfires.labels(job_id, policy).inc(dropped)

    def overlap_skipped(self, job_id: str, policy: str) -> None:
        self.overlap_skips.labels(job_id, policy).inc()

    def lateness(self, job_id: str, late_by: timedelta) -> None:
        self.lateness_seconds.labels(job_id).observe(max(0.0, late_by.total_seconds()))

    # -- wiring -----------------------------------------------------------------------------

    def track(self, *, running: Callable[[], int], watchers: Callable[[], int]) -> None:
        self.running.set_function(running)
        self.watchers.set_function(watchers)

    def serve(self, listen: str) -> int:
        """Starts the /metrics HTTP endpoint in a thread; returns the port it bound."""
        host, _, port = listen.rpartition(":")
        server, _thread = start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1", registry=self.registry)
        return int(server.server_address[1])

    def interceptor(self) -> grpc.aio.ServerInterceptor:
        return _RpcCounter(self)


class _RpcCounter(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Counts every RPC by method and final status code (OK unless the handler set another)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        count = self._count
        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                try:
                    return await inner(request, context)
                finally:
                    count(method, context)

            return grpc.unary_unary_rpc_method_handler(unary, handler.request_deserializer, handler.response_serializer)
        if handler.unary_stream is not None:
            stream = handler.unary_stream

            async def streaming(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                try:
                    result = stream(request, context)
                    if inspect.isawaitable(result):  # a handler that writes with context.write()
                        await result
                    else:
                        async for item in result:
                            yield item
                finally:
                    count(method, context)

            return grpc.unary_stream_rpc_method_handler(
                streaming, handler.request_deserializer, handler.response_serializer
            )
        return handler

    def _count(self, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        code = context.code()
        name = code.name if isinstance(code, grpc.StatusCode) else "OK" if code in (None, 0) else str(code)
        if context.cancelled() and code is None:
            name = "CANCELLED"
        self._metrics.rpcs.labels(method.rsplit("/", 1)[-1], name).inc()
