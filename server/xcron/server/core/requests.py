"""Idempotent RunJob (AIP-155): a repeated request id returns the run it first started."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable

from xcron.server.core.ports import ExecutionRecord, StateStore


class RequestIds:
    """Which execution each (job, request id) started: the newest `limit` in memory (they answer while
    a run is still starting, before its row is stored), older ones from the store."""

    def __init__(
        self,
        store: StateStore,
        get_execution: Callable[[str], Awaitable[ExecutionRecord]],
        *,
        limit: int = 10_000,
    ) -> None:
        self._store = store
        self._get_execution = get_execution
        self._limit = limit
        self._ids: OrderedDict[tuple[str, str], str] = OrderedDict()

    async def earlier_run(self, job_id: str, request_id: str) -> ExecutionRecord | None:
        """The run this request id already started, in memory, in the store, or still starting."""
        known = self._ids.get((job_id, request_id))
        if known is not None:
            return await self._get_execution(known)
        earlier = await self._store.find_by_request_id(job_id, request_id)
        if earlier is not None:
            return earlier
        known = self._ids.get((job_id, request_id))  # a twin call got in during that await
        return await self._get_execution(known) if known is not None else None

    def remember(self, job_id: str, request_id: str, execution_id: str) -> None:
        self._ids[(job_id, request_id)] = execution_id
        while len(self._ids) > self._limit:
            self._ids.popitem(last=False)

    def forget(self, job_id: str, request_id: str) -> None:
        """The run never started: a retry with the same request id may start one."""
        self._ids.pop((job_id, request_id), None)
