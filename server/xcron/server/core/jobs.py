"""The API for job authors: declare a job, implement `run`, report progress, honour cancellation.

A job is a subclass of `Job`. If `run` is a coroutine function it runs on the server's event
loop (it must not block); otherwise it runs in the server's bounded thread pool. Example::

    class PurgeTemp(Job):
        id = "acme.purge-temp"
        name = "Purge temp files"
        description = "Deletes files older than N days from a folder."
        parameters = (Parameter("folder", ParameterType.STRING, required=True),
                      Parameter("days", ParameterType.INT, default=7))
        can_cancel = True

        def run(self, ctx: JobContext) -> None:
            files = list(...)
            for i, f in enumerate(files):
                ctx.raise_if_cancelled()
                f.unlink()
                ctx.report_progress((i + 1) / len(files), f"deleted {f.name}")

Returning ends the run COMPLETED (CANCELLED if a cancel was requested); raising `JobCancelled`
ends it CANCELLED; any other exception ends it ABORTED with the error recorded.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, ClassVar, TypeVar

from xcron.server.core.model import ParameterSpec, ParameterType, ParameterValue, Trigger

__all__ = ["Job", "JobCancelled", "JobContext", "Parameter", "ParameterType"]

T = TypeVar("T")


def Parameter(
    name: str,
    type: ParameterType,
    *,
    required: bool = False,
    default: ParameterValue | None = None,
    description: str = "",
) -> ParameterSpec:
    """Declares a job parameter (shorthand for ParameterSpec)."""
    return ParameterSpec(name=name, type=type, required=required, default=default, description=description)


class JobCancelled(Exception):
    """Raised by a job (usually via `ctx.raise_if_cancelled()`) to stop early after a cancel request."""


class Job:
    """Base class of every job. Subclasses set the class attributes and implement `run`."""

    id: ClassVar[str]
    name: ClassVar[str]
    description: ClassVar[str] = ""
    parameters: ClassVar[tuple[ParameterSpec, ...]] = ()
    can_cancel: ClassVar[bool] = False
    type_name: ClassVar[str] = ""
    """The key of the job's entry in xcron.xml; defaults to "module.Class, top-level package"."""

    def run(self, ctx: JobContext) -> Any | Awaitable[Any]:
        raise NotImplementedError

    @classmethod
    def effective_type_name(cls) -> str:
        if cls.type_name:
            return cls.type_name
        return f"{cls.__module__}.{cls.__qualname__}, {cls.__module__.split('.')[0]}"

    @classmethod
    def is_async(cls) -> bool:
        return inspect.iscoroutinefunction(cls.run)


ProgressSink = Callable[[float, str | None], None]

_EVENT_LOCK = threading.Lock()
"""Guards making a JobContext's threading.Event against a cancel request arriving at that moment."""


class JobContext:
    """What a running job sees: its parameters, progress reporting and cancellation.

    Safe to use from the job's thread or from the event loop.
    """

    def __init__(
        self,
        *,
        job_id: str,
        execution_id: str,
        parameters: Mapping[str, ParameterValue],
        trigger: Trigger,
        scheduled_time: datetime | None,
        on_progress: ProgressSink,
        services: Mapping[str, Any] | None = None,
    ) -> None:
        self.job_id = job_id
        self.execution_id = execution_id
        self.parameters = dict(parameters)
        self.trigger = trigger
        self.scheduled_time = scheduled_time
        self.services: Mapping[str, Any] = services or {}
        self._logger: logging.LoggerAdapter[logging.Logger] | None = None  # built on first use: most jobs never log
        self._on_progress = on_progress
        # Set once, on the loop; read from any thread. The Event that blocking waits need (a lock and a
        # condition: 2 us) is made on the first wait, as most runs never wait.
        self._cancelled = False
        self._cancel_event: threading.Event | None = None
        self._cancel_async: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        """The job's logger; what it logs carries the job id and execution id."""
        logger = self._logger
        if logger is None:
            logger = self._logger = logging.LoggerAdapter(
                logging.getLogger(f"xcron.job.{self.job_id}"),
                {"job_id": self.job_id, "execution_id": self.execution_id},
            )
        return logger

    def _typed(self, name: str, kind: type[T]) -> T:
        value = self.parameters.get(name)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise TypeError(f"parameter {name!r} is {value!r}, not a {kind.__name__}")
        return value

    def get_str(self, name: str) -> str:
        """A declared parameter's value with its type checked (defaults are already filled in)."""
        return self._typed(name, str)

    def get_int(self, name: str) -> int:
        return self._typed(name, int)

    def get_bool(self, name: str) -> bool:
        return self._typed(name, bool)

    def get_float(self, name: str) -> float:
        return self._typed(name, float)

    def get_datetime(self, name: str) -> datetime:
        return self._typed(name, datetime)

    def get_timedelta(self, name: str) -> timedelta:
        return self._typed(name, timedelta)

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    @property
    def cancel_requested(self) -> bool:
        return self._cancelled

    def request_cancel(self) -> None:
        """Called by the executor (on the loop); the job notices at its next check."""
        self._cancelled = True
        with _EVENT_LOCK:  # a wait making its Event now sees _cancelled, or its Event is set here
            event = self._cancel_event
        if event is not None:
            event.set()
        if self._cancel_async is not None:
            self._cancel_async.set()

    def raise_if_cancelled(self) -> None:
        if self._cancelled:
            raise JobCancelled("cancelled on request")

    def report_progress(self, progress: float, status: str | None = None) -> None:
        """Progress in 0..1 (values outside are clamped) and an optional status text."""
        value = float(progress)
        if not 0.0 <= value <= 1.0:  # false for NaN too
            value = 1.0 if value > 1.0 else 0.0  # NaN -> 0
        self._on_progress(value, status)

    def wait(self, seconds: float) -> bool:
        """Blocking jobs: sleep up to `seconds`, returning True early if a cancel is requested."""
        event = self._cancel_event
        if event is None:
            with _EVENT_LOCK:
                event = self._cancel_event
                if event is None:
                    event = self._cancel_event = threading.Event()
                    if self._cancelled:
                        event.set()
        return event.wait(seconds)

    async def sleep(self, seconds: float) -> bool:
        """Async jobs: sleep up to `seconds`, returning True early if a cancel is requested."""
        if self._loop is None:
            raise RuntimeError("JobContext.sleep is for async jobs")
        if self._cancel_async is None:  # made on first use (on the loop, as request_cancel runs)
            self._cancel_async = asyncio.Event()
            if self._cancelled:
                self._cancel_async.set()
        try:
            await asyncio.wait_for(self._cancel_async.wait(), timeout=seconds)
        except TimeoutError:
            return False
        return True
