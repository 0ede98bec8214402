"""Model outputs → scores in [0, 1] (and grade distributions), as core/bundle.py's ``score`` prescribes."""

from __future__ import annotations

import numpy as np

from core.bundle import BundleManifest, CosineGradeHeadScore, CosineScore


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def from_logits(manifest: BundleManifest, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Grade logits [n, levels] → (scores [n], grade probabilities [n, levels])."""
    probs = softmax(logits.astype(np.float64))
    scores = probs @ np.asarray(manifest.level_values, dtype=np.float64)
    return scores, probs


def from_cosine(manifest: BundleManifest, cos: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Cosine similarities [n] → (scores [n], grade probabilities [n, levels] or None)."""
    mapping = manifest.score
    cos = cos.astype(np.float64)
    if isinstance(mapping, CosineScore):
        return np.clip((cos - mapping.low) / (mapping.high - mapping.low), 0.0, 1.0), None
    if isinstance(mapping, CosineGradeHeadScore):
        logits = np.outer(cos, mapping.weights) + np.asarray(mapping.bias)
        return from_logits(manifest, logits)
    raise ValueError(f"score.method {mapping.method!r} does not apply to cosine similarities")
