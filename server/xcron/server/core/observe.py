"""What the core reports about itself. Metrics implement this; the core does not know Prometheus."""

from __future__ import annotations

from datetime import timedelta
from typing import Protocol

from xcron.server.core.ports import ExecutionRecord


class Observer(Protocol):
    def run_started(self, record: ExecutionRecord) -> None: ...
    def run_finished(self, record: ExecutionRecord) -> None: ...
    def misfired(self, job_id: str, policy: str, dropped: int) -> None: ...
    def overlap_skipped(self, job_id: str, policy: str) -> None: ...
    def lateness(self, job_id: str, late_by: timedelta) -> None: ...
    def not_started(self, job_id: str, reason: str) -> None: ...


class NullObserver:
    def run_started(self, record: ExecutionRecord) -> None:
        pass

    def run_finished(self, record: ExecutionRecord) -> None:
        pass

    def misfired(self, job_id: str, policy: str, dropped: int) -> None:
        pass

    def overlap_skipped(self, job_id: str, policy: str) -> None:
        pass

    def lateness(self, job_id: str, late_by: timedelta) -> None:
        pass

    def not_started(self, job_id: str, reason: str) -> None:
        pass
