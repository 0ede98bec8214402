"""A student's scores and dev ranking metrics, computed as the exported bundle will compute them.

The score formula lives in the manifest, not here: ``predict_scores`` takes the model's bundle
output (grade logits for cross, cosine for bi) and maps it with ``core.score_mapping`` under the
manifest the export writes (``student_manifest``), i.e. the same score mapping and the same
``level_values`` (core.grades.LEVEL_VALUES, the manifest's default) the service applies. Training
needs no differentiable score: its losses act on the grade logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from core.bundle import BundleManifest, Provenance
from core.grades import GRADE_GAINS, GRADE_LEVELS
from distill.data.schema import LabelledPair
from distill.students.config import TrainConfig


def student_manifest(
    model,
    config: TrainConfig,
    *,
    name: str | None = None,
    version: str = "unexported",
    provenance: Provenance | None = None,
) -> BundleManifest:
    """The bundle manifest of ``model`` as trained with ``config``; export adds provenance and metrics."""
    score, embedding_dim = config.student_kind.score_mapping(model)
    return BundleManifest(
        name=name or f"student-{config.kind}-{config.name}",
        version=version,
        kind=config.kind,
        score=score,
        embedding_dim=embedding_dim,
        max_pair_tokens=config.max_tokens,
        max_query_tokens=config.max_query_tokens,
        max_item_tokens=config.max_tokens,
        template=config.template,
        provenance=provenance or Provenance(),
    )


def predict_scores(
    model, manifest: BundleManifest, examples: Sequence, pad_id: int, batch_size: int = 64
) -> np.ndarray:
    """Scores of examples, in order, with the PyTorch model and ``manifest``'s score mapping."""
    import torch

    from distill.students.data import collate
    from distill.students.kinds import STUDENT_KINDS

    kind = STUDENT_KINDS[manifest.kind]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            batch = collate(list(examples[start : start + batch_size]), kind, pad_id, len(GRADE_LEVELS))
            out.append(kind.scores(model, batch, manifest, device))
    model.train(was_training)
    return np.concatenate(out) if out else np.zeros(0)


def ranking_metrics(pairs: Sequence[LabelledPair], scores: np.ndarray) -> dict[str, float]:
    """NDCG@10 (graded gains), AUC Exact vs the rest (``auc``) and AUC Exact+Partial vs Irrelevant
    (``auc_ep_vs_i``) over labelled pairs."""
    from distill.eval.metrics import binary_auc, mean_ndcg

    keep = [i for i, p in enumerate(pairs) if p.label in GRADE_GAINS]
    qids = [pairs[i].query_id for i in keep]
    gains = [GRADE_GAINS[pairs[i].label] for i in keep]
    s = [float(scores[i]) for i in keep]
    return {
        "ndcg@10": float(mean_ndcg(qids, gains, s, k=10)),
        "auc": float(binary_auc([int(pairs[i].label == "Exact") for i in keep], s)),
        "auc_ep_vs_i": float(binary_auc([int(pairs[i].label != "Irrelevant") for i in keep], s)),
        "pairs": len(keep),
        "queries": len(set(qids)),
    }
