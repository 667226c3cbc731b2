"""Calls made in one turn of the event loop, written in one transaction.

A scheduler that finds many occurrences due at one instant claims them, starts them and records their
ends at about the same moment: each of those is a transaction of its own unless the calls of one loop turn
share one. PostgreSQL counts (and fsyncs) transactions, not rows, so this is what keeps the database's
work per occurrence flat as the rate grows, and it is one round of queries instead of a queue of them
behind the connection pool.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger(__name__)


class TurnBatch(Generic[T, R]):
    """`await submit(item)` queues an item; at the end of the loop turn `run` gets every item queued in it
    and returns one outcome per item, in order: its result, or the exception its caller gets. If `run`
    raises, every caller of that batch gets the exception. A caller cancelled meanwhile does not stop
    the batch (its rows may still be written, as when a single call is cancelled after its COMMIT)."""

    def __init__(self, run: Callable[[list[T]], Awaitable[Sequence[R | BaseException]]], name: str) -> None:
        self._run = run
        self._name = name
        self._queued: list[tuple[T, asyncio.Future[R]]] = []
        self._running: set[asyncio.Task[None]] = set()

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        if not self._queued:
            loop.call_soon(self._flush)
        self._queued.append((item, future))
        return await future

    def _flush(self) -> None:
        batch, self._queued = self._queued, []
        if batch:
            task = asyncio.ensure_future(self._write(batch))
            task.set_name(f"xcron-pg-{self._name}")
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _write(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            outcomes: Sequence[R | BaseException] = await self._run([item for item, _ in batch])
        except Exception as exc:
            outcomes = [exc] * len(batch)
        except BaseException:  # cancelled (the store closes): so are its callers
            for _, future in batch:
                future.cancel()
            raise
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue  # its caller was cancelled
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    async def drain(self) -> None:
        """Waits for the batches already being written (on close)."""
        if self._running:
            await asyncio.wait(set(self._running))
