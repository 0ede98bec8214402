"""Circuit breaker and single-flight logic (pure, no I/O)."""

from __future__ import annotations

import asyncio

import pytest

from service.breaker import BreakerOpen, BreakerState, CircuitBreaker
from service.singleflight import SingleFlight


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_consecutive_failures_and_recovers_via_half_open() -> None:
    clock = FakeClock()
    seen: list[BreakerState] = []
    breaker = CircuitBreaker(failure_threshold=3, reset_after_s=10, clock=clock, on_state_change=seen.append)

    for _ in range(2):
        breaker.acquire()
        breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    breaker.acquire()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN

    with pytest.raises(BreakerOpen) as refused:
        breaker.acquire()
    assert refused.value.retry_after_s == pytest.approx(10)
    clock.now += 4
    with pytest.raises(BreakerOpen) as checked:
        breaker.check()
    assert checked.value.retry_after_s == pytest.approx(6)

    clock.now += 6
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.acquire()  # the probe
    with pytest.raises(BreakerOpen):
        breaker.acquire()  # only one probe at a time
    breaker.record_failure()  # probe failed: open again for a full cool-down
    assert breaker.state is BreakerState.OPEN
    clock.now += 9.9
    with pytest.raises(BreakerOpen):
        breaker.acquire()
    clock.now += 0.1
    breaker.acquire()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    breaker.acquire()
    assert seen == [
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
        BreakerState.CLOSED,
    ]


def test_breaker_success_resets_the_failure_count() -> None:
    breaker = CircuitBreaker(failure_threshold=2, reset_after_s=10, clock=FakeClock())
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN


async def test_singleflight_runs_identical_work_once_and_shares_the_result() -> None:
    flights: SingleFlight[str] = SingleFlight()
    calls = 0
    release = asyncio.Event()

    async def work() -> str:
        nonlocal calls
        calls += 1
        await release.wait()
        return "done"

    waiters = [asyncio.create_task(flights.do("k", work, timeout_s=5)) for _ in range(10)]
    await asyncio.sleep(0.01)
    assert flights.in_flight("k")
    release.set()
    results = await asyncio.gather(*waiters)
    assert calls == 1
    assert [r for r, _ in results] == ["done"] * 10
    assert sum(shared for _, shared in results) == 9
    assert not flights.in_flight("k")


async def test_singleflight_waiter_timeout_does_not_cancel_the_work_for_others() -> None:
    flights: SingleFlight[int] = SingleFlight()
    release = asyncio.Event()

    async def work() -> int:
        await release.wait()
        return 7

    impatient = asyncio.create_task(flights.do("k", work, timeout_s=0.05))
    patient = asyncio.create_task(flights.do("k", work, timeout_s=5))
    with pytest.raises(TimeoutError):
        await impatient
    release.set()
    assert await patient == (7, True)


async def test_singleflight_failure_reaches_every_waiter_and_is_not_remembered() -> None:
    flights: SingleFlight[int] = SingleFlight()
    attempts = 0

    async def failing() -> int:
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(0.01)
        raise RuntimeError("backend down")

    results = await asyncio.gather(*(flights.do("k", failing) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    assert attempts == 1
    with pytest.raises(RuntimeError):
        await flights.do("k", failing)
    assert attempts == 2


class SlowTeacher:
    """Test double for the concurrency limit only (the real teacher is used in test_explain_service)."""

    teacher_id = "test-teacher"
    prompt_version = "test"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.running = 0
        self.peak = 0

    async def judge(self, query, item, *, label=None, mode="cot"):
        from core.cot import CoTRecord

        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(self.seconds)
        finally:
            self.running -= 1
        return CoTRecord(
            teacher_id=self.teacher_id,
            prompt_version=self.prompt_version,
            pair_id="p",
            query=query,
            item_id=item["id"],
            item_text="",
            grade_levels=["Irrelevant", "Partial", "Exact"],
        )


async def test_engine_runs_at_most_concurrency_llm_calls_and_times_out_waiting_for_a_slot() -> None:
    from service.explain.engine import ExplainEngine, ExplainTimeout
    from service.explain.teacher_runner import TeacherRunner

    teacher = SlowTeacher(0.2)
    runner = TeacherRunner(lambda: teacher)
    runner.start()
    try:
        engine = ExplainEngine(runner, cache=None, timeout_s=5, concurrency=2)
        outcomes = await asyncio.gather(*(engine.explain("q", {"id": f"i{n}"}) for n in range(6)))
        assert [o.record.item_id for o in outcomes] == [f"i{n}" for n in range(6)]
        assert teacher.peak == 2
        assert engine.metrics.llm_calls._value.get() == 6

        tight = ExplainEngine(runner, cache=None, timeout_s=0.3, concurrency=1)
        results = await asyncio.gather(
            *(tight.explain("q", {"id": f"t{n}"}) for n in range(3)), return_exceptions=True
        )
        assert not isinstance(results[0], Exception)
        assert all(isinstance(r, ExplainTimeout) for r in results[1:])
    finally:
        runner.stop()
