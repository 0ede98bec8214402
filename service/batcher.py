"""Dynamic batching: the model inputs of all concurrent requests flow through one bounded queue,
scheduled earliest deadline first, and admitted only when every admitted request can still meet its
deadline at the measured model speed.

Life of a request's inputs (one input = one model row: a (query, item) pair, or one text for bi):

1. ``admit(n, deadline_ms)`` reserves room for ``n`` inputs or raises ``Overloaded`` at once
   (→ 503 + Retry-After): when the inputs admitted and not yet finished would exceed the capacity, or
   when the work already queued ahead of this request's target time would use it all up.
2. The caller tokenises (in its own thread) and ``enqueue``s the encodings. Now the request's own
   cost is known (its tokens × the measured seconds per token), and ``enqueue`` runs the deadline
   test (``_check_feasible``): with this request inserted in deadline order, each request from it
   onwards must still finish by its target. A request that could not finish in time even on an
   idle server gets ``TooCostly`` (413: retrying cannot help; split it or give it a longer
   deadline); one that does not fit behind the queued work gets ``Overloaded`` (503).
3. The batch loop (an asyncio task) waits up to ``max_wait_s`` for more inputs, then takes a batch
   in order of the requests' target times (earliest deadline first; equal deadlines keep arrival
   order): up to ``max_pairs`` rows, ``max_tokens`` padded tokens (rows × longest row), and what the
   model runs in ``max_batch_s``. Batches are re-formed after each run, so a large request is served
   in slices and a request with an earlier deadline overtakes it between slices: it cannot
   monopolise the model, and the deadline test keeps its own deadline safe. Inputs of released
   requests (client gone, deadline passed) are skipped, never run.
4. The batch runs in one inference thread (the event loop never blocks); inside it, inputs are
   sorted by length and cut into runs so little compute goes to padding (``plan_runs``). While a
   batch runs, new requests are tokenised in the tokeniser thread and queue up for the next one.
5. Output rows are scattered back to each request in its own input order.

The speed estimate is seconds per real token over recent batches, weighted by their tokens, timed
around the whole hand-off to the inference thread: it includes what contention for the cores costs.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from core.tokenization import Encoded, pad_batch
from service.errors import DeadlineExceeded, Overloaded, TooCostly
from service.metrics import Metrics

log = logging.getLogger(__name__)

# Share of a request's deadline by which the model must have finished its inputs (its *target*); the
# rest is for reading and parsing the body, tokenising, batching waits, the HTTP round trip and the
# error of the speed estimate.
DEADLINE_SHARE = 0.6

# Weight of the past in the speed estimate, per batch (token-weighted, so large batches count more).
SPEED_DECAY = 0.8

# Padding a run may carry before a new run is cheaper, in token-equivalents of one extra model call.
# On CPU a call costs little next to a token of a 6-layer encoder; on GPU padding is nearly free.
RUN_OVERHEAD_TOKENS = {"cpu": 64, "cuda": 4096}


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    max_pairs: int
    max_tokens: int
    max_wait_s: float
    capacity: int
    run_overhead_tokens: int = RUN_OVERHEAD_TOKENS["cpu"]
    # A batch holds at most this much work at the measured speed: the longest a newly arrived request
    # with an earlier deadline waits for the model. 0: no limit.
    max_batch_s: float = 0.0


class Ticket:
    """One request's share of the queue."""

    __slots__ = (
        "n",
        "deadline",
        "deadline_ms",
        "target",
        "seq",
        "future",
        "out",
        "entries",
        "queued_tokens",
        "longest",
        "outstanding",
        "released",
        "wait_observed",
        "infer_s",
    )

    def __init__(
        self,
        n: int,
        deadline: float,
        deadline_ms: float,
        future: asyncio.Future,
        *,
        target: float | None = None,
        seq: int = 0,
    ) -> None:
        self.n = n
        self.deadline = deadline  # time.monotonic() value
        self.deadline_ms = deadline_ms
        self.target = deadline if target is None else target  # the model should be done by then
        self.seq = seq  # arrival order, to break ties between equal targets
        self.future = future
        self.out: np.ndarray | None = None
        self.entries: deque[Entry] = deque()  # inputs not yet taken into a batch, in input order
        self.queued_tokens = 0  # their tokens
        self.longest = 0  # their longest input (an upper bound once a batch has taken some)
        self.outstanding = n  # admitted inputs not yet finished (for capacity accounting)
        self.released = False
        self.wait_observed = False
        self.infer_s = 0.0  # wall time of the batches that held its inputs (its request's "infer" time)

    @property
    def order(self) -> tuple[float, int]:
        return self.target, self.seq


@dataclass(slots=True)
class Entry:
    ticket: Ticket
    index: int  # position in the request's input list
    encoded: Encoded
    enqueued_at: float


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds >= 0.01 else f"{seconds * 1000:.2f} ms"


def take_batch(pending: list[Ticket], max_pairs: int, max_tokens: int) -> list[Entry]:
    """Take a batch from ``pending`` (tickets in scheduling order): their queued inputs in that order,
    stopping before ``max_pairs`` rows or ``max_tokens`` padded tokens would be exceeded (always at
    least one input). Released and emptied tickets are removed from ``pending``."""
    batch: list[Entry] = []
    longest = 0
    full = False
    for ticket in pending:
        if ticket.released:
            continue
        while ticket.entries:
            entry = ticket.entries[0]
            new_longest = max(longest, len(entry.encoded))
            if batch and (len(batch) + 1 > max_pairs or (len(batch) + 1) * new_longest > max_tokens):
                full = True
                break
            batch.append(ticket.entries.popleft())
            ticket.queued_tokens -= len(entry.encoded)
            longest = new_longest
        if not ticket.entries:
            ticket.longest = 0
        if full:
            break
    pending[:] = [t for t in pending if t.entries and not t.released]
    return batch


def plan_runs(lengths: list[int], overhead_tokens: int) -> list[list[int]]:
    """Sort indices by length and cut them into runs (one model call each); a run is closed when adding
    the next input would make its padding exceed ``overhead_tokens``."""
    runs: list[list[int]] = []
    current: list[int] = []
    total = 0
    for i in sorted(range(len(lengths)), key=lengths.__getitem__):
        n = lengths[i]  # the longest so far, since indices come in ascending length
        if current and (len(current) + 1) * n - (total + n) > overhead_tokens:
            runs.append(current)
            current, total = [], 0
        current.append(i)
        total += n
    if current:
        runs.append(current)
    return runs


@dataclass(frozen=True, slots=True)
class BatchStats:
    seconds: float
    padded_tokens: int
    real_tokens: int


class SpeedEstimate:
    """Seconds per real token over recent batches, weighted by their tokens; 0 until the first batch."""

    def __init__(self, decay: float = SPEED_DECAY) -> None:
        self.decay = decay
        self._seconds = 0.0
        self._tokens = 0.0

    def observe(self, seconds: float, tokens: int) -> None:
        self._seconds = self.decay * self._seconds + seconds
        self._tokens = self.decay * self._tokens + tokens

    @property
    def seconds_per_token(self) -> float:
        return self._seconds / self._tokens if self._tokens else 0.0


class Batcher:
    def __init__(
        self,
        run: Callable[[dict[str, np.ndarray]], np.ndarray],
        policy: BatchPolicy,
        metrics: Metrics,
        pad_id: int = 0,
        *,
        on_idle: Callable[[], None] | None = None,
        idle_s: float = 0.0,
    ) -> None:
        self._run = run
        # Called on the inference thread once the queue has been empty for idle_s after some work (the
        # model returns the memory its batches left behind); never while a batch runs.
        self._on_idle = on_idle if idle_s > 0 else None
        self._idle_s = idle_s
        self._worked_since_idle = False
        self.policy = policy
        self._metrics = metrics
        self._pad_id = pad_id
        self._pending: list[Ticket] = []  # tickets with queued inputs, in scheduling order (Ticket.order)
        self._admitted = 0
        self._arrived = asyncio.Event()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relevance-infer")
        self._task: asyncio.Task | None = None
        self.speed = SpeedEstimate()
        self._seq = itertools.count()
        self._running_tokens = 0  # tokens of the batch being computed, and when it was handed over
        self._running_since = 0.0

    @property
    def admitted(self) -> int:
        return self._admitted

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._batch_loop(), name="relevance-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            # Cancel until it takes: on Python 3.11, asyncio.wait_for swallows a cancellation that lands
            # as the awaited event fires (found by the property test of the batcher), and one cancel()
            # would then leave stop() waiting forever.
            while not self._task.done():
                self._task.cancel()
                await asyncio.wait({self._task}, timeout=0.05)
            if not self._task.cancelled() and self._task.exception() is not None:
                log.error("the batch loop had failed", exc_info=self._task.exception())
        self._pool.shutdown(wait=True)

    def compute_now(self, encoded: list[Encoded]) -> np.ndarray:
        """Run inputs outside the queue (warm-up, parity checks), in the caller's thread. Their timing
        seeds the speed estimate, so the first requests are admitted on a measured speed."""
        out, stats = self._compute(encoded)
        self.speed.observe(stats.seconds, stats.real_tokens)
        self._worked_since_idle = True
        return out

    # --- request side (event loop) ---

    def _running_left_s(self, now: float) -> float:
        """What is left of the batch being computed, at the measured speed."""
        if not self._running_tokens:
            return 0.0
        return max(0.0, self._running_tokens * self.speed.seconds_per_token - (now - self._running_since))

    def _work_before_s(self, target: float) -> float:
        """Seconds of queued work scheduled to run before a ticket whose target is ``target``."""
        spt = self.speed.seconds_per_token
        return sum(t.queued_tokens for t in self._pending if t.target <= target and not t.released) * spt

    def backlog_s(self) -> float:
        """Admitted work not yet done, in seconds at the measured speed: the rest of the running batch
        and every queued input (the autoscaling signal, relevance_queue_work_seconds). Event loop only."""
        return self._running_left_s(time.monotonic()) + self._work_before_s(math.inf)

    def refuse_if_overloaded(self, n: int, deadline_ms: float) -> None:
        """Raise Overloaded when ``n`` more inputs do not fit in the queue, or when the work scheduled
        before a request with this deadline would already use up its share of it (``DEADLINE_SHARE``;
        the rest is for tokenising, batching waits, the HTTP round trip and the estimate's error).
        Cheap: called before the body is read."""
        if self._admitted + n > self.policy.capacity:
            self._metrics.rejected.labels("queue_full").inc()
            raise Overloaded(
                f"the scoring queue is full ({self._admitted} of {self.policy.capacity} inputs "
                f"in flight, this request needs {n}); retry shortly"
            )
        now = time.monotonic()
        budget_s = DEADLINE_SHARE * deadline_ms / 1000
        ahead_s = self._running_left_s(now) + self._work_before_s(now + budget_s)
        if ahead_s > budget_s:
            self._metrics.rejected.labels("backlog").inc()
            raise Overloaded(
                f"the scoring queue holds about {ahead_s * 1000:.0f} ms of work ahead of this "
                f"request, too much for its {deadline_ms:g} ms deadline; retry shortly"
            )

    def admit(self, n: int, deadline_ms: float) -> Ticket:
        self.refuse_if_overloaded(n, deadline_ms)
        self._admitted += n
        # inc/dec, not set: during a hot reload two batchers share the gauge, which then shows their sum.
        self._metrics.queue_depth.inc(n)
        now = time.monotonic()
        return Ticket(
            n,
            now + deadline_ms / 1000,
            deadline_ms,
            asyncio.get_running_loop().create_future(),
            target=now + DEADLINE_SHARE * deadline_ms / 1000,
            seq=next(self._seq),
        )

    def enqueue(self, ticket: Ticket, encoded: list[Encoded]) -> None:
        """Queue a ticket's inputs, or release it and raise TooCostly (413) / Overloaded (503) when they
        cannot be scored by its target without making an admitted request miss its own."""
        if len(encoded) != ticket.n:
            raise ValueError(f"ticket admitted {ticket.n} inputs but {len(encoded)} were enqueued")
        if ticket.released:
            return
        tokens = sum(len(e) for e in encoded)
        try:
            self._check_feasible(ticket, tokens)
        except (TooCostly, Overloaded):
            self.release(ticket, "refused")
            raise
        now = time.monotonic()
        ticket.entries.extend(Entry(ticket, i, e, now) for i, e in enumerate(encoded))
        ticket.queued_tokens = tokens
        ticket.longest = max((len(e) for e in encoded), default=0)
        bisect.insort(self._pending, ticket, key=lambda t: t.order)
        self._metrics.queue_tokens.inc(tokens)
        self._arrived.set()

    def _check_feasible(self, ticket: Ticket, tokens: int) -> None:
        """The deadline test of earliest-deadline-first scheduling: with ``ticket`` inserted in target
        order, every ticket from it onwards must finish its queued work by its target (those before it
        are not delayed by it). Passes while the speed is unknown (nothing has run yet)."""
        spt = self.speed.seconds_per_token
        if not spt:
            return
        own_s = tokens * spt
        now = time.monotonic()
        left_s = ticket.target - now  # what the model may still use (tokenising took some already)
        if own_s > left_s:
            self._metrics.rejected.labels("too_costly").inc()
            raise TooCostly(
                f"this request's {ticket.n} model inputs ({tokens} tokens) take about {_ms(own_s)} at the "
                f"measured speed ({1 / spt:.0f} tokens/s), more than the {_ms(max(0.0, left_s))} that the model "
                f"may use of the {ticket.deadline_ms:g} ms left before its deadline ({DEADLINE_SHARE:.0%}, less what "
                "has passed since); "
                "send fewer or shorter items per request, or a longer X-Deadline-Ms"
            )
        finish = now + self._running_left_s(now)
        own_finish: float | None = None
        for other in self._pending:
            if other.released:
                continue
            if own_finish is None and ticket.order < other.order:
                finish += own_s
                own_finish = finish
                if own_finish > ticket.target:
                    break
            finish += other.queued_tokens * spt
            if own_finish is not None and finish > other.target:
                self._metrics.rejected.labels("backlog").inc()
                raise Overloaded(
                    f"scoring this request now would make an admitted request miss its deadline "
                    f"(about {(finish - now) * 1000:.0f} ms of work queued ahead of it); retry shortly"
                )
        if own_finish is None:
            finish += own_s
            own_finish = finish
        if own_finish > ticket.target:
            self._metrics.rejected.labels("backlog").inc()
            raise Overloaded(
                f"the scoring queue holds about {(own_finish - now - own_s) * 1000:.0f} ms of work "
                f"ahead of this request, too much for its {ticket.deadline_ms:g} ms deadline; "
                "retry shortly"
            )

    async def result(self, ticket: Ticket) -> np.ndarray:
        """The output rows in input order; raises DeadlineExceeded at the ticket's deadline."""
        try:
            return await asyncio.wait_for(asyncio.shield(ticket.future), ticket.deadline - time.monotonic())
        except TimeoutError:
            self.release(ticket, "deadline")
            raise DeadlineExceeded(ticket.deadline_ms) from None

    def release(self, ticket: Ticket, reason: str = "cancelled") -> None:
        """Give back a ticket's capacity; its queued inputs are dropped, not computed. Idempotent."""
        if ticket.released:
            return
        ticket.released = True
        if ticket.entries:
            self._metrics.dropped_pairs.labels(reason).inc(len(ticket.entries))
            self._metrics.queue_tokens.dec(ticket.queued_tokens)
            ticket.entries.clear()
            ticket.queued_tokens = 0
        self._admitted -= ticket.outstanding
        self._metrics.queue_depth.dec(ticket.outstanding)
        ticket.outstanding = 0
        if ticket.future.done():
            return
        if reason == "deadline":
            ticket.future.set_exception(DeadlineExceeded(ticket.deadline_ms))
            ticket.future.exception()  # mark retrieved: the request may already have stopped waiting
        else:
            ticket.future.cancel()

    # --- batch loop (event loop) and inference (thread) ---

    async def _batch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wait_for_batch()
            batch = self._take()
            if not batch:
                continue
            now = time.monotonic()
            tokens = 0
            for entry in batch:
                tokens += len(entry.encoded)
                t = entry.ticket
                if not t.wait_observed:
                    t.wait_observed = True
                    self._metrics.queue_wait_seconds.observe(now - entry.enqueued_at)
            self._metrics.queue_tokens.dec(tokens)
            self._running_tokens, self._running_since = tokens, now
            try:
                out, stats = await loop.run_in_executor(self._pool, self._compute, [e.encoded for e in batch])
            except Exception as exc:  # a failing model fails the requests of this batch, not the loop
                self._fail(batch, exc)
                continue
            finally:
                self._running_tokens = 0
            # Timed around the hand-off, not inside the thread: waiting for a core counts too.
            wall_s = time.monotonic() - now
            self._observe(len(batch), stats, wall_s)
            for ticket in {id(e.ticket): e.ticket for e in batch}.values():
                ticket.infer_s += wall_s
            self._worked_since_idle = True
            self._scatter(batch, out)

    async def _wait_for_batch(self) -> None:
        while True:
            self._pending[:] = [t for t in self._pending if t.entries]  # released ones have none left
            if self._pending:
                break
            self._arrived.clear()
            if self._on_idle is None or not self._worked_since_idle:
                await self._arrived.wait()
                continue
            try:
                await asyncio.wait_for(self._arrived.wait(), self._idle_s)
            except TimeoutError:
                self._worked_since_idle = False
                try:
                    await asyncio.get_running_loop().run_in_executor(self._pool, self._on_idle)
                except Exception:  # noqa: BLE001 - an idle chore must never stop the batch loop
                    log.warning("the idle hook failed", exc_info=True)
        close_at = min(t.entries[0].enqueued_at for t in self._pending if t.entries) + self.policy.max_wait_s
        # Waiting for the batch to fill must not make a request late: close it by the time the earliest
        # target, less the queued work, leaves.
        spt = self.speed.seconds_per_token
        work_s = sum(t.queued_tokens for t in self._pending) * spt
        close_at = min(close_at, min(t.target for t in self._pending) - work_s)
        while not self._full():
            remaining = close_at - time.monotonic()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return

    def _max_tokens(self) -> int:
        """The padded-token budget of the next batch: ``max_tokens``, and what runs in ``max_batch_s``."""
        spt = self.speed.seconds_per_token
        if self.policy.max_batch_s and spt:
            return max(1, min(self.policy.max_tokens, int(self.policy.max_batch_s / spt)))
        return self.policy.max_tokens

    def _full(self) -> bool:
        rows = longest = 0
        max_tokens = self._max_tokens()
        for ticket in self._pending:
            if ticket.released:
                continue
            rows += len(ticket.entries)
            longest = max(longest, ticket.longest)
            if rows >= self.policy.max_pairs or rows * longest >= max_tokens:
                return True
        return False

    def _take(self) -> list[Entry]:
        now = time.monotonic()
        for ticket in self._pending:
            if not ticket.released and ticket.deadline <= now:
                self.release(ticket, "deadline")
        return take_batch(self._pending, self.policy.max_pairs, self._max_tokens())

    def _compute(self, encoded: list[Encoded]) -> tuple[np.ndarray, BatchStats]:
        start = time.perf_counter()
        lengths = [len(e) for e in encoded]
        out: np.ndarray | None = None
        padded = 0
        for run in plan_runs(lengths, self.policy.run_overhead_tokens):
            arrays = pad_batch([encoded[i] for i in run], self._pad_id)
            padded += arrays["input_ids"].size
            rows = self._run(arrays)
            if out is None:
                out = np.empty((len(encoded), rows.shape[1]), dtype=np.float32)
            out[run] = rows
        assert out is not None
        return out, BatchStats(time.perf_counter() - start, padded, sum(lengths))

    def _observe(self, rows: int, stats: BatchStats, wall_s: float) -> None:
        self.speed.observe(wall_s, stats.real_tokens)
        m = self._metrics
        m.seconds_per_token.set(self.speed.seconds_per_token)
        m.inference_seconds.observe(stats.seconds)
        m.batch_pairs.observe(rows)
        m.batch_tokens.observe(stats.padded_tokens)
        m.padding_ratio.observe(1 - stats.real_tokens / stats.padded_tokens)

    def _scatter(self, batch: list[Entry], out: np.ndarray) -> None:
        finished = 0
        for row, entry in enumerate(batch):
            t = entry.ticket
            if t.released:
                continue
            if t.out is None:
                t.out = np.empty((t.n, out.shape[1]), dtype=np.float32)
            t.out[entry.index] = out[row]
            t.outstanding -= 1
            self._admitted -= 1
            finished += 1
            if t.outstanding == 0 and not t.future.done():
                t.future.set_result(t.out)
        self._metrics.queue_depth.dec(finished)

    def _fail(self, batch: list[Entry], exc: Exception) -> None:
        for entry in batch:
            t = entry.ticket
            if not t.released and not t.future.done():
                t.future.set_exception(exc)
