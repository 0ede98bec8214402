"""Relevance metrics on the project's grade scale (numpy and scipy only).

Definitions (docs/DATA.md repeats them for readers of reports):

* **NDCG@k** — gains are ``GRADE_GAINS`` (Irrelevant 0, Partial 1, Exact 2), used linearly:
  DCG = Σ gain / log2(rank + 1). Tied scores share the mean discount of the ranks they span
  (the expected DCG over tie orders, as scikit-learn's ``ndcg_score``), so a constant scorer
  earns no credit from input order. ``k=None`` = NDCG over all judged items. NDCG is undefined
  (NaN) for a query whose gains are all 0; ``mean_ndcg`` excludes and does not count those.
* **AP / MAP** — binary relevance = Exact or Partial; as scikit-learn's ``average_precision_score``
  (ties form one threshold). Undefined (NaN) for a query with no relevant item.
* **ROC-AUC** — tied scores count one half; two binary cuts: Exact vs the rest, and Exact+Partial vs Irrelevant.
* **Macro-F1** — over the three grades, from predicted grade indices.
* **ECE** — of P(relevant) (= P(Exact) + P(Partial)) against Exact+Partial: 10 equal-width bins
  on [0, 1], Σ_b (n_b / n) · |mean p_b − observed rate_b|.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from core.grades import GRADE_LEVELS

ECE_BINS = 10


def _discounts(n: int, k: int | None) -> np.ndarray:
    d = 1.0 / np.log2(np.arange(n) + 2.0)
    if k is not None:
        d[k:] = 0.0
    return d


def dcg(gains: Sequence[float], scores: Sequence[float], k: int | None = 10) -> float:
    """Tie-aware DCG: items with equal scores share the mean discount of their ranks."""
    g = np.asarray(gains, dtype=float)
    s = np.asarray(scores, dtype=float)
    if g.shape != s.shape:
        raise ValueError(f"gains ({g.shape}) and scores ({s.shape}) differ in shape")
    order = np.argsort(-s, kind="stable")
    g, s = g[order], s[order]
    disc = _discounts(len(g), k)
    total = 0.0
    start = 0
    while start < len(s):
        end = start + 1
        while end < len(s) and s[end] == s[start]:
            end += 1
        total += g[start:end].sum() * disc[start:end].mean()
        start = end
    return float(total)


def ndcg(gains: Sequence[float], scores: Sequence[float], k: int | None = 10) -> float:
    """NDCG of one query; NaN when every gain is 0 (no ideal ranking to compare with)."""
    g = np.asarray(gains, dtype=float)
    ideal = float((np.sort(g)[::-1] * _discounts(len(g), k)).sum())
    if ideal <= 0.0:
        return float("nan")
    return dcg(g, scores, k) / ideal


def _groups(query_ids: Sequence[str]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for i, q in enumerate(query_ids):
        groups.setdefault(q, []).append(i)
    return groups


def per_query_ndcg(
    query_ids: Sequence[str], gains: Sequence[float], scores: Sequence[float], k: int | None = 10
) -> dict[str, float]:
    g = np.asarray(gains, dtype=float)
    s = np.asarray(scores, dtype=float)
    if not len(query_ids) == len(g) == len(s):
        raise ValueError(
            f"query_ids ({len(query_ids)}), gains ({len(g)}) and scores ({len(s)}) differ in length"
        )
    return {q: ndcg(g[idx], s[idx], k) for q, idx in _groups(query_ids).items()}


def mean_ndcg(
    query_ids: Sequence[str], gains: Sequence[float], scores: Sequence[float], k: int | None = 10
) -> float:
    """Mean NDCG@k over queries where it is defined (NaN if none is)."""
    values = [v for v in per_query_ndcg(query_ids, gains, scores, k).values() if not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def average_precision(relevant: Sequence[int], scores: Sequence[float]) -> float:
    """AP of one query (binary relevance); NaN when no item is relevant.

    AP = Σ_t (recall_t − recall_{t−1}) · precision_t over the distinct score thresholds t, high to
    low (tied items enter together), as scikit-learn's ``average_precision_score``.
    """
    y = np.asarray(relevant, dtype=int)
    if y.sum() == 0:
        return float("nan")
    s = np.asarray(scores, dtype=float)
    order = np.argsort(-s, kind="stable")
    y, s = y[order], s[order]
    last_of_tie = np.r_[s[1:] != s[:-1], True]
    tp = np.cumsum(y)[last_of_tie]
    seen = (np.arange(len(y)) + 1)[last_of_tie]
    recall_step = np.diff(np.r_[0, tp]) / y.sum()
    return float(np.sum(recall_step * tp / seen))


def binary_auc(y_true: Sequence[int], scores: Sequence[float]) -> float:
    """ROC-AUC (tied scores count one half); NaN when ``y_true`` holds a single class.

    Computed as the Mann-Whitney U statistic over average ranks (equal to scikit-learn's
    ``roc_auc_score``, and fast enough for 1000 bootstrap resamples).
    """
    from scipy.stats import rankdata

    y = np.asarray(y_true, dtype=int)
    if y.size == 0 or y.min() == y.max():
        return float("nan")
    ranks = rankdata(np.asarray(scores, dtype=float))
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def macro_f1(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int = len(GRADE_LEVELS)) -> float:
    """Macro-F1 over ``n_classes`` grade indices; a class absent from both truth and prediction
    is left out of the mean (its F1 is undefined)."""
    t = np.asarray(y_true, dtype=int)
    p = np.asarray(y_pred, dtype=int)
    scores = []
    for c in range(n_classes):
        tp = int(np.sum((t == c) & (p == c)))
        fp = int(np.sum((t != c) & (p == c)))
        fn = int(np.sum((t == c) & (p != c)))
        if tp + fp + fn == 0:
            continue
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else float("nan")


def calibration_bins(
    y_true: Sequence[int], prob: Sequence[float], n_bins: int = ECE_BINS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width bin: (count, mean predicted probability, observed positive rate)."""
    y = np.asarray(y_true, dtype=float)
    p = np.clip(np.asarray(prob, dtype=float), 0.0, 1.0)
    which = np.minimum((p * n_bins).astype(int), n_bins - 1)  # p == 1.0 falls in the last bin
    count = np.bincount(which, minlength=n_bins).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(which, weights=p, minlength=n_bins) / count
        rate = np.bincount(which, weights=y, minlength=n_bins) / count
    return count, mean_p, rate


def expected_calibration_error(y_true: Sequence[int], prob: Sequence[float], n_bins: int = ECE_BINS) -> float:
    count, mean_p, rate = calibration_bins(y_true, prob, n_bins)
    if count.sum() == 0:
        return float("nan")
    used = count > 0
    return float(np.sum(count[used] / count.sum() * np.abs(mean_p[used] - rate[used])))
