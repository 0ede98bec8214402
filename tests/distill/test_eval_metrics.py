"""Metric functions against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from distill.eval import metrics as M


def test_ndcg_three_items_by_hand():
    # gains (Exact 2, Irrelevant 0, Partial 1) ranked by score: 2, 0, 1
    # DCG = 2/log2(2) + 0/log2(3) + 1/log2(4) = 2.5; IDCG = 2 + 1/log2(3) = 2.63093
    gains, scores = [2, 0, 1], [0.9, 0.8, 0.1]
    assert M.dcg(gains, scores, k=None) == pytest.approx(2.5)
    assert M.ndcg(gains, scores, k=None) == pytest.approx(2.5 / (2 + 1 / math.log2(3)))
    # @2: DCG = 2, IDCG = 2 + 1/log2(3)
    assert M.ndcg(gains, scores, k=2) == pytest.approx(2 / (2 + 1 / math.log2(3)))
    assert M.ndcg(gains, [0.1, 0.2, 0.3], k=None) == pytest.approx((1 + 0 + 2 / 2) / (2 + 1 / math.log2(3)))


def test_ndcg_ties_share_discounts_and_undefined_queries():
    # All tied: each item gets the mean discount (1 + 1/log2 3) / 2 of the two ranks.
    assert M.dcg([2, 0], [0.5, 0.5], k=None) == pytest.approx(2 * (1 + 1 / math.log2(3)) / 2)
    assert math.isnan(M.ndcg([0, 0], [0.3, 0.1]))
    # mean over defined queries only: q1 perfect (1.0), q2 reversed, q3 undefined
    qids = ["q1", "q1", "q2", "q2", "q3"]
    gains = [2, 0, 0, 1, 0]
    scores = [0.9, 0.1, 0.9, 0.1, 0.5]
    q2 = (1 / math.log2(3)) / 1.0
    assert M.mean_ndcg(qids, gains, scores, k=10) == pytest.approx((1.0 + q2) / 2)
    assert math.isnan(M.mean_ndcg(["a"], [0], [1.0]))


def test_average_precision_by_hand():
    # relevant at ranks 1 and 3: AP = (1/1 + 2/3) / 2
    assert M.average_precision([1, 0, 1], [0.9, 0.5, 0.1]) == pytest.approx((1 + 2 / 3) / 2)
    assert math.isnan(M.average_precision([0, 0], [0.2, 0.1]))
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(1)
    y, s = rng.integers(0, 2, 50), rng.integers(0, 4, 50).astype(float)  # many ties
    assert M.average_precision(y, s) == pytest.approx(average_precision_score(y, s))


def test_binary_auc_by_hand():
    # positives 0.8, 0.4; negatives 0.6, 0.2: pairs won 3 of 4
    assert M.binary_auc([1, 0, 1, 0], [0.8, 0.6, 0.4, 0.2]) == pytest.approx(0.75)
    assert M.binary_auc([1, 0], [0.5, 0.5]) == pytest.approx(0.5)
    assert math.isnan(M.binary_auc([1, 1], [0.2, 0.3]))
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y, s = rng.integers(0, 2, 200), rng.integers(0, 5, 200).astype(float)  # many ties
    assert M.binary_auc(y, s) == pytest.approx(roc_auc_score(y, s))


def test_macro_f1_by_hand():
    truth = [0, 0, 1, 1, 2, 2]
    pred = [0, 1, 1, 1, 2, 0]
    # class 0: tp 1, fp 1, fn 1 → 0.5; class 1: tp 2, fp 1, fn 0 → 0.8; class 2: tp 1, fn 1 → 2/3
    assert M.macro_f1(truth, pred) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert M.macro_f1([2, 2], [2, 2]) == pytest.approx(1.0)  # absent classes are left out


def test_ece_by_hand():
    # bin [0.1,0.2): p 0.1, 0.1 with outcomes 0, 1 → |0.1 - 0.5| = 0.4, weight 2/4
    # bin [0.9,1.0]: p 0.9, 1.0 with outcomes 1, 1 → |0.95 - 1| = 0.05, weight 2/4
    y, p = [0, 1, 1, 1], [0.1, 0.1, 0.9, 1.0]
    assert M.expected_calibration_error(y, p) == pytest.approx(0.5 * 0.4 + 0.5 * 0.05)
    count, mean_p, rate = M.calibration_bins(y, p)
    assert count.sum() == 4 and count[1] == 2 and count[9] == 2
    assert np.isnan(mean_p[0]) and rate[9] == 1.0
    assert M.expected_calibration_error([1, 0], [1.0, 0.0]) == pytest.approx(0.0)
