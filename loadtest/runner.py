"""The async load generator: closed loop (fixed concurrency) or open loop (Poisson arrivals).

Open loop measures each latency from the request's *intended* send time, not from when the
client got round to sending it, so a stalled server cannot hide its stall by slowing the client
down (coordinated omission). Closed loop measures from the actual send, as a client that waits
for each answer experiences it. Both run for a bounded time after an uncounted warm-up.

Which requests a window counts: open loop, those *due* in it (each awaited up to the client
timeout; one still unanswered counts as an error), so a stall is always charged; closed loop,
those *answered* in it (as wrk and similar tools do): with more clients queued than the server
answers in one window, no request would otherwise be both sent and answered inside it; a closed-
loop client told to back off (429/503 with Retry-After) waits as told, up to MAX_BACKOFF_S. Throughput
is answers completed inside the window in both modes. /metrics is scraped at the start and end of
the window, so server-side histograms cover the window only.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import time
from collections import Counter
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum

import httpx
import numpy as np
from pydantic import BaseModel, Field, model_validator

from loadtest.procstats import RssSampler
from loadtest.prom import Scrape, parse_metrics
from loadtest.targets import Target
from loadtest.workload import Request


class LoadMode(StrEnum):
    closed = "closed"
    open = "open"


class LoadConfig(BaseModel):
    mode: LoadMode = LoadMode.closed
    concurrency: int = Field(default=8, ge=1, le=1024)  # closed loop
    rate: float = Field(default=10.0, gt=0)  # open loop: mean requests per second
    duration_s: float = Field(default=10.0, gt=0)
    warmup_s: float = Field(default=2.0, ge=0)
    timeout_s: float = Field(default=30.0, gt=0)
    max_connections: int = Field(default=256, ge=1)
    seed: int = 0

    @model_validator(mode="after")
    def _bounded(self) -> LoadConfig:
        if self.duration_s + self.warmup_s > 3600:
            raise ValueError("duration_s + warmup_s must stay under one hour")
        return self

    def describe(self) -> str:
        if self.mode == "closed":
            return f"closed loop, {self.concurrency} clients"
        return f"open loop, Poisson {self.rate:g} req/s"


MAX_BACKOFF_S = 5.0  # closed loop: longest Retry-After honoured


@dataclass(slots=True)
class Outcome:
    intended: float  # monotonic time the request was due (open loop) or sent (closed loop)
    done: float
    status: str  # HTTP status code as text, or the client error's name
    n_items: int
    retry_after_s: float | None = None  # the server's Retry-After on 429/503

    @property
    def latency_s(self) -> float:
        return self.done - self.intended


@dataclass
class LoadResult:
    target: str
    config: LoadConfig
    outcomes: list[Outcome]  # every finished request, warm-up included
    measure_from: float
    stop_at: float
    scrape_before: Scrape | None
    scrape_after: Scrape | None
    peak_rss_mib: float | None
    unfinished: int = 0  # open loop: requests due in the window and unanswered after the client timeout
    in_flight_at_end: int = 0  # closed loop: requests cut off when the window closed (not counted)
    gauge_samples: dict[str, list[float]] = field(default_factory=dict)  # sampled during the measured window

    @property
    def measured_s(self) -> float:
        return self.stop_at - self.measure_from

    def summary(self) -> dict[str, object]:
        # See the module docstring for which requests each mode counts.
        if self.config.mode == "open":
            due = [o for o in self.outcomes if self.measure_from <= o.intended < self.stop_at]
        else:
            due = [o for o in self.outcomes if self.measure_from <= o.done < self.stop_at]
        ok = [o for o in due if o.status == "200"]
        completed = [
            o for o in self.outcomes if o.status == "200" and self.measure_from <= o.done < self.stop_at
        ]
        lat_ms = np.array([o.latency_s for o in ok]) * 1000 if ok else np.array([])
        statuses = Counter(o.status for o in due)
        if self.unfinished:
            statuses["unfinished"] += self.unfinished
        sent = len(due) + self.unfinished

        def pct(q: float) -> float:
            return float(np.percentile(lat_ms, q)) if lat_ms.size else math.nan

        return {
            "target": self.target,
            "load": self.config.describe(),
            "requests": sent,
            "ok": len(ok),
            "error_rate": (sent - len(ok)) / sent if sent else math.nan,
            "in_flight_at_end": self.in_flight_at_end,
            "status_counts": dict(sorted(statuses.items())),
            "requests_per_s": len(completed) / self.measured_s,
            "pairs_per_s": sum(o.n_items for o in completed) / self.measured_s,
            "latency_ms": {
                "p50": pct(50),
                "p95": pct(95),
                "p99": pct(99),
                "max": float(lat_ms.max()) if lat_ms.size else math.nan,
            },
            "measured_s": self.measured_s,
            "peak_rss_mib": self.peak_rss_mib,
            "gauges": {name: _distribution(values) for name, values in self.gauge_samples.items()},
        }


def _distribution(values: list[float]) -> dict[str, float]:
    if not values:
        return {"samples": 0}
    arr = np.array(values)
    return {
        "samples": len(values),
        "mean": float(arr.mean()),
        "p50": float(np.percentile(arr, 50)),
        "p99": float(np.percentile(arr, 99)),
        "max": float(arr.max()),
    }


async def _scrape(client: httpx.AsyncClient, target: Target) -> Scrape | None:
    try:
        response = await client.get(target.metrics_url, timeout=10.0)
    except httpx.HTTPError:
        return None
    return parse_metrics(response.text) if response.status_code == 200 else None


async def _send(
    client: httpx.AsyncClient, target: Target, body: bytes, n_items: int, intended: float, timeout_s: float
) -> Outcome:
    retry_after = None
    try:
        response = await client.post(
            target.path, content=body, timeout=timeout_s, headers={"content-type": "application/json"}
        )
        await response.aread()
        status = str(response.status_code)
        if response.status_code in (429, 503):
            try:
                retry_after = float(response.headers.get("retry-after", ""))
            except ValueError:
                pass
    except httpx.TimeoutException:
        status = "timeout"
    except httpx.HTTPError as exc:
        status = type(exc).__name__
    return Outcome(intended, time.monotonic(), status, n_items, retry_after)


async def _sample_gauges(
    client: httpx.AsyncClient,
    target: Target,
    names: tuple[str, ...],
    interval_s: float,
    measure_from: float,
    stop_at: float,
    into: dict[str, list[float]],
) -> None:
    """Gauges (e.g. queue depth) have no history in /metrics: sample them to get a distribution.

    Each scrape costs the server CPU on its event loop (a profile at 4 scrapes/s showed /metrics as
    the loop's largest cost), hence the 1 s default interval."""
    await asyncio.sleep(max(0.0, measure_from - time.monotonic()))
    while time.monotonic() < stop_at:
        scrape = await _scrape(client, target)
        if scrape is not None:
            for name in names:
                for value in scrape.total(name).values():
                    into.setdefault(name, []).append(value)
        await asyncio.sleep(interval_s)


@dataclass
class _Run:
    """What one run shares between its parts: the client, the request feed, the gauges it samples."""

    client: httpx.AsyncClient
    target: Target
    config: LoadConfig
    feed: Iterator[tuple[bytes, int]]
    outcomes: list[Outcome]
    sample_gauges: tuple[str, ...]
    gauge_interval_s: float
    gauges: dict[str, list[float]]

    def send(self, intended: float) -> Awaitable[Outcome]:
        body, n_items = next(self.feed)
        return _send(self.client, self.target, body, n_items, intended, self.config.timeout_s)

    def start_gauges(self, measure_from: float, stop_at: float) -> asyncio.Task[None] | None:
        if not self.sample_gauges:
            return None
        return asyncio.create_task(
            _sample_gauges(
                self.client,
                self.target,
                self.sample_gauges,
                self.gauge_interval_s,
                measure_from,
                stop_at,
                self.gauges,
            )
        )


async def run_load(
    target: Target,
    requests: list[Request],
    config: LoadConfig,
    server_pid: int | None = None,
    sample_gauges: tuple[str, ...] = (),
    gauge_interval_s: float = 1.0,
) -> LoadResult:
    """Send ``requests`` (cycled) to ``target`` under ``config``; return every outcome and the window."""
    if not requests:
        raise ValueError("run_load needs at least one prepared request")
    prepared = [(target.body(r), r.n_items) for r in requests]
    limits = httpx.Limits(
        max_connections=config.max_connections, max_keepalive_connections=config.max_connections
    )
    async with (
        httpx.AsyncClient(base_url=target.base_url, limits=limits) as client,
        RssSampler(server_pid) as rss,
    ):
        run = _Run(client, target, config, itertools.cycle(prepared), [], sample_gauges, gauge_interval_s, {})
        if config.mode == "closed":
            measure_from, stop_at, scrape_before, in_flight_at_end = await _closed_loop(run)
            unfinished = 0
        else:
            measure_from, stop_at, scrape_before, unfinished = await _open_loop(run)
            in_flight_at_end = 0
        scrape_after = await _scrape(client, target)
        peak = rss.peak_mib()
    return LoadResult(
        target.name,
        config,
        run.outcomes,
        measure_from,
        stop_at,
        scrape_before,
        scrape_after,
        peak,
        unfinished=unfinished,
        in_flight_at_end=in_flight_at_end,
        gauge_samples=run.gauges,
    )


async def _closed_loop(run: _Run) -> tuple[float, float, Scrape | None, int]:
    """Clients in lock step with their answers. The window opens after the warm-up *and* once every
    client has had its first answer: with many clients the server's queue needs one full turn
    before latencies are those of the steady state (bounded by the client timeout)."""
    config = run.config
    window_end = [math.inf]
    first_answers = 0
    steady = asyncio.Event()

    async def client() -> None:
        nonlocal first_answers
        first = True
        while time.monotonic() < window_end[0]:
            outcome = await run.send(time.monotonic())
            run.outcomes.append(outcome)
            if outcome.retry_after_s:
                # A well-behaved client backs off as told instead of hammering a shedding server
                # (and, on a small machine, stealing the CPU it sheds load to protect).
                await asyncio.sleep(
                    min(outcome.retry_after_s, MAX_BACKOFF_S, max(0.0, window_end[0] - time.monotonic()))
                )
            if first:
                first, first_answers = False, first_answers + 1
                if first_answers == config.concurrency:
                    steady.set()

    clients = [asyncio.create_task(client()) for _ in range(config.concurrency)]
    await asyncio.sleep(config.warmup_s)
    try:
        await asyncio.wait_for(steady.wait(), timeout=config.timeout_s)
    except TimeoutError:
        pass  # some first request is still out after the client timeout: it will count as an error
    measure_from = time.monotonic()
    window_end[0] = stop_at = measure_from + config.duration_s
    scrape_before = await _scrape(run.client, run.target)
    gauge_task = run.start_gauges(measure_from, stop_at)
    _, pending = await asyncio.wait(clients, timeout=max(0.0, stop_at - time.monotonic()))
    for task in pending:  # answers after the window would not be counted: stop waiting
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    if gauge_task is not None:
        await gauge_task
    return measure_from, stop_at, scrape_before, len(pending)


async def _open_loop(run: _Run) -> tuple[float, float, Scrape | None, int]:
    """Poisson arrivals on a fixed schedule; each latency counts from the request's due time."""
    config = run.config
    start = time.monotonic()
    measure_from, stop_at = start + config.warmup_s, start + config.warmup_s + config.duration_s
    in_flight: set[asyncio.Task[Outcome]] = set()

    def record(task: asyncio.Task[Outcome]) -> None:
        in_flight.discard(task)
        if not task.cancelled():
            run.outcomes.append(task.result())

    async def scrape_at_window_start() -> Scrape | None:
        await asyncio.sleep(max(0.0, measure_from - time.monotonic()))
        return await _scrape(run.client, run.target)

    before_task = asyncio.create_task(scrape_at_window_start())
    gauge_task = run.start_gauges(measure_from, stop_at)
    rng = random.Random(config.seed)
    due = start
    while True:
        due += rng.expovariate(config.rate)
        if due >= stop_at:
            break
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        task = asyncio.ensure_future(run.send(due))
        in_flight.add(task)
        task.add_done_callback(record)
    unfinished = 0
    if in_flight:  # every request due in the window is waited for, up to the client timeout
        _, pending = await asyncio.wait(set(in_flight), timeout=config.timeout_s)
        unfinished = len(pending)
        for task in pending:
            task.cancel()
    scrape_before = await before_task
    if gauge_task is not None:
        await gauge_task
    return measure_from, stop_at, scrape_before, unfinished


def best_level(records: list[dict]) -> dict | None:
    """The level of a sweep (``summary()`` records) with the most pairs/s among those that served every
    request: a level that refused or dropped some did not serve its load, so its pairs/s is no
    capacity figure. None when no level was error-free."""
    ok = [r for r in records if r.get("error_rate") == 0.0 and r.get("pairs_per_s")]
    return max(ok, key=lambda r: r["pairs_per_s"]) if ok else None
