"""KL from an evidence distribution over tokens to a student's token distribution.

    KL(e ‖ a) = Σ_t e_t (log e_t − log a_t),   with 0·log 0 = 0

e is uniform over the word-pieces the teacher's verified evidence spans cover
(distill/students/evidence.py); a is a distribution over the same tokens produced by the student
(first-token attention for cross students, pooling weights for bi students). Shared by
``AttentionKDLoss`` and ``PoolingKDLoss``.
"""

from __future__ import annotations

import torch

_EPS = 1e-8


def evidence_kl(target: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """target, pred [B, S] (rows sum to 1); mask [B] bool. Mean KL over masked rows (0 if none)."""
    if not bool(mask.any()):
        return pred.sum() * 0.0
    e = target[mask]
    a = pred[mask]
    terms = torch.where(
        e > 0, e * (torch.log(e.clamp_min(_EPS)) - torch.log(a.clamp_min(_EPS))), torch.zeros_like(e)
    )
    return terms.sum(dim=-1).mean()
