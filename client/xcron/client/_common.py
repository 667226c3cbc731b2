"""What the sync and asyncio clients share: defaults, deadlines and the run_and_wait decision."""

from __future__ import annotations

import enum
import time
import uuid
from collections.abc import Sequence

from ._errors import DeadlineExceededError
from ._models import WatchEvent, WatchEventKind

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_TIMEOUT = 30.0


def new_request_id() -> str:
    """A fresh request_id making a RunJob call safe to retry."""
    return str(uuid.uuid4())


def job_ids_list(job_ids: Sequence[str]) -> list[str]:
    if isinstance(job_ids, str):
        raise TypeError("job_ids must be a sequence of job ids, not a single str")
    return list(job_ids)


def metadata_tuple(metadata: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...] | None:
    """Metadata as gRPC wants it: a tuple of pairs, or None when there is none."""
    pairs = tuple((str(key), str(value)) for key, value in metadata)
    return pairs or None


class Deadline:
    """A point in time a whole operation must finish by (None: no limit), handing out per-call timeouts."""

    def __init__(self, timeout: float | None) -> None:
        self._end = None if timeout is None else time.monotonic() + timeout

    def remaining(self) -> float | None:
        """Seconds left, never negative; None without a limit."""
        if self._end is None:
            return None
        return max(0.0, self._end - time.monotonic())

    def call_timeout(self, default: float | None) -> float | None:
        """The timeout for one call: the client's default, capped by what is left."""
        left = self.remaining()
        if left is None:
            return default
        if default is None:
            return left
        return min(left, default)


class Step(enum.Enum):
    """What run_and_wait does after an event of the watch stream."""

    WAIT = "wait"
    """Nothing conclusive: read the next event."""
    DONE = "done"
    """The stream shows the execution finished: fetch its full record and return it."""
    CHECK = "check"
    """The stream moved past the execution, or started afresh: ask GetExecution whether it finished."""


def run_wait_step(event: WatchEvent, job_id: str, execution_id: str) -> Step:
    """Decide from one watch event whether the execution ``execution_id`` of ``job_id`` is known to be over.

    The server coalesces statuses per job for slow readers, so the only thing relied on is the latest status:
    our execution finished (DONE); another execution (a later or earlier one) is the job's latest, or a fresh
    snapshot does not mention ours, in which case its fate may have been coalesced away (CHECK).
    """
    latest = None
    for status in event.statuses:
        if status.job_id == job_id:
            latest = status
    if latest is None:
        return Step.CHECK if event.kind is WatchEventKind.SNAPSHOT else Step.WAIT
    if latest.execution_id != execution_id:
        return Step.CHECK
    return Step.DONE if latest.state.finished else Step.WAIT


FIRST_PAUSE = 0.02
LAST_PAUSE = 1.0


def record_lag_pause(execution_id: str, state_name: str, pause: float, deadline: Deadline) -> float:
    """How long run_and_wait waits before asking again for the record of an execution the watch stream showed
    ended while the record still says `state_name`: `pause`, capped by the deadline. A server's history may lag
    its statuses (an older server answered from its store before its outcome was written).
    DeadlineExceededError once no time is left."""
    left = deadline.remaining()
    if left is not None and left <= 0:
        raise DeadlineExceededError(
            f"execution {execution_id} ended, but the server's record of it still says {state_name}"
        )
    return pause if left is None else min(pause, left)
