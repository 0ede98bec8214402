"""A cancelled or timed-out teacher call stops the real local model (SmolLM2 GGUF via llama.cpp).

Cancelling ``LlamaCppBackend.verdict`` only cancels the awaiting coroutine; the generation runs in
a worker thread. Each call therefore carries an abort flag, set on cancellation and checked by
llama.cpp after every sampled token: the thread stops, the backend lock is free and the CPU idle
within a second, rather than generating on to ``max_tokens`` (a minute or more) unobserved.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from core.grades import GRADE_LEVELS
from core.text_template import DEFAULT_TEMPLATE
from teacher import Teacher, load_teacher
from teacher.backends.base import GenerationAborted, VerdictRequest
from teacher.backends.llamacpp import LlamaCppBackend
from teacher.prompt import build_messages, prefill

pytestmark = [pytest.mark.slow, pytest.mark.llm]

# One thread, as in test_teacher_llamacpp (the same model instance is shared with it).
SPEC = "llamacpp?threads=1"
# The CoT for this pair runs ~10 s on one thread (measured: 12 s, ~1300 characters, no early stop).
QUERY = "110cfm bathroom exhaust fan without light"
ITEM = {
    "id": "B076Q7V5WX",
    "title": "Panasonic FV-0511VQ1 WhisperCeiling DC Ventilation Fan, Quiet",
    "color": "White",
}
# A prompt the model answers for as long as it may: counting never writes '"grade"' nor stops.
COUNTING = [{"role": "user", "content": "Count from 1 to 1000, one number per line."}]

RELEASE_S = 1.0  # the model must be free again this long after the cancel
IDLE_CPU_S = 0.3  # most CPU time the process may use over the second after


@pytest.fixture(scope="module")
def backend() -> LlamaCppBackend:
    return load_teacher(SPEC).backend


def _long_request() -> VerdictRequest:
    # max_tokens beyond n_ctx: llama.cpp caps it at the context (~2000 tokens, ~40 s here).
    return VerdictRequest(
        messages=COUNTING, prefill="1\n2\n3\n", mode="cot", levels=GRADE_LEVELS, max_tokens=4000
    )


async def _until(condition: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.005)
    return True


def _lock_free_within(backend: LlamaCppBackend, timeout_s: float) -> bool:
    if not backend._lock.acquire(timeout=timeout_s):
        return False
    backend._lock.release()
    return True


async def _idle_cpu_s(seconds: float = 1.0) -> float:
    """CPU time the whole process uses while this (event-loop) thread only sleeps."""
    started = time.process_time()
    await asyncio.sleep(seconds)
    return time.process_time() - started


class CompleteSpy:
    """Wraps the backend's completion step: how each generation ended, and when."""

    def __init__(self, backend: LlamaCppBackend) -> None:
        self.inner = backend._complete
        self.outcomes: list[tuple[str, float]] = []

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            choice = self.inner(*args, **kwargs)
        except GenerationAborted:
            self.outcomes.append(("aborted", time.monotonic()))
            raise
        self.outcomes.append((f"finished:{choice['finish_reason']}", time.monotonic()))
        return choice


async def test_cancelled_verdict_stops_the_generation_and_frees_the_cpu(backend, monkeypatch) -> None:
    spy = CompleteSpy(backend)
    monkeypatch.setattr(backend, "_complete", spy)
    task = asyncio.ensure_future(backend.verdict(_long_request()))
    assert await _until(backend._lock.locked, 10), "the generation did not start"
    await asyncio.sleep(0.5)
    assert not task.done() and backend._lock.locked()  # still generating: ~40 s of budget left

    task.cancel()
    cancelled_at = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _lock_free_within(backend, RELEASE_S), "the worker thread kept generating after the cancel"
    assert time.monotonic() - cancelled_at < RELEASE_S
    assert [kind for kind, _ in spy.outcomes] == ["aborted"]
    assert spy.outcomes[0][1] - cancelled_at < RELEASE_S
    assert await _idle_cpu_s() < IDLE_CPU_S


async def test_timed_out_verdict_stops_the_generation(backend) -> None:
    """``asyncio.wait_for`` (what the engine uses) cancels the same way."""
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(backend.verdict(_long_request()), 0.5)
    timed_out_at = time.monotonic()
    assert _lock_free_within(backend, RELEASE_S)
    assert time.monotonic() - timed_out_at < RELEASE_S
    assert await _idle_cpu_s() < IDLE_CPU_S


def test_an_aborted_call_does_not_start_the_model(backend) -> None:
    """Cancelled while it waited for the lock (another call generating): it gives the lock straight back."""
    abort = threading.Event()
    abort.set()
    started = time.monotonic()
    with pytest.raises(GenerationAborted, match="before the generation"):
        backend._verdict_blocking(_long_request(), abort)
    assert time.monotonic() - started < 0.5
    assert not backend._lock.locked()


def test_the_abort_flag_stops_a_generation_in_its_thread(backend) -> None:
    abort = threading.Event()
    errors: list[BaseException] = []

    def generate() -> None:
        try:
            backend._verdict_blocking(_long_request(), abort)
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion below
            errors.append(exc)

    worker = threading.Thread(target=generate, daemon=True)
    worker.start()
    time.sleep(0.8)
    assert worker.is_alive()
    abort.set()
    worker.join(RELEASE_S)
    assert not worker.is_alive(), "the generation did not stop within a second of the abort"
    assert len(errors) == 1 and isinstance(errors[0], GenerationAborted)
    assert not backend._lock.locked()


async def test_explain_timeout_stops_the_teacher_within_a_second(backend, monkeypatch) -> None:
    """End to end: ExplainEngine → TeacherRunner (teacher loop) → Teacher → llama.cpp, CoT mode."""
    from service.explain.engine import ExplainEngine, ExplainTimeout
    from service.explain.teacher_runner import TeacherRunner

    # Warm the KV cache with this pair's CoT prompt, so the 1 s budget is spent generating (the prompt
    # evaluation itself, up to ~1.5 s cold, is one llama.cpp call that the abort flag cannot cut short).
    messages = build_messages(
        DEFAULT_TEMPLATE.query_text(QUERY), DEFAULT_TEMPLATE.item_text(ITEM), "cot", GRADE_LEVELS
    )
    warm = await backend.verdict(
        VerdictRequest(
            messages=messages, prefill=prefill("cot"), mode="cot", levels=GRADE_LEVELS, max_tokens=1
        )
    )
    assert not warm.reached_verdict

    spy = CompleteSpy(backend)
    monkeypatch.setattr(backend, "_complete", spy)
    teacher = Teacher(backend, max_tokens=4000)
    runner = TeacherRunner(lambda: teacher)
    runner.start()
    try:
        engine = ExplainEngine(runner, cache=None, mode="cot", timeout_s=1.0, concurrency=1)
        with pytest.raises(ExplainTimeout) as timeout:
            await engine.explain(QUERY, ITEM)
        timed_out_at = time.monotonic()
        assert timeout.value.status_code == 504
        assert _lock_free_within(backend, RELEASE_S), "llama.cpp kept generating after the 504"
        assert time.monotonic() - timed_out_at < RELEASE_S
        # The generation was cut short (not finished early by the model), on the teacher's thread.
        assert await _until(lambda: spy.outcomes, RELEASE_S)
        assert [kind for kind, _ in spy.outcomes] == ["aborted"]
        assert await _idle_cpu_s() < IDLE_CPU_S
        assert engine.metrics.llm_errors.labels("timeout")._value.get() == 1
    finally:
        runner.stop()


async def test_cancelling_the_runner_call_cancels_it_on_the_teacher_loop() -> None:
    """TeacherRunner.judge: the service-side cancel reaches the task on the teacher's own loop."""
    from service.explain.teacher_runner import TeacherRunner

    class Waiting:
        teacher_id = "waiting"
        prompt_version = "test"

        def __init__(self) -> None:
            self.started = threading.Event()
            self.cancelled = threading.Event()
            self.loop: asyncio.AbstractEventLoop | None = None

        async def judge(self, query, item, *, label=None, mode="cot"):
            self.loop = asyncio.get_running_loop()
            self.started.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                self.cancelled.set()
                raise

    teacher = Waiting()
    runner = TeacherRunner(lambda: teacher)
    runner.start()
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(runner.judge("q", {"id": "i"}, "cot"), 0.3)
        assert teacher.started.is_set() and teacher.loop is not asyncio.get_running_loop()
        assert teacher.cancelled.wait(1.0)
    finally:
        runner.stop()
