"""Auxiliary per-dimension verdict prediction for bi students.

    L_verdict = (1/|V|) Σ_{(i,k)∈V} −log softmax(h_k([q_i, d_i, |q_i−d_i|, q_i⊙d_i]))[v_{i,k}]

h_k predicts the teacher's verdict (match / partial / mismatch / not_stated) on relevance
dimension k from the pair features of the two tower embeddings; V: the (pair, dimension) cells
where the teacher gave a verdict (others are −100). It pushes the multi-dimensional judgement of
the CoT into the embeddings, which are otherwise only trained through one cosine.
Zhao et al., WWW 2025, arXiv 2411.13045, §3.3 (multi-dimensional knowledge).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IGNORE = -100


class VerdictAuxLoss(nn.Module):
    def forward(self, verdict_logits: torch.Tensor, verdicts: torch.Tensor) -> torch.Tensor:
        """verdict_logits [B, K, V]; verdicts [B, K] (verdict index, or −100)."""
        flat_logits = verdict_logits.reshape(-1, verdict_logits.shape[-1])
        flat = verdicts.reshape(-1)
        if not bool((flat != IGNORE).any()):
            return verdict_logits.sum() * 0.0
        return F.cross_entropy(flat_logits, flat, ignore_index=IGNORE)
