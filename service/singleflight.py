"""Single-flight: concurrent calls for the same key share one execution.

The first caller for a key starts the work as its own task; later callers for the same key join it
until it finishes. Each caller waits with its own deadline (``asyncio.wait_for`` over a shielded
task), so one caller giving up neither cancels the work nor the other callers' wait.

This is per process. Across replicas, the Redis explanation cache is what stops repeated work
(a second replica asking for the same pair after the first finished gets a cache hit).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    def __init__(self) -> None:
        self._flights: dict[str, asyncio.Task[T]] = {}

    def in_flight(self, key: str) -> bool:
        return key in self._flights

    async def do(
        self, key: str, work: Callable[[], Awaitable[T]], timeout_s: float | None = None
    ) -> tuple[T, bool]:
        """Run ``work()`` once per key at a time; returns (result, shared) where ``shared`` is True
        for callers that joined a flight another caller started. Raises ``TimeoutError`` when this
        caller's ``timeout_s`` passes first (the work goes on for the others)."""
        task = self._flights.get(key)
        shared = task is not None
        if task is None:
            task = asyncio.ensure_future(work())
            self._flights[key] = task
            task.add_done_callback(lambda t, k=key: self._forget(k, t))
        result = await asyncio.wait_for(asyncio.shield(task), timeout_s)
        return result, shared

    def _forget(self, key: str, task: asyncio.Task[T]) -> None:
        if self._flights.get(key) is task:
            del self._flights[key]
        if not task.cancelled():
            task.exception()  # mark retrieved: a failure nobody awaited any more is not "never retrieved"
