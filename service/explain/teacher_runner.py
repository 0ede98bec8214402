"""Runs the LLM teacher on its own thread and event loop.

The teacher (``teacher.load_teacher``) may do blocking work inside ``judge`` (llama.cpp
inference) and is loaded once, slowly. Giving it a dedicated thread with its own event loop means
neither loading nor a slow or hung call can ever stall the service's event loop or the batcher that
serves ``/score``. Callers await ``judge`` from the service loop; cancelling that await (a request
timeout) cancels the call on the teacher loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any, Literal

from core.cot import CoTRecord
from teacher import Teacher, load_teacher


class TeacherUnavailable(Exception):
    """The teacher could not be loaded; the message says why."""


def load_teacher_factory(spec: str) -> Callable[[], Teacher]:
    return lambda: load_teacher(spec)  # the backend loads its model here, on the teacher thread


class TeacherRunner:
    def __init__(self, factory: Callable[[], Teacher], *, name: str = "explain-teacher") -> None:
        self._factory = factory
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._loaded: Future[Teacher] | None = None
        self._teacher: Teacher | None = None

    def start(self) -> None:
        """Start the thread and begin loading the teacher there (does not wait for it)."""
        if self._loaded is not None:
            return
        self._thread.start()
        self._loaded = asyncio.run_coroutine_threadsafe(self._load(), self._loop)

    async def _load(self) -> Teacher:
        # On the teacher loop, so anything the teacher binds to a loop binds to this one.
        return self._factory()

    async def teacher(self) -> Teacher:
        """The loaded teacher (waits for loading). Raises TeacherUnavailable if loading failed."""
        if self._teacher is not None:
            return self._teacher
        if self._loaded is None:
            raise TeacherUnavailable("teacher runner not started")
        try:
            # Shielded: a request giving up must not cancel the load for everyone else.
            self._teacher = await asyncio.shield(asyncio.wrap_future(self._loaded))
        except Exception as exc:  # noqa: BLE001 - any load error makes the teacher unavailable
            raise TeacherUnavailable(f"teacher failed to load: {type(exc).__name__}: {exc}") from exc
        return self._teacher

    async def judge(self, query: str, item: Mapping[str, Any], mode: Literal["cot", "score"]) -> CoTRecord:
        teacher = await self.teacher()
        future = asyncio.run_coroutine_threadsafe(teacher.judge(query, item, mode=mode), self._loop)
        return await asyncio.wrap_future(future)

    def stop(self) -> None:
        if self._thread.is_alive():
            close = getattr(self._teacher, "aclose", None)
            if close is not None:
                try:
                    asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=5)
                except Exception:  # noqa: BLE001 - best effort at shutdown
                    pass
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        if not self._thread.is_alive() and not self._loop.is_closed():
            self._loop.close()  # a call still blocking the thread keeps it (daemon) until it returns
