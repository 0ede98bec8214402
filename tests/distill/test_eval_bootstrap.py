"""evaluate(): bootstrap CIs over queries, paired comparisons, query filters, score-only calibration."""

from __future__ import annotations

import numpy as np
import pytest

from core.grades import GRADE_LEVELS
from core.item import Item
from distill.data.schema import LabelledPair
from distill.eval.evaluate import EvalSet, Predictions, SystemOutput, evaluate, predictions
from distill.eval.metrics import mean_ndcg


def _set(n_queries: int = 30, seed: int = 1) -> EvalSet:
    rng = np.random.default_rng(seed)
    pairs = []
    for q in range(n_queries):
        for i in range(4):
            pairs.append(
                LabelledPair(
                    query_id=f"q{q}",
                    query=f"query {q}",
                    item=Item(id=f"{q}-{i}", title="t"),
                    label=GRADE_LEVELS[int(rng.integers(0, 3))],
                )
            )
    return EvalSet(pairs)


def _noisy(es: EvalSet, noise: float, seed: int) -> Predictions:
    rng = np.random.default_rng(seed)
    scores = es.labels + rng.normal(0, noise, len(es.labels))
    probs = np.exp(-((scores[:, None] - np.arange(3)) ** 2))
    probs /= probs.sum(axis=1, keepdims=True)
    return predictions(SystemOutput("s", scores, probs), None)


def test_point_estimates_lie_in_their_cis_and_match_metric_functions():
    es = _set()
    good, bad = _noisy(es, 0.5, 2), _noisy(es, 3.0, 3)
    result = evaluate(es, {"good": good, "bad": bad}, resamples=200)
    for system in result["systems"].values():
        for name, m in system["metrics"].items():
            lo, hi = m["ci95"]
            assert lo <= m["value"] <= hi, name
    # NDCG over queries with ≥ 2 grades equals mean_ndcg on those queries.
    keep = [es.ndcg_mask[es.queries.index(q)] for q in es.query_ids]
    idx = np.flatnonzero(keep)
    expected = mean_ndcg([es.query_ids[i] for i in idx], es.gains[idx], good.scores[idx], k=10)
    assert result["systems"]["good"]["metrics"]["ndcg@10"]["value"] == pytest.approx(expected)
    comp = result["comparisons"][0]
    assert (comp["a"], comp["b"]) == ("bad", "good")
    d = comp["metrics"]["auc_relevant"]
    assert d["diff"] < 0 and d["ci95"][1] < 0  # far noisier system is significantly worse


def test_identical_systems_differ_by_exactly_zero():
    es = _set()
    p = _noisy(es, 1.0, 4)
    result = evaluate(es, {"a": p, "b": p}, resamples=50)
    for d in result["comparisons"][0]["metrics"].values():
        assert d["diff"] == 0 and d["ci95"] == [0, 0]


def test_bootstrap_is_reproducible_with_its_seed():
    es = _set()
    p = _noisy(es, 1.0, 5)
    a = evaluate(es, {"s": p}, resamples=50, seed=7)
    b = evaluate(es, {"s": p}, resamples=50, seed=7)
    assert a["systems"]["s"]["metrics"] == b["systems"]["s"]["metrics"]


def test_single_grade_queries_are_excluded_and_counted():
    pairs = [
        LabelledPair(query_id=q, query=q, item=Item(id=f"{q}{i}", title="t"), label=g)
        for q, grades in {
            "mixed": ["Exact", "Irrelevant"],
            "same": ["Exact", "Exact"],
            "none": ["Irrelevant"],
        }.items()
        for i, g in enumerate(grades)
    ]
    es = EvalSet(pairs)
    result = evaluate(
        es, {"s": predictions(SystemOutput("s", np.array([0.1, 0.9, 0.5, 0.5, 0.2])), None)}, resamples=20
    )
    assert result["queries"] == 3 and result["queries_ndcg"] == 1 and result["queries_map"] == 1
    # Only "mixed" counts, and it is ranked worst-first.
    assert result["systems"]["s"]["metrics"]["ndcg@10"]["value"] == pytest.approx(1 / np.log2(3))
    assert result["systems"]["s"]["metrics"]["macro_f1"]["value"] is None  # no grades, no calibration


def test_score_only_system_is_calibrated_on_the_calibration_set():
    cal, es = _set(seed=10), _set(seed=11)
    rng = np.random.default_rng(0)
    cal_out = SystemOutput("s", cal.labels * 10.0 + rng.normal(0, 1, len(cal.labels)))
    out = SystemOutput("s", es.labels * 10.0 + rng.normal(0, 1, len(es.labels)))
    pred = predictions(out, (cal, cal_out))
    assert "calibration pairs" in pred.method
    assert (pred.grades == es.labels).mean() > 0.95
    assert 0 <= pred.p_relevant.min() and pred.p_relevant.max() <= 1
    assert pred.p_relevant[es.labels == 0].mean() < 0.1 < 0.9 < pred.p_relevant[es.labels > 0].mean()
