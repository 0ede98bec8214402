"""The slow path's core: cache → single-flight → concurrency slot → breaker → LLM call.

A request for a (query, item) explanation:

1. waits (within its timeout) for the teacher to be loaded — its id and prompt version are part of
   the cache key;
2. looks in the Redis explanation cache (Redis down → treated as a miss, counted);
3. joins an identical LLM call already in flight, or — unless the breaker is open (fast 503) —
   starts one as a *flight*: a task of its own, so one request timing out does not cancel the
   call for the others;
4. the flight waits for one of ``concurrency`` LLM slots, asks the breaker for permission
   (half-open: one probe at a time), calls the teacher on its own thread, records success or
   failure with the breaker, and writes the record to the cache.

Every request waits at most ``timeout_s`` in all (→ 504); so does every flight.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from core.cot import CoTRecord
from service.breaker import STATE_VALUES, BreakerOpen, BreakerState, CircuitBreaker
from service.errors import ApiError
from service.explain.cache import ExplanationCache, explanation_key
from service.explain.metrics import ExplainMetrics
from service.explain.teacher_runner import TeacherRunner, TeacherUnavailable
from service.redis_store import RedisUnavailable
from service.singleflight import SingleFlight


class ExplainError(ApiError):
    """An /explain failure, rendered in the service's error shape."""

    status_code = 500
    error_code = "explain_failed"

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(self.status_code, self.error_code, message, headers=headers)


class ExplainTimeout(ExplainError):
    status_code = 504
    error_code = "explain_timeout"


class ExplainUnavailable(ExplainError):
    status_code = 503
    error_code = "teacher_unavailable"


class CircuitOpen(ExplainError):
    status_code = 503
    error_code = "breaker_open"


class TeacherFailed(ExplainError):
    status_code = 502
    error_code = "teacher_failed"


@dataclass(frozen=True)
class TeacherOutcome:
    record: CoTRecord
    cached: bool
    shared: bool


class ExplainEngine:
    def __init__(
        self,
        runner: TeacherRunner,
        cache: ExplanationCache | None,
        *,
        mode: Literal["cot", "score"] = "cot",
        timeout_s: float = 60.0,
        concurrency: int = 1,
        breaker_failures: int = 5,
        breaker_reset_s: float = 30.0,
        metrics: ExplainMetrics | None = None,
    ) -> None:
        self.metrics = m = metrics or ExplainMetrics()
        self.runner = runner
        self.cache = cache
        self.mode = mode
        self.timeout_s = timeout_s
        self.concurrency = concurrency
        self.breaker = CircuitBreaker(
            breaker_failures,
            breaker_reset_s,
            on_state_change=lambda state: m.breaker_state.set(STATE_VALUES[state]),
        )
        m.breaker_state.set(STATE_VALUES[BreakerState.CLOSED])
        self._slots = asyncio.Semaphore(concurrency)
        self._flights: SingleFlight[CoTRecord] = SingleFlight()

    async def explain(self, query: str, item: Mapping[str, Any]) -> TeacherOutcome:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        try:
            teacher = await asyncio.wait_for(self.runner.teacher(), self.timeout_s)
        except TimeoutError as exc:
            raise ExplainTimeout(
                f"the teacher is still loading after {self.timeout_s:g}s; retry shortly"
            ) from exc
        except TeacherUnavailable as exc:
            raise ExplainUnavailable(str(exc)) from exc

        key = explanation_key(teacher.teacher_id, teacher.prompt_version, query, item)
        if self.cache is not None:
            try:
                record = await self.cache.get(key)
            except RedisUnavailable:
                record = None
            if record is not None:
                self.metrics.cache_hits.inc()
                return TeacherOutcome(record, cached=True, shared=False)
        self.metrics.cache_misses.inc()

        if not self._flights.in_flight(key):
            try:
                self.breaker.check()  # open: refuse now rather than queue for a slot
            except BreakerOpen as exc:
                raise self._breaker_open(exc) from exc
        try:
            record, shared = await self._flights.do(
                key, lambda: self._flight(key, query, item), timeout_s=max(0.0, deadline - loop.time())
            )
        except TimeoutError as exc:
            raise ExplainTimeout(f"the teacher did not answer within {self.timeout_s:g}s") from exc
        if shared:
            self.metrics.shared_flights.inc()
        return TeacherOutcome(record, cached=False, shared=shared)

    def _breaker_open(self, exc: BreakerOpen) -> CircuitOpen:
        self.metrics.breaker_rejections.inc()
        retry_after = max(1, round(exc.retry_after_s + 0.5))
        return CircuitOpen(
            "the teacher backend is failing (circuit breaker open); /score is unaffected; "
            f"retry /explain in {retry_after}s",
            headers={"Retry-After": str(retry_after)},
        )

    async def _flight(self, key: str, query: str, item: Mapping[str, Any]) -> CoTRecord:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        waited = time.perf_counter()
        try:
            await asyncio.wait_for(self._slots.acquire(), self.timeout_s)
        except TimeoutError as exc:
            raise ExplainTimeout(
                f"all {self.concurrency} LLM slot(s) stayed busy for {self.timeout_s:g}s; retry later"
            ) from exc
        self.metrics.llm_slot_wait_seconds.observe(time.perf_counter() - waited)
        try:
            try:
                self.breaker.acquire()
            except BreakerOpen as exc:
                raise self._breaker_open(exc) from exc
            record = await self._call_teacher(query, item, max(0.0, deadline - loop.time()))
        finally:
            self._slots.release()
        if self.cache is not None:
            await self.cache.set(key, record)
        return record

    async def _call_teacher(self, query: str, item: Mapping[str, Any], budget_s: float) -> CoTRecord:
        self.metrics.llm_calls.inc()
        started = time.perf_counter()
        try:
            record = await asyncio.wait_for(self.runner.judge(query, item, self.mode), budget_s)
        except TimeoutError as exc:
            self.breaker.record_failure()
            self.metrics.llm_errors.labels("timeout").inc()
            raise ExplainTimeout(f"the teacher did not answer within {self.timeout_s:g}s") from exc
        except Exception as exc:  # noqa: BLE001 - any backend error counts against the breaker
            self.breaker.record_failure()
            self.metrics.llm_errors.labels("error").inc()
            raise TeacherFailed(f"the teacher backend failed: {type(exc).__name__}: {exc}") from exc
        finally:
            self.metrics.llm_seconds.observe(time.perf_counter() - started)
        self.breaker.record_success()
        return record
