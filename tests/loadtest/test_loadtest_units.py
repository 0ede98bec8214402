"""Pieces of the load tool: request shapes, /metrics parsing and deltas, the side-by-side comparison."""

from __future__ import annotations

import math
import random

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from loadtest.compare import CurvePoint, compare_sweeps, throughput_at_p99
from loadtest.prom import counter_delta, histogram_delta, parse_metrics
from loadtest.targets import Target
from loadtest.workload import SizeDistribution, Workload
from service.schemas import ScoreRequest


@pytest.mark.parametrize(
    ("spec", "low", "high"), [("50", 50, 50), ("fixed:7", 7, 7), ("uniform:20-200", 20, 200)]
)
def test_size_spec_parses(spec, low, high):
    sizes = SizeDistribution.parse(spec)
    assert (sizes.low, sizes.high) == (low, high)
    rng = random.Random(1)
    assert all(low <= sizes.sample(rng) <= high for _ in range(200))


@pytest.mark.parametrize("spec", ["", "uniform:5", "uniform:9-3", "fixed:0", "poisson:4"])
def test_size_spec_rejects_bad_input_naming_it(spec):
    with pytest.raises(ValueError, match="items spec"):
        SizeDistribution.parse(spec)


def test_bundled_workload_sends_valid_score_requests_of_real_text():
    requests = Workload.from_bundled(SizeDistribution.parse("uniform:20-60"), seed=3).take(30)
    assert {r.n_items for r in requests} <= set(range(20, 61))
    assert len({r.query for r in requests}) > 10  # many different real queries
    for r in requests:
        parsed = ScoreRequest.model_validate_json(r.body)  # the service's own request model
        assert parsed.query == r.query and len(parsed.items) == r.n_items
        assert len({item.id for item in parsed.items}) == r.n_items
        assert all(item.title.strip() for item in parsed.items)
    again = Workload.from_bundled(SizeDistribution.parse("uniform:20-60"), seed=3).take(30)
    assert [r.body for r in again] == [r.body for r in requests]  # deterministic per seed


def test_infinity_targets_send_the_template_rendered_texts():
    request = Workload(
        {"q": [{"id": "1", "title": "Red  shoe", "brand": "Acme"}]},
        [{"id": "2", "title": "Hat"}],
        SizeDistribution(2, 2),
    ).next()
    import orjson

    emb = orjson.loads(Target("i", "http://x", kind="infinity-embeddings", model="m").body(request))
    assert emb == {"model": "m", "input": ["q", "Red shoe | brand: Acme", "Hat"]}
    rerank = orjson.loads(Target("i", "http://x", kind="infinity-rerank", model="m").body(request))
    assert rerank["query"] == "q" and rerank["documents"] == ["Red shoe | brand: Acme", "Hat"]


def test_histogram_and_counter_deltas_cover_only_the_window():
    registry = CollectorRegistry()
    h = Histogram("relevance_batch_size_pairs", "rows", buckets=(1, 10, 100), registry=registry)
    c = Counter("relevance_requests_total", "reqs", ["status"], registry=registry)
    for v in (1, 5, 50):
        h.observe(v)
    c.labels("200").inc(3)
    before = parse_metrics(generate_latest(registry).decode())
    for v in (5, 5, 5, 500):
        h.observe(v)
    c.labels("200").inc(4)
    c.labels("503").inc()
    after = parse_metrics(generate_latest(registry).decode())

    delta = histogram_delta(before, after, "relevance_batch_size_pairs")
    assert delta.count == 4 and delta.sum == 515
    assert delta.non_cumulative() == [(1.0, 0.0), (10.0, 3.0), (100.0, 0.0), (math.inf, 1.0)]
    assert delta.quantile(0.5) == 10.0 and delta.quantile(0.99) == math.inf
    assert counter_delta(before, after, "relevance_requests_total") == {
        (("status", "200"),): 4.0,
        (("status", "503"),): 1.0,
    }
    assert "relevance_batch_size_pairs_bucket" in after.names and "relevance_requests_total" in after.names
    assert histogram_delta(before, after, "no_such_histogram") is None


def test_throughput_at_equal_p99_interpolates_and_bounds():
    curve = [CurvePoint(10, 100), CurvePoint(20, 300), CurvePoint(80, 400)]
    assert math.isnan(throughput_at_p99(curve, 5)[0])  # tighter than anything measured
    assert throughput_at_p99(curve, 15) == (200.0, False)
    assert throughput_at_p99(curve, 50) == (350.0, False)
    assert throughput_at_p99(curve, 500) == (400.0, True)  # at least the best measured
    # A curve that bends back never reports less than a point inside the budget.
    assert throughput_at_p99([CurvePoint(10, 500), CurvePoint(30, 200)], 20)[0] == 500.0


def test_compare_sweeps_matches_load_levels():
    def rec(load, pairs, p99):
        return {"load": load, "pairs_per_s": pairs, "latency_ms": {"p99": p99}}

    ours = [rec("c1", 100, 10), rec("c8", 400, 30)]
    theirs = [rec("c1", 50, 20), rec("c8", 100, 60), rec("c99", 1, 1)]
    rows = compare_sweeps(ours, theirs)
    assert [r["load"] for r in rows] == ["c1", "c8"]
    assert rows[0]["p99_ratio_at_equal_load"] == 0.5
    assert rows[0]["ours_pairs_per_s_at_their_p99"] == 250.0  # halfway between 100 and 400
    assert rows[0]["throughput_ratio_at_equal_p99"] == 5.0
    assert rows[1]["ours_at_their_p99_is_lower_bound"] and rows[1]["throughput_ratio_at_equal_p99"] == 4.0


def test_comparison_table_marks_lower_bounds_but_not_missing_values():
    from loadtest.compare import comparison_table

    def rec(load, pairs, p99):
        return {"load": load, "pairs_per_s": pairs, "latency_ms": {"p99": p99}}

    rows = compare_sweeps([rec("c1", 100, 10)], [rec("c1", 50, 20)])
    assert "≥ 100.0 | ≥ 2.00 |" in comparison_table(rows, "a", "b")
    rows = compare_sweeps([rec("c1", 100, 10)], [rec("c1", 0.0, math.nan)])
    assert "≥" not in comparison_table(rows, "a", "b")
