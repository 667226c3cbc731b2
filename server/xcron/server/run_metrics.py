"""The metrics every run touches (runs started and finished, run duration, schedule lateness), kept in plain
dicts and exposed through a collector of their own. Through prometheus-client each run cost four label
look-ups (each a lock and a label check) and, on a job's first run, four child objects with a lock per
bucket: about a third of the scheduler's CPU per occurrence. Here a run costs a few dict operations
under one lock; a scrape builds the same series prometheus-client's Counter and Histogram would
(`_total`, `_created`, `_bucket`, `_count`, `_sum`)."""

from __future__ import annotations

import os
import threading
import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from itertools import accumulate

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

_CREATED = os.environ.get("PROMETHEUS_DISABLE_CREATED_SERIES", "False").lower() not in ("true", "1", "t")
"""prometheus-client's own switch for the `_created` series, honoured the same way."""


class _Count:
    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()


class _Buckets:
    __slots__ = ("counts", "created", "total")

    def __init__(self, size: int) -> None:
        self.counts = [0] * size  # per bucket, not cumulative; the last is +Inf
        self.total = 0.0
        self.created = time.time()


class _CounterVec:
    def __init__(self, name: str, documentation: str, labels: Sequence[str]) -> None:
        self.name, self.documentation, self.labels = name, documentation, list(labels)
        self.values: dict[tuple[str, ...], _Count] = {}

    def inc(self, key: tuple[str, ...]) -> None:
        count = self.values.get(key)
        if count is None:
            count = self.values[key] = _Count()
        count.value += 1

    def family(self, rows: list[tuple[tuple[str, ...], float, float]]) -> CounterMetricFamily:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        for key, value, created in rows:
            family.add_metric(key, value, created=created if _CREATED else None)
        return family

    def snapshot(self) -> list[tuple[tuple[str, ...], float, float]]:
        return [(key, c.value, c.created) for key, c in self.values.items()]


class _HistogramVec:
    def __init__(self, name: str, documentation: str, label: str, buckets: Sequence[float]) -> None:
        self.name, self.documentation, self.label = name, documentation, label
        self.bounds = tuple(float(b) for b in buckets)
        self.le = [*(repr(b) for b in self.bounds), "+Inf"]  # as prometheus-client writes `le`
        self.values: dict[str, _Buckets] = {}

    def observe(self, key: str, value: float) -> None:
        buckets = self.values.get(key)
        if buckets is None:
            buckets = self.values[key] = _Buckets(len(self.bounds) + 1)
        buckets.counts[bisect_left(self.bounds, value)] += 1  # a bucket holds values <= its bound
        buckets.total += value

    def snapshot(self) -> list[tuple[str, list[int], float, float]]:
        return [(key, list(b.counts), b.total, b.created) for key, b in self.values.items()]

    def family(self, rows: list[tuple[str, list[int], float, float]]) -> HistogramMetricFamily:
        family = HistogramMetricFamily(self.name, self.documentation, labels=[self.label])
        for key, counts, total, created in rows:
            family.add_metric([key], list(zip(self.le, accumulate(counts), strict=True)), total)
            if _CREATED:
                family.samples.append(Sample(f"{self.name}_created", {self.label: key}, created))
        return family


class RunMetrics(Collector):
    """Runs started and finished, their durations and their lateness, by job; called on the event loop,
    read by scrapes on the metrics thread."""

    def __init__(self, registry: CollectorRegistry, run_buckets: Sequence[float], lateness_buckets: Sequence[float]):
        self._lock = threading.Lock()
        self._started = _CounterVec("xcron_runs_started", "Runs started", ("job_id", "trigger"))
        self._finished = _CounterVec("xcron_runs_finished", "Runs finished", ("job_id", "outcome"))
        self._duration = _HistogramVec("xcron_run_duration_seconds", "Run duration", "job_id", run_buckets)
        self._lateness = _HistogramVec(
            "xcron_schedule_lateness_seconds",
            "Actual start minus due time of scheduled runs",
            "job_id",
            lateness_buckets,
        )
        registry.register(self)

    def started(self, job_id: str, trigger: str) -> None:
        with self._lock:
            self._started.inc((job_id, trigger))

    def finished(self, job_id: str, outcome: str, duration: float | None) -> None:
        with self._lock:
            self._finished.inc((job_id, outcome))
            if duration is not None:
                self._duration.observe(job_id, duration)

    def late(self, job_id: str, seconds: float) -> None:
        with self._lock:
            self._lateness.observe(job_id, seconds)

    def describe(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        yield self._started.family([])
        yield self._finished.family([])
        yield self._duration.family([])
        yield self._lateness.family([])

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        with self._lock:
            started, finished = self._started.snapshot(), self._finished.snapshot()
            duration, lateness = self._duration.snapshot(), self._lateness.snapshot()
        yield self._started.family(started)
        yield self._finished.family(finished)
        yield self._duration.family(duration)
        yield self._lateness.family(lateness)
