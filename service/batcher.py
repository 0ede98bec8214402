"""Dynamic batching: the model inputs of all concurrent requests flow through one bounded queue.

Life of a request's inputs (one input = one model row: a (query, item) pair, or one text for bi):

1. ``admit(n)`` reserves room for ``n`` inputs or raises ``Overloaded`` at once (→ 503 + Retry-After):
   when the inputs admitted and not yet finished would exceed the capacity, or when the work already
   queued would take longer than the request's deadline at the measured model speed (the request
   would only time out after wasting compute; refusing it now lets the client retry elsewhere).
2. The caller tokenises (in its own thread) and ``enqueue``s the encodings; the token counts that
   drive batching are those of the encodings, so each input is tokenised exactly once.
3. The batch loop (an asyncio task) closes a batch FIFO when it reaches ``max_pairs`` rows or
   ``max_tokens`` padded tokens (rows × longest row), or when its oldest input has waited
   ``max_wait_s``. Inputs of released requests (client gone, deadline passed) are skipped, never run.
4. The batch runs in one inference thread (the event loop never blocks); inside it, inputs are
   sorted by length and cut into runs so little compute goes to padding (``plan_runs``). While a
   batch runs, new requests are tokenised in the tokeniser thread and queue up for the next one.
5. Output rows are scattered back to each request in its own input order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from service.errors import DeadlineExceeded, Overloaded
from service.metrics import Metrics
from service.tokenization import Encoded, pad_batch

log = logging.getLogger(__name__)

# Share of a request's deadline that the work queued ahead of it may take (see refuse_if_overloaded).
BACKLOG_SHARE = 0.6

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


class Ticket:
    """One request's share of the queue."""

    __slots__ = ("n", "deadline", "future", "out", "queued", "outstanding", "released", "deadline_ms",
                 "wait_observed")

    def __init__(self, n: int, deadline: float, deadline_ms: float, future: asyncio.Future) -> None:
        self.n = n
        self.deadline = deadline  # time.monotonic() value
        self.deadline_ms = deadline_ms
        self.future = future
        self.out: np.ndarray | None = None
        self.queued = 0  # entries in the queue, not yet taken into a batch
        self.outstanding = n  # admitted inputs not yet finished (for capacity accounting)
        self.released = False
        self.wait_observed = False


@dataclass(slots=True)
class Entry:
    ticket: Ticket
    index: int  # position in the request's input list
    encoded: Encoded
    enqueued_at: float


def take_batch(queue: deque[Entry], max_pairs: int, max_tokens: int) -> list[Entry]:
    """Pop a FIFO batch: stop before exceeding ``max_pairs`` rows or ``max_tokens`` padded tokens
    (always at least one entry). Entries of released tickets are discarded on the way."""
    batch: list[Entry] = []
    longest = 0
    while queue:
        entry = queue[0]
        if entry.ticket.released:
            queue.popleft()
            continue
        new_longest = max(longest, len(entry.encoded))
        if batch and (len(batch) + 1 > max_pairs or (len(batch) + 1) * new_longest > max_tokens):
            break
        batch.append(queue.popleft())
        longest = new_longest
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


class Batcher:
    def __init__(self, run: Callable[[dict[str, np.ndarray]], np.ndarray], policy: BatchPolicy,
                 metrics: Metrics, pad_id: int = 0) -> None:
        self._run = run
        self.policy = policy
        self._metrics = metrics
        self._pad_id = pad_id
        self._queue: deque[Entry] = deque()
        self._admitted = 0
        self._arrived = asyncio.Event()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relevance-infer")
        self._task: asyncio.Task | None = None
        self._seconds_per_input = 0.0  # moving average over recent batches; 0 until the first batch

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
        """Run inputs outside the queue (warm-up, parity checks), in the caller's thread."""
        out, _ = self._compute(encoded)
        return out

    # --- request side (event loop) ---

    def refuse_if_overloaded(self, n: int, deadline_ms: float) -> None:
        """Raise Overloaded when ``n`` more inputs do not fit, or could not be scored within the deadline:
        the work queued ahead may take at most ``BACKLOG_SHARE`` of it (the rest is for tokenising,
        batching waits, the HTTP round trip and the error of the speed estimate)."""
        if self._admitted + n > self.policy.capacity:
            self._metrics.rejected.labels("queue_full").inc()
            raise Overloaded(f"the scoring queue is full ({self._admitted} of {self.policy.capacity} inputs "
                             f"in flight, this request needs {n}); retry shortly")
        backlog_ms = (self._admitted + n) * self._seconds_per_input * 1000
        if self._admitted and backlog_ms > BACKLOG_SHARE * deadline_ms:  # an idle server always takes one
            self._metrics.rejected.labels("backlog").inc()
            raise Overloaded(f"the scoring queue holds about {backlog_ms:.0f} ms of work, too much for the "
                             f"{deadline_ms:g} ms request deadline; retry shortly")

    def admit(self, n: int, deadline_ms: float) -> Ticket:
        self.refuse_if_overloaded(n, deadline_ms)
        self._admitted += n
        # inc/dec, not set: during a hot reload two batchers share the gauge, which then shows their sum.
        self._metrics.queue_depth.inc(n)
        loop = asyncio.get_running_loop()
        return Ticket(n, time.monotonic() + deadline_ms / 1000, deadline_ms, loop.create_future())

    def enqueue(self, ticket: Ticket, encoded: list[Encoded]) -> None:
        if len(encoded) != ticket.n:
            raise ValueError(f"ticket admitted {ticket.n} inputs but {len(encoded)} were enqueued")
        if ticket.released:
            return
        now = time.monotonic()
        self._queue.extend(Entry(ticket, i, e, now) for i, e in enumerate(encoded))
        ticket.queued = len(encoded)
        self._arrived.set()

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
        if ticket.queued:
            self._metrics.dropped_pairs.labels(reason).inc(ticket.queued)
            ticket.queued = 0
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
            for entry in batch:
                t = entry.ticket
                t.queued -= 1
                if not t.wait_observed:
                    t.wait_observed = True
                    self._metrics.queue_wait_seconds.observe(now - entry.enqueued_at)
            try:
                out, stats = await loop.run_in_executor(self._pool, self._compute, [e.encoded for e in batch])
            except Exception as exc:  # a failing model fails the requests of this batch, not the loop
                self._fail(batch, exc)
                continue
            self._observe(len(batch), stats)
            self._scatter(batch, out)

    async def _wait_for_batch(self) -> None:
        while not self._queue:
            self._arrived.clear()
            await self._arrived.wait()
        close_at = self._queue[0].enqueued_at + self.policy.max_wait_s
        while not self._full():
            remaining = close_at - time.monotonic()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return

    def _full(self) -> bool:
        rows = longest = 0
        for entry in self._queue:
            if entry.ticket.released:
                continue
            rows += 1
            longest = max(longest, len(entry.encoded))
            if rows >= self.policy.max_pairs or rows * longest >= self.policy.max_tokens:
                return True
        return False

    def _take(self) -> list[Entry]:
        now = time.monotonic()
        for entry in self._queue:
            if not entry.ticket.released and entry.ticket.deadline <= now:
                self.release(entry.ticket, "deadline")
        return take_batch(self._queue, self.policy.max_pairs, self.policy.max_tokens)

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

    def _observe(self, rows: int, stats: BatchStats) -> None:
        per_input = stats.seconds / rows
        self._seconds_per_input = per_input if not self._seconds_per_input else (
            0.8 * self._seconds_per_input + 0.2 * per_input)
        m = self._metrics
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
