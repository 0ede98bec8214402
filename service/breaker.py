"""Circuit breaker for a slow, failure-prone backend (the LLM teacher behind /explain).

States: ``closed`` (calls pass; consecutive failures are counted) → after ``failure_threshold``
consecutive failures ``open`` (calls are refused at once for ``reset_after_s``) → ``half_open``
(up to ``half_open_probes`` calls are let through as probes) → ``closed`` on a probe's success, or
``open`` again on its failure. Refusing fast keeps a dead backend from holding request slots until
they time out.

Not thread-safe: use it from one event loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    HALF_OPEN = "half_open"
    OPEN = "open"


# Gauge values for the breaker state metric.
STATE_VALUES: dict[BreakerState, int] = {
    BreakerState.CLOSED: 0,
    BreakerState.HALF_OPEN: 1,
    BreakerState.OPEN: 2,
}


class BreakerOpen(Exception):
    """The breaker refused a call; ``retry_after_s`` says when a probe will be allowed."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"circuit open; retry after {retry_after_s:.1f}s")
        self.retry_after_s = retry_after_s


class CircuitBreaker:
    def __init__(
        self,
        failure_threshold: int = 5,
        reset_after_s: float = 30.0,
        half_open_probes: int = 1,
        clock: Callable[[], float] = time.monotonic,
        on_state_change: Callable[[BreakerState], None] | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if half_open_probes < 1:
            raise ValueError("half_open_probes must be at least 1")
        self.failure_threshold = failure_threshold
        self.reset_after_s = reset_after_s
        self.half_open_probes = half_open_probes
        self._clock = clock
        self._on_state_change = on_state_change
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probes_in_flight = 0

    @property
    def state(self) -> BreakerState:
        # An open breaker whose cool-down has passed reads as half-open (probes allowed).
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.reset_after_s:
            self._set(BreakerState.HALF_OPEN)
        return self._state

    def check(self) -> None:
        """Raise BreakerOpen (with the rest of the cool-down) if the breaker is open; takes no probe."""
        if self.state is BreakerState.OPEN:
            raise BreakerOpen(self.reset_after_s - (self._clock() - self._opened_at))

    def acquire(self) -> None:
        """Ask to make a call. Raises BreakerOpen if refused; otherwise the caller must report
        the outcome with ``record_success`` or ``record_failure``."""
        state = self.state
        if state is BreakerState.OPEN:
            raise BreakerOpen(self.reset_after_s - (self._clock() - self._opened_at))
        if state is BreakerState.HALF_OPEN:
            if self._probes_in_flight >= self.half_open_probes:
                # A probe is already testing the backend; others wait for its verdict.
                raise BreakerOpen(min(1.0, self.reset_after_s))
            self._probes_in_flight += 1

    def record_success(self) -> None:
        self._failures = 0
        self._probes_in_flight = 0
        if self._state is not BreakerState.CLOSED:
            self._set(BreakerState.CLOSED)

    def record_failure(self) -> None:
        if self._state is BreakerState.HALF_OPEN:
            self._probes_in_flight = 0
            self._trip()
            return
        self._failures += 1
        if self._state is BreakerState.CLOSED and self._failures >= self.failure_threshold:
            self._trip()

    def _trip(self) -> None:
        self._opened_at = self._clock()
        self._failures = 0
        self._set(BreakerState.OPEN)

    def _set(self, state: BreakerState) -> None:
        self._state = state
        if self._on_state_change is not None:
            self._on_state_change(state)
