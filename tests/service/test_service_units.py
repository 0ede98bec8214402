"""Unit tests of the scoring service's parts: provider choice, batch policy, batcher, parsing, score maps."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from core.tokenization import Encoded
from service.batcher import Batcher, BatchPolicy, Entry, Ticket, plan_runs, take_batch
from service.embedding_cache import EmbeddingCache, cache_key
from service.errors import ApiError, DeadlineExceeded, Overloaded, TooCostly
from service.metrics import Metrics
from service.providers import CPU, CUDA, ProviderError, choose_provider
from service.schemas import Limits, field_path, parse_score_request
from service.settings import DEFAULT_BUNDLE, STUDENT_BUNDLE, Settings, default_bundle_path

# --- provider choice ---


def test_provider_cpu_requested_is_cpu_even_with_cuda():
    choice = choose_provider("cpu", [CUDA, CPU])
    assert choice.providers == [CPU] and choice.device == "cpu" and choice.warning is None


def test_provider_auto_prefers_cuda_and_falls_back_silently():
    assert choose_provider("auto", [CUDA, CPU]).providers == [CUDA, CPU]
    choice = choose_provider("auto", [CPU])
    assert choice.providers == [CPU] and choice.warning is None


def test_provider_cuda_missing_falls_back_with_warning_or_refuses_if_strict():
    choice = choose_provider("cuda", [CPU])
    assert choice.providers == [CPU] and choice.device == "cpu"
    assert "RELEVANCE_PROVIDER=cuda" in choice.warning and "falling back to CPU" in choice.warning
    with pytest.raises(ProviderError, match="onnxruntime-gpu"):
        choose_provider("cuda", [CPU], strict=True)
    assert choose_provider("cuda", [CUDA, CPU], strict=True).device == "cuda"


# --- batch policy ---


def _enc(n: int, first: int = 1) -> Encoded:
    ids = list(range(first, first + n))
    return Encoded(ids=ids, type_ids=[0] * n, offsets=[(0, 0)] * n, sequence_ids=[0] * n)


def _ticket(n: int = 1, target: float = 1e18, seq: int = 0, lengths: tuple[int, ...] = ()) -> Ticket:
    t = Ticket(n, deadline=1e18, deadline_ms=1000, future=None, target=target, seq=seq)  # type: ignore[arg-type]
    t.entries.extend(Entry(t, i, _enc(k), 0.0) for i, k in enumerate(lengths))
    t.queued_tokens = sum(lengths)
    return t


def test_take_batch_stops_at_max_pairs_and_padded_token_budget():
    pending = [_ticket(lengths=(4, 4, 4, 10, 2))]
    assert [len(e.encoded) for e in take_batch(pending, max_pairs=2, max_tokens=10_000)] == [4, 4]
    # 3 rows x 10 tokens would be 30 padded tokens > 25: the batch closes before the long entry.
    pending = [_ticket(lengths=(4, 4, 10, 2))]
    assert [len(e.encoded) for e in take_batch(pending, max_pairs=100, max_tokens=25)] == [4, 4]
    assert [len(e.encoded) for e in pending[0].entries] == [10, 2] and pending[0].queued_tokens == 12
    # A single entry over the budget still goes (alone), so nothing can get stuck.
    assert [len(e.encoded) for e in take_batch(pending, max_pairs=100, max_tokens=5)] == [10]


def test_take_batch_serves_tickets_in_order_and_drops_released_and_emptied_ones():
    first, gone, second = _ticket(lengths=(3, 3)), _ticket(lengths=(3,)), _ticket(lengths=(3, 3, 3))
    gone.released = True
    pending = [first, gone, second]
    batch = take_batch(pending, max_pairs=3, max_tokens=1000)
    assert [(e.ticket, e.index) for e in batch] == [(first, 0), (first, 1), (second, 0)]
    assert pending == [second]  # first is emptied, gone was released


def test_plan_runs_sorts_by_length_covers_every_input_and_cuts_padding():
    rng = np.random.default_rng(0)
    lengths = [int(x) for x in rng.integers(5, 120, size=200)]
    runs = plan_runs(lengths, overhead_tokens=64)
    assert sorted(i for run in runs for i in run) == list(range(200))
    flat = [lengths[i] for run in runs for i in run]
    assert flat == sorted(lengths)
    padded = sum(len(run) * max(lengths[i] for i in run) for run in runs)
    assert padded < 0.8 * len(lengths) * max(lengths)  # far less than one run padded to the longest
    for run in runs:
        assert len(run) * max(lengths[i] for i in run) - sum(lengths[i] for i in run) <= 64 or len(run) == 1
    assert plan_runs([7] * 50, 64) == [list(range(50))]  # equal lengths: one run, no padding


# --- batcher (model replaced by a function of the ids, so results can be checked exactly) ---


def _row_sums(arrays: dict[str, np.ndarray]) -> np.ndarray:
    # Padding-invariant (pad id 0): each row's output is [sum of ids, count of real tokens].
    return np.stack([arrays["input_ids"].sum(1), arrays["attention_mask"].sum(1)], axis=1).astype(np.float32)


def _batcher(run=_row_sums, **policy) -> Batcher:
    defaults = dict(max_pairs=64, max_tokens=100_000, max_wait_s=0.001, capacity=1000)
    return Batcher(run, BatchPolicy(**(defaults | policy)), Metrics())


async def test_batcher_scatters_rows_back_in_each_requests_order():
    batcher = _batcher(max_pairs=7)
    batcher.start()
    try:

        async def one(seed: int):
            rng = np.random.default_rng(seed)
            encoded = [
                _enc(int(n), first=int(f))
                for n, f in zip(rng.integers(1, 30, 20), rng.integers(1, 99, 20), strict=True)
            ]
            ticket = batcher.admit(len(encoded), 5000)
            batcher.enqueue(ticket, encoded)
            out = await batcher.result(ticket)
            expected = np.array([[sum(e.ids), len(e)] for e in encoded], dtype=np.float32)
            np.testing.assert_array_equal(out, expected)

        await asyncio.gather(*(one(s) for s in range(10)))
        assert batcher.admitted == 0
    finally:
        await batcher.stop()


async def test_batcher_refuses_when_full_and_frees_capacity_on_release():
    batcher = _batcher(capacity=10)
    batcher.start()
    try:
        ticket = batcher.admit(8, 5000)
        with pytest.raises(Overloaded) as err:
            batcher.admit(3, 5000)
        assert err.value.status == 503 and err.value.headers["Retry-After"] == "1"
        batcher.release(ticket)
        batcher.release(ticket)  # idempotent
        assert batcher.admitted == 0
        batcher.admit(10, 5000)
    finally:
        await batcher.stop()


async def test_batcher_admits_by_the_deadline_test_of_earliest_deadline_first():
    # Not started: nothing runs, so the queue holds exactly what is enqueued. The speed is set, not
    # measured: 1 ms per token; a ticket's target is DEADLINE_SHARE (0.6) of its deadline from now.
    batcher = _batcher()
    batcher.speed.observe(1.0, 1000)

    def request(deadline_ms: float, *lengths: int) -> Ticket:
        ticket = batcher.admit(len(lengths), deadline_ms)
        batcher.enqueue(ticket, [_enc(n) for n in lengths])
        return ticket

    a = request(3000, 500, 500, 500)  # 1.5 s of work, target 1.8 s
    b = request(5000, 500, 500)  # after a: done at 2.5 s, target 3.0 s
    with pytest.raises(Overloaded, match="would make an admitted request miss its deadline"):
        request(2000, 400)  # fits its own 1.2 s target, but a would then finish at 1.9 s > 1.8 s
    with pytest.raises(TooCostly) as err:
        request(1000, 700)  # 0.7 s alone > 0.6 s: no queue could make it
    assert (err.value.status, err.value.code, err.value.field) == (413, "request_too_costly", "items")
    assert "X-Deadline-Ms" in err.value.message
    e = request(1000, 200)  # goes first; a then finishes at 1.7 s, b at 2.7 s: all in time
    assert batcher._pending == [e, a, b]
    assert batcher.admitted == 6  # the refused requests gave their room back
    # The cheap check before the body is read: the running batch's rest plus the work scheduled before
    # the request's target. A 1000 ms deadline (target 0.6 s) would go first, behind nothing...
    batcher.refuse_if_overloaded(1, 1000)
    batcher._running_tokens, batcher._running_since = 1000, time.monotonic()  # ...unless 1 s of work runs
    with pytest.raises(Overloaded, match="too much for its 1000 ms deadline"):
        batcher.refuse_if_overloaded(1, 1000)
    # The autoscaling signal: 2,700 queued tokens at 1 ms each, plus the running batch's rest.
    assert batcher.backlog_s() == pytest.approx(2.7 + 1.0, abs=0.05)
    batcher._running_tokens = 0
    assert batcher.backlog_s() == pytest.approx(2.7)
    text = _metric_text(batcher)
    assert 'relevance_rejected_requests_total{reason="backlog"} 2.0' in text
    assert 'relevance_rejected_requests_total{reason="too_costly"} 1.0' in text
    assert 'relevance_rejected_requests_total{reason="queue_full"} 0.0' in text  # exists before any event
    assert "relevance_queue_tokens 2700.0" in text
    for ticket in (a, b, e):
        batcher.release(ticket)
    assert batcher.admitted == 0 and "relevance_queue_tokens 0.0" in _metric_text(batcher)
    assert batcher.backlog_s() == 0.0
    await batcher.stop()


async def test_a_large_request_is_served_in_slices_and_an_earlier_deadline_overtakes_it():
    batches: list[list[int]] = []

    def slow(arrays):  # 1 ms per token; records the first id of every row
        batches.append([int(x) for x in arrays["input_ids"][:, 0]])
        time.sleep(0.001 * int(arrays["attention_mask"].sum()))
        return _row_sums(arrays)

    batcher = _batcher(run=slow, max_batch_s=0.05)
    batcher.compute_now([_enc(50)])  # warm-up: seeds the speed estimate
    batcher.start()
    try:
        large = batcher.admit(20, 5000)
        batcher.enqueue(large, [_enc(50, first=100 + i) for i in range(20)])  # 1 s of work
        await asyncio.sleep(0.1)
        small = batcher.admit(1, 600)
        batcher.enqueue(small, [_enc(20, first=7)])
        finished: list[str] = []

        async def wait(name: str, ticket: Ticket) -> None:
            await batcher.result(ticket)
            finished.append(name)

        await asyncio.gather(wait("large", large), wait("small", small))
        assert finished == ["small", "large"]
        rows = [r for b in batches[1:] for r in b]
        assert sorted(rows) == sorted([7] + [100 + i for i in range(20)])  # every input ran exactly once
        assert max(len(b) for b in batches[1:]) < 20  # the large request went in slices
        small_batch = next(i for i, b in enumerate(batches) if 7 in b)
        assert small_batch < max(i for i, b in enumerate(batches) if 119 in b)  # it did not wait for the end
    finally:
        await batcher.stop()


async def test_released_and_expired_inputs_are_never_computed():
    gate = threading.Event()
    seen: list[int] = []

    def slow(arrays):
        gate.wait(5)
        seen.extend(int(x) for x in arrays["input_ids"][:, 0])
        return _row_sums(arrays)

    batcher = _batcher(run=slow, max_pairs=1)
    batcher.start()
    try:
        first = batcher.admit(1, 5000)
        batcher.enqueue(first, [_enc(2, first=100)])
        await asyncio.sleep(0.05)  # first is now running (blocked on the gate)
        gone = batcher.admit(2, 5000)
        batcher.enqueue(gone, [_enc(2, first=200), _enc(2, first=300)])
        late = batcher.admit(1, 1)  # 1 ms deadline: expires while the first batch runs
        batcher.enqueue(late, [_enc(2, first=400)])
        kept = batcher.admit(1, 5000)
        batcher.enqueue(kept, [_enc(2, first=500)])
        batcher.release(gone, "disconnected")
        await asyncio.sleep(0.02)
        gate.set()
        with pytest.raises(DeadlineExceeded):
            await batcher.result(late)
        np.testing.assert_array_equal(await batcher.result(kept), [[1001, 2]])
        await batcher.result(first)
        assert seen == [100, 500]
        assert batcher.admitted == 0  # finished or released: all capacity is back
        text = _metric_text(batcher)
        assert 'relevance_dropped_pairs_total{reason="disconnected"} 2.0' in text
        assert 'relevance_dropped_pairs_total{reason="deadline"} 1.0' in text
    finally:
        gate.set()
        await batcher.stop()


async def test_batch_closes_at_max_wait_when_under_the_limits():
    batches: list[int] = []

    def record(arrays):
        batches.append(len(arrays["input_ids"]))
        return _row_sums(arrays)

    batcher = _batcher(run=record, max_pairs=100, max_wait_s=0.05)
    batcher.start()
    try:
        a, b = batcher.admit(3, 5000), batcher.admit(2, 5000)
        batcher.enqueue(a, [_enc(4)] * 3)
        await asyncio.sleep(0.01)
        batcher.enqueue(b, [_enc(4)] * 2)  # arrives within the wait: same batch
        await asyncio.gather(batcher.result(a), batcher.result(b))
        assert batches == [5]
    finally:
        await batcher.stop()


def _metric_text(batcher: Batcher) -> str:
    from prometheus_client import generate_latest

    return generate_latest(batcher._metrics.registry).decode()


# --- request parsing ---

LIMITS = Limits(max_items=3, max_field_chars=20, max_body_bytes=10_000)


@pytest.mark.parametrize(
    "body,status,code,field",
    [
        (b'{"query": "  ", "items": [{"id": "a", "title": "t"}]}', 422, "validation_error", "query"),
        (b'{"items": [{"id": "a", "title": "t"}]}', 422, "validation_error", "query"),
        (b'{"query": "q", "items": []}', 422, "validation_error", "items"),
        (
            b'{"query": "q", "items": [{"id": "a", "title": "t"}, {"id": "b", "title": "t"}, {"id": "c", "title": "t"},'
            b' {"id": "d", "title": "t"}]}',
            413,
            "too_many_items",
            "items",
        ),
        (
            b'{"query": "q", "items": [{"id": "a", "title": "t"}, {"id": "b", "title": "'
            + b"x" * 21
            + b'"}]}',
            422,
            "field_too_long",
            "items[1].title",
        ),
        (
            b'{"query": "q", "items": [{"id": "a", "title": "t", "brand": "' + b"x" * 21 + b'"}]}',
            422,
            "field_too_long",
            "items[0].brand",
        ),
        (
            b'{"query": "q", "items": [{"id": "a", "title": "t", "attributes": {"size": {"w": 1}}}]}',
            422,
            "validation_error",
            "items[0].attributes.size",
        ),
        (b'{"query": "q", "items": [{"id": 7, "title": "t"}]}', 422, "validation_error", "items[0].id"),
        (b'{"query": "q", "items": [{"id": "a"}]}', 422, "validation_error", "items[0].title"),
        (b'{"query": "q", "items": "abc"}', 422, "validation_error", "items"),
        (
            b'{"query": "q", "items": [{"id": "a", "title": "t"}], "colour": 1}',
            422,
            "validation_error",
            "colour",
        ),
        (b'["q"]', 422, "validation_error", None),
        (b'{"query": "q", "items": [', 400, "invalid_json", None),
        (b'\xff{"query": "q"}', 400, "invalid_encoding", None),
    ],
)
def test_parse_errors_name_the_field(body, status, code, field):
    with pytest.raises(ApiError) as err:
        parse_score_request(body, LIMITS)
    assert (err.value.status, err.value.code, err.value.field) == (status, code, field)
    if field:
        assert err.value.message.startswith(field)


def test_parse_accepts_extras_attributes_and_duplicate_ids():
    body = (
        b'{"query": "sofa", "request_id": "r1", "items": [{"id": "a", "title": "Sofa", "brand": "Acme",'
        b' "price": 12.5, "attributes": {"color": "red", "seats": 3}}, {"id": "a", "title": "Sofa"}]}'
    )
    req = parse_score_request(body, LIMITS)
    assert [i.id for i in req.items] == ["a", "a"] and req.items[0].model_extra == {
        "brand": "Acme",
        "price": 12.5,
    }


def test_field_path():
    assert field_path(("items", 3, "title")) == "items[3].title"
    assert field_path(("query",)) == "query"


# --- settings and cache ---


def test_default_bundle_prefers_a_valid_student(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert default_bundle_path() == DEFAULT_BUNDLE
    STUDENT_BUNDLE.mkdir(parents=True)
    (STUDENT_BUNDLE / "bundle.json").write_text("{}")  # present but invalid: not chosen
    assert default_bundle_path() == DEFAULT_BUNDLE


def test_settings_from_env_and_queue_must_hold_a_request(monkeypatch):
    monkeypatch.setenv("RELEVANCE_PORT", "9001")
    monkeypatch.setenv("RELEVANCE_PROVIDER", "cpu")
    s = Settings()
    assert s.port == 9001 and s.provider == "cpu" and s.host == "127.0.0.1"
    with pytest.raises(ValueError, match="RELEVANCE_QUEUE_CAPACITY_PAIRS"):
        Settings(max_items=100, queue_capacity_pairs=50)


def test_embedding_cache_is_lru_and_keyed_by_text():
    cache = EmbeddingCache(2)
    k1, k2, k3 = (cache_key("v1", "a", "t"), cache_key("v1", "b", "t"), cache_key("v1", "c", "t"))
    assert cache_key("v1", "a", "t") != cache_key("v1", "a", "t2") != cache_key("v2", "a", "t")
    cache.put(k1, np.ones(2))
    cache.put(k2, np.ones(2))
    assert cache.get(k1) is not None  # k1 is now the most recent
    cache.put(k3, np.ones(2))
    assert cache.get(k2) is None and cache.get(k1) is not None and len(cache) == 2


async def test_stop_returns_when_work_arrives_as_the_batch_loop_is_cancelled():
    # The loop waits (asyncio.wait_for) for a batch to fill; an input arriving in the same loop turn as
    # the cancel made Python 3.11's wait_for swallow the cancel, and stop() waited forever.
    batcher = _batcher(max_wait_s=30)
    batcher.start()
    first = batcher.admit(1, 60_000)
    batcher.enqueue(first, [_enc(3)])
    await asyncio.sleep(0.05)  # the loop now waits for the batch to fill
    second = batcher.admit(1, 60_000)
    batcher.enqueue(second, [_enc(4)])  # sets the event the loop waits on...
    stopping = asyncio.create_task(batcher.stop())  # ...as stop() cancels it
    done, _ = await asyncio.wait({stopping}, timeout=5)
    if not done:
        stopping.cancel()
    assert done, "Batcher.stop() hung"
