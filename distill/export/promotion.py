"""The promotion gate: a bundle replaces the one ``relevance serve`` serves only if it beats it.

``make serve`` serves ``models/student`` when it holds a bundle, else the zero-shot default
(service/settings.py: ``default_bundle_path``). So exporting into the served folder is a promotion:
the new bundle and the incumbent (the bundle there now, or the zero-shot default when there is none)
are both scored on a named evaluation set through the service's own Scorer, and the new one is
promoted only when it is better on AUC Exact vs the rest and not worse on AUC Exact+Partial vs
Irrelevant and NDCG@10. Otherwise ``PromotionRefused`` carries both sets of numbers; ``--force``
skips the gate. Exports to any other folder are not gated.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from core.bundle import MANIFEST_FILE
from distill.data.schema import LabelledPair
from service.settings import DEFAULT_BUNDLE, STUDENT_BUNDLE

GATE_METRICS = ("auc", "auc_ep_vs_i", "ndcg@10")  # the first must improve, the others must not drop


class PromotionRefused(RuntimeError):
    """The new bundle does not beat the served one; nothing was replaced."""


def is_served_folder(out: Path) -> bool:
    return out.resolve() == STUDENT_BUNDLE.resolve()


def incumbent(out: Path) -> Path:
    """What is served now in place of ``out``: ``out`` when it holds a bundle, else the zero-shot default."""
    return out if (out / MANIFEST_FILE).is_file() else DEFAULT_BUNDLE


def gate_metrics(bundle: Path, pairs: Sequence[LabelledPair]) -> dict[str, float]:
    from distill.baselines.bundle import score_bundle
    from distill.students.predict import ranking_metrics

    return ranking_metrics(pairs, score_bundle(bundle, list(pairs))[0])


def check_promotion(new: Path, out: Path, pairs: Sequence[LabelledPair], data: str) -> dict[str, dict]:
    """Both bundles' metrics on ``data``; raises PromotionRefused unless ``new`` beats the incumbent."""
    current = incumbent(out)
    if not (current / MANIFEST_FILE).is_file():  # nothing served yet, not even the default: no gate
        return {"new": gate_metrics(new, pairs)}
    mine, theirs = gate_metrics(new, pairs), gate_metrics(current, pairs)
    first, *rest = GATE_METRICS
    worse = [m for m in rest if mine[m] < theirs[m]]
    if mine[first] <= theirs[first] or worse:
        rows = "; ".join(f"{m} {mine[m]:.4f} vs {theirs[m]:.4f}" for m in GATE_METRICS)
        raise PromotionRefused(
            f"not promoted to {out}: on {data} ({mine['queries']} queries) the new bundle vs the served "
            f"{current} has {rows}. It must be better on {first} and not worse on {', '.join(rest)}; "
            "export elsewhere, or pass --force to replace it anyway"
        )
    return {"new": mine, "served": {"bundle": str(current), **theirs}}
