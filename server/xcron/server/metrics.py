"""Prometheus metrics (prometheus-client): the core's observations, gauges read on scrape, and
every RPC by method and status code through a server interceptor.

Label names follow Prometheus' naming guidance: snake_case, and none of the names Prometheus
attaches to scraped series itself (`job`, `instance`), so the job is `job_id` and a real scrape
keeps it as is instead of renaming it `exported_job`. RPCs are labelled with the full method name
(`xcron.v1.JobService/GetJob`, `grpc.health.v1.Health/Check`) and the status code name.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Awaitable, Callable, Iterable
from datetime import timedelta
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from xcron.server.api.wrapping import HandlerWrap, WrappedHandlers, behaviour_of, responses, same_kind
from xcron.server.core.ports import ExecutionRecord
from xcron.server.run_metrics import RunMetrics

RUN_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600)
LATENESS_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 60, 300)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # Touched by every run: kept in plain dicts (run_metrics.py), not prometheus-client children.
        self.runs = RunMetrics(r, RUN_BUCKETS, LATENESS_BUCKETS)
        self.misfires = Counter(
            "xcron_misfires", "Occurrences dropped by misfire policies", ["job_id", "policy"], registry=r
        )
        self.overlap_skips = Counter(
            "xcron_overlap_skips", "Occurrences skipped because the job still ran", ["job_id", "policy"], registry=r
        )
        self.not_started_total = Counter(
            "xcron_occurrences_not_started",
            "Occurrences due and free to run that were not started, by reason (max_running: the --max-running "
            "limit; invalid_parameters; shutting_down; error)",
            ["job_id", "reason"],
            registry=r,
        )
        self.running = Gauge("xcron_running_jobs", "Jobs running now", registry=r)
        self.watchers = Gauge("xcron_watchers", "Connected WatchJobs streams", registry=r)
        self.rpcs = Counter("xcron_rpcs", "RPCs handled", ["method", "code"], registry=r)
        self._rpc_children: dict[tuple[str, str], Any] = {}
        self.auth_failures = Counter(
            "xcron_auth_failures", "Calls refused for their token, by peer address", ["peer", "reason"], registry=r
        )

    def auth_failed(self, peer: str, reason: str) -> None:
        self.auth_failures.labels(peer, reason).inc()

    # -- Observer ---------------------------------------------------------------------------

    def run_started(self, record: ExecutionRecord) -> None:
        self.runs.started(record.job_id, record.trigger.value)

    def run_finished(self, record: ExecutionRecord) -> None:
        finish = record.finish_time
        duration = (finish - record.start_time).total_seconds() if finish is not None else None
        self.runs.finished(record.job_id, record.state.value, duration)

    def misfired(self, job_id: str, policy: str, dropped: int) -> None:
        self.misfires.labels(job_id, policy).inc(dropped)

    def overlap_skipped(self, job_id: str, policy: str) -> None:
        self.overlap_skips.labels(job_id, policy).inc()

    def not_started(self, job_id: str, reason: str) -> None:
        self.not_started_total.labels(job_id, reason).inc()

    def lateness(self, job_id: str, late_by: timedelta) -> None:
        self.runs.late(job_id, max(0.0, late_by.total_seconds()))

    # -- wiring -----------------------------------------------------------------------------

    def track(self, *, running: Callable[[], int], watchers: Callable[[], int]) -> None:
        self.running.set_function(running)
        self.watchers.set_function(watchers)

    def serve(self, listen: str) -> int:
        """Starts the HTTP endpoint in a daemon thread; returns the port it bound. It serves
        `/metrics` only (any query string, as prometheus-client reads `name[]=`) and 404 elsewhere."""
        host, _, port = listen.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"

        class Server(ThreadingWSGIServer):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

        httpd = make_server(host, int(port), _only_metrics(make_wsgi_app(self.registry)), Server, _QuietHandler)
        threading.Thread(target=httpd.serve_forever, name="metrics-http", daemon=True).start()
        return int(httpd.server_address[1])

    def interceptor(self) -> grpc.aio.ServerInterceptor:
        """Counts every call (with auth: first, so the calls auth refuses count too)."""
        return _RpcCounter(self)

    def handler_wrap(self, inner: HandlerWrap | None = None) -> HandlerWrap:
        """What `interceptor` does to each method's handler, to apply once at registration
        (api.wrapping.WrappingRegistrar) when no interceptor needs to run before it."""
        return _RpcCounter(self, inner).wrap

    def count_rpc(self, method: str, code: str) -> None:
        """One call ended (the HTTP port's Connect calls; the gRPC port counts through `interceptor`)."""
        child = self._rpc_children.get((method, code))
        if child is None:  # labels() takes a lock and checks the labels: once per (method, code), not per call
            child = self._rpc_children[(method, code)] = self.rpcs.labels(method, code)
        child.inc()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged."""


def _only_metrics(app: WSGIApplication) -> WSGIApplication:
    def only_metrics(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"not found: metrics are at /metrics\n"]
        return app(environ, start_response)

    return only_metrics


class _RpcCounter(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Counts every RPC by full method name and final status code: OK unless the handler set
    another, CANCELLED or DEADLINE_EXCEEDED when the client ended the call first."""

    def __init__(self, metrics: Metrics, inner: HandlerWrap | None = None) -> None:
        self._metrics = metrics
        self._inner = inner
        self._wrapped = WrappedHandlers(self.wrap)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        return self._wrapped.get(handler_call_details.method, handler)

    def wrap(self, full_method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if self._inner is not None:
            handler = self._inner(full_method, handler)
        method = full_method.lstrip("/")
        count = self._count
        inner = behaviour_of(handler)
        if inner is None:
            return handler
        if not handler.response_streaming:

            async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                ended_by_client = False
                try:
                    return await inner(request, context)
                except asyncio.CancelledError:
                    ended_by_client = True
                    raise
                finally:
                    count(method, context, ended_by_client)

            return same_kind(handler, unary)

        async def streaming(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            ended_by_client = False
            try:
                async for item in responses(inner(request, context)):
                    yield item
            except (asyncio.CancelledError, GeneratorExit):
                ended_by_client = True
                raise
            finally:
                count(method, context, ended_by_client)

        return same_kind(handler, streaming)

    def _count(self, method: str, context: grpc.aio.ServicerContext[Any, Any], ended_by_client: bool) -> None:
        code = context.code()
        if isinstance(code, grpc.StatusCode):
            name = code.name
        elif code not in (None, 0):
            name = _CODE_NAMES.get(code, str(code))
        elif ended_by_client or context.cancelled():
            remaining = context.time_remaining()
            near_deadline = remaining is not None and remaining < DEADLINE_SLACK
            name = "DEADLINE_EXCEEDED" if near_deadline else "CANCELLED"
        else:
            name = "OK"
        self._metrics.count_rpc(method, name)


DEADLINE_SLACK = 0.5
"""A call the client ended this close to its deadline ended by the deadline. The client's own
timer usually fires first and cancels (the server's copy of the deadline starts when the request
arrives, a little later), so the server sees a cancel a few milliseconds before its deadline."""

_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}
