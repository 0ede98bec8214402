"""Export acceptance checks: a bundle is written only if its ONNX model scores like the trained student.

* fp32: max |score_onnx − score_pytorch| ≤ 1e-4 over the dev pairs (catches export bugs).
* int8 / fp16: Spearman rank correlation with the fp32 ONNX scores ≥ 0.99 and dev NDCG@10 drop
  ≤ 0.005 (catches quantisation that reorders results).

Scores are computed by the service's own ``Scorer`` (template → tokeniser → batcher → ONNX →
score mapping), so a passing bundle is what the service will serve. A failure raises ``ExportCheckError`` saying
which check failed and by how much.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from distill.data.schema import LabelledPair

FP32_MAX_ABS_DIFF = 1e-4
MIN_SPEARMAN = 0.99
MAX_NDCG_DROP = 0.005


class ExportCheckError(RuntimeError):
    """An exported model failed an acceptance check; no bundle was written."""


def bundle_scores(bundle_dir: str | Path, pairs: Sequence[LabelledPair]) -> np.ndarray:
    """Scores of ``pairs`` by the bundle in ``bundle_dir``, through the service's own Scorer."""
    from distill.baselines.bundle import score_bundle

    return score_bundle(bundle_dir, list(pairs))[0]


def check_fp32(torch_scores: np.ndarray, onnx_scores: np.ndarray) -> dict[str, float]:
    diff = float(np.max(np.abs(np.asarray(torch_scores, np.float64) - np.asarray(onnx_scores, np.float64))))
    if not np.isfinite(diff) or diff > FP32_MAX_ABS_DIFF:
        raise ExportCheckError(
            f"fp32 export refused: max |ONNX − PyTorch| score difference on dev is {diff:.3g}, "
            f"above the limit {FP32_MAX_ABS_DIFF:g} by {diff - FP32_MAX_ABS_DIFF:.3g}"
        )
    return {"fp32_max_abs_diff_vs_pytorch": diff}


def check_reduced(
    precision: str, fp32_scores: np.ndarray, scores: np.ndarray, fp32_ndcg: float, ndcg: float
) -> dict[str, float]:
    """int8 / fp16 against fp32: rank agreement and NDCG@10 drop; raises with every failed check."""
    from scipy.stats import spearmanr

    rho = float(spearmanr(fp32_scores, scores).statistic) if np.ptp(scores) > 0 else float("nan")
    drop = float(fp32_ndcg - ndcg)
    problems = []
    if not rho >= MIN_SPEARMAN:  # also catches NaN (constant scores)
        problems.append(f"Spearman vs fp32 is {rho:.4f}, below {MIN_SPEARMAN} by {MIN_SPEARMAN - rho:.4f}")
    if drop > MAX_NDCG_DROP:
        problems.append(
            f"dev NDCG@10 drops by {drop:.4f} ({fp32_ndcg:.4f} → {ndcg:.4f}), "
            f"above the limit {MAX_NDCG_DROP} by {drop - MAX_NDCG_DROP:.4f}"
        )
    if problems:
        raise ExportCheckError(f"{precision} export refused: " + "; ".join(problems))
    return {
        f"{precision}_spearman_vs_fp32": rho,
        f"{precision}_ndcg@10_drop_vs_fp32": drop,
        f"{precision}_max_abs_diff_vs_fp32": float(np.max(np.abs(fp32_scores - scores))),
    }
