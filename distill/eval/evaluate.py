"""Scores of systems on one labelled set → metrics with bootstrap 95% CIs and paired differences.

Which queries each metric uses (docs/DATA.md):

* NDCG@10 and NDCG@all: queries with at least two distinct grades. With a single grade every
  ranking earns the same NDCG (1, or undefined when all are Irrelevant), so such queries carry
  no information about a system; they are excluded and counted (``queries_ndcg``).
* MAP: queries with both a relevant (Exact/Partial) and an Irrelevant item, likewise.
* AUC, macro-F1 and ECE: every pair.

Grades and P(relevant): a system that outputs grade probabilities (a bundle with a grade head,
teacher annotations) is used as is: grade = argmax, P(relevant) = P(Exact) + P(Partial). A system
that outputs only scores (BM25, a cosine bi-encoder) is mapped on a separate calibration set
(by default the train split of the same data): P(relevant) by Platt scaling (logistic
regression on the score) and two score thresholds chosen to maximise macro-F1. Without a
calibration set its F1 and ECE are not reported.

Confidence intervals: 1000 bootstrap resamples of the queries (seed 0), percentile 95% CI; a
paired comparison takes the difference of two systems on the same resamples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.grades import GRADE_GAINS, GRADE_LEVELS
from distill.data.schema import LabelledPair
from distill.eval import metrics as M

METRICS: tuple[str, ...] = ("ndcg@10", "ndcg@all", "map", "auc_exact", "auc_relevant", "macro_f1", "ece")
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
_PARTIAL = GRADE_LEVELS.index("Partial")
_EXACT = GRADE_LEVELS.index("Exact")


@dataclass
class SystemOutput:
    """What a system said about each pair of an EvalSet (same order)."""

    name: str
    scores: np.ndarray  # higher = more relevant; NaN = not scored
    grade_probs: np.ndarray | None = None  # [pairs, len(GRADE_LEVELS)]
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Predictions:
    scores: np.ndarray
    p_relevant: np.ndarray | None
    grades: np.ndarray | None
    method: str


class EvalSet:
    """Labelled pairs grouped by query, as arrays."""

    def __init__(self, pairs: list[LabelledPair]) -> None:
        unlabelled = [p.source or p.query_id for p in pairs if p.label is None]
        if unlabelled:
            raise ValueError(
                f"{len(unlabelled)} pairs have no label (e.g. {unlabelled[0]}); evaluation needs labels"
            )
        if not pairs:
            raise ValueError("no pairs to evaluate")
        self.pairs = pairs
        self.query_ids = [p.query_id for p in pairs]
        self.labels = np.array([GRADE_LEVELS.index(p.label) for p in pairs], dtype=int)
        self.gains = np.array([GRADE_GAINS[p.label] for p in pairs], dtype=float)
        self.relevant = (self.labels >= _PARTIAL).astype(int)
        self.exact = (self.labels == _EXACT).astype(int)
        groups: dict[str, list[int]] = {}
        for i, q in enumerate(self.query_ids):
            groups.setdefault(q, []).append(i)
        self.queries = list(groups)
        self.query_index = [np.array(groups[q]) for q in self.queries]
        self.ndcg_mask = np.array([len(set(self.labels[ix])) >= 2 for ix in self.query_index])
        self.ap_mask = np.array([0 < self.relevant[ix].sum() < len(ix) for ix in self.query_index])

    def subset(self, mask: np.ndarray) -> EvalSet:
        return EvalSet([p for p, keep in zip(self.pairs, mask, strict=True) if keep])


def predictions(out: SystemOutput, calibration: tuple[EvalSet, SystemOutput] | None) -> Predictions:
    if out.grade_probs is not None:
        probs = out.grade_probs
        return Predictions(
            out.scores,
            probs[:, _PARTIAL] + probs[:, _EXACT],
            probs.argmax(axis=1),
            "grade probabilities of the system",
        )
    if calibration is None:
        return Predictions(out.scores, None, None, "scores only, no calibration set: F1 and ECE not reported")
    cal_set, cal_out = calibration
    ok = ~np.isnan(cal_out.scores)
    x, labels = cal_out.scores[ok], cal_set.labels[ok]
    platt = _fit_platt(x, (labels >= _PARTIAL).astype(int))
    t_low, t_high = _fit_thresholds(x, labels)
    p_rel = platt(out.scores)
    grades = np.where(out.scores >= t_high, _EXACT, np.where(out.scores >= t_low, _PARTIAL, 0))
    return Predictions(
        out.scores,
        p_rel,
        grades,
        f"scores mapped on {len(x)} calibration pairs (Platt; grade thresholds {t_low:.4g} / {t_high:.4g})",
    )


def _fit_platt(x: np.ndarray, y: np.ndarray):
    from sklearn.linear_model import LogisticRegression

    if y.min() == y.max():
        rate = float(y.mean())
        return lambda s: np.full(len(s), rate)
    mu, sd = float(x.mean()), float(x.std()) or 1.0
    model = LogisticRegression().fit(((x - mu) / sd).reshape(-1, 1), y)
    return lambda s: model.predict_proba(((np.nan_to_num(s) - mu) / sd).reshape(-1, 1))[:, 1]


def _fit_thresholds(x: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The (low, high) score cuts among 41 quantiles that maximise macro-F1 on the calibration set."""
    cuts = np.unique(np.quantile(x, np.linspace(0.0, 1.0, 41)))
    best = (-1.0, float(cuts[0]), float(cuts[-1]))
    for i, low in enumerate(cuts):
        for high in cuts[i:]:
            pred = np.where(x >= high, _EXACT, np.where(x >= low, _PARTIAL, 0))
            f1 = M.macro_f1(labels, pred)
            if f1 > best[0]:
                best = (f1, float(low), float(high))
    return best[1], best[2]


class _Scored:
    """Per-query values and pair arrays of one system, for fast resampling."""

    def __init__(self, es: EvalSet, pred: Predictions) -> None:
        self.es, self.pred = es, pred
        self.ndcg10 = np.array([M.ndcg(es.gains[ix], pred.scores[ix], 10) for ix in es.query_index])
        self.ndcg_all = np.array([M.ndcg(es.gains[ix], pred.scores[ix], None) for ix in es.query_index])
        self.ap = np.array(
            [
                M.average_precision(es.relevant[ix], pred.scores[ix]) if es.ap_mask[q] else np.nan
                for q, ix in enumerate(es.query_index)
            ]
        )

    def metrics(self, draw: np.ndarray) -> np.ndarray:
        es, pred = self.es, self.pred
        nd = draw[es.ndcg_mask[draw]]
        ap = draw[es.ap_mask[draw]]
        pairs = np.concatenate([es.query_index[q] for q in draw])
        values = [
            self.ndcg10[nd].mean() if len(nd) else np.nan,
            self.ndcg_all[nd].mean() if len(nd) else np.nan,
            self.ap[ap].mean() if len(ap) else np.nan,
            M.binary_auc(es.exact[pairs], pred.scores[pairs]),
            M.binary_auc(es.relevant[pairs], pred.scores[pairs]),
            M.macro_f1(es.labels[pairs], pred.grades[pairs]) if pred.grades is not None else np.nan,
            M.expected_calibration_error(es.relevant[pairs], pred.p_relevant[pairs])
            if pred.p_relevant is not None
            else np.nan,
        ]
        return np.array(values, dtype=float)


def _ci(samples: np.ndarray) -> list[float | None]:
    finite = samples[~np.isnan(samples)]
    if len(finite) == 0:
        return [None, None]
    return [float(np.percentile(finite, 2.5)), float(np.percentile(finite, 97.5))]


def _num(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


def _per_query(queries: list[str], values: np.ndarray, mask: np.ndarray) -> dict[str, float | None]:
    return {q: _num(v) for q, v, keep in zip(queries, values, mask, strict=True) if keep}


def evaluate(
    es: EvalSet,
    preds: dict[str, Predictions],
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    progress: bool = False,
    compare: Sequence[tuple[str, str]] = (),
) -> dict[str, Any]:
    """Metrics of each system with 95% CIs, and paired differences (same resampled queries) of every
    later system vs the first, then of each (a, b) in ``compare`` (system names)."""
    n_q = len(es.queries)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_q, size=(resamples, n_q))
    full = np.arange(n_q)
    scored = {name: _Scored(es, p) for name, p in preds.items()}
    point = {name: s.metrics(full) for name, s in scored.items()}
    iterator = draws
    if progress:
        from tqdm import tqdm

        iterator = tqdm(draws, desc="bootstrap", unit="resample", leave=False, disable=None)
    rows = {name: [] for name in scored}
    for draw in iterator:
        for name, s in scored.items():
            rows[name].append(s.metrics(draw))
    boot = {name: np.array(r) for name, r in rows.items()}
    result: dict[str, Any] = {
        "pairs": len(es.pairs),
        "queries": n_q,
        "queries_ndcg": int(es.ndcg_mask.sum()),
        "queries_map": int(es.ap_mask.sum()),
        "label_counts": {g: int((es.labels == i).sum()) for i, g in enumerate(GRADE_LEVELS)},
        "bootstrap": {"resamples": resamples, "seed": seed, "unit": "query", "ci": "percentile 95%"},
        "systems": {},
        "comparisons": [],
    }
    for name, s in scored.items():
        result["systems"][name] = {
            "predictions": s.pred.method,
            "metrics": {
                m: {"value": _num(point[name][j]), "ci95": _ci(boot[name][:, j])}
                for j, m in enumerate(METRICS)
            },
            "per_query": {
                "ndcg@10": _per_query(es.queries, s.ndcg10, es.ndcg_mask),
                "ndcg@all": _per_query(es.queries, s.ndcg_all, es.ndcg_mask),
                "ap": _per_query(es.queries, s.ap, es.ap_mask),
            },
        }
    names = list(scored)
    unknown = sorted({n for pair in compare for n in pair} - set(names))
    if unknown:
        raise ValueError(f"--compare names {unknown}: not among the systems {names}")
    # dict.fromkeys: a --compare pair that is also a later-vs-first pair is reported once
    for a, b in dict.fromkeys([(other, names[0]) for other in names[1:]] + list(compare)):
        diff = boot[a] - boot[b]
        result["comparisons"].append(
            {
                "a": a,
                "b": b,
                "metrics": {
                    m: {"diff": _num(point[a][j] - point[b][j]), "ci95": _ci(diff[:, j])}
                    for j, m in enumerate(METRICS)
                },
            }
        )
    return result
