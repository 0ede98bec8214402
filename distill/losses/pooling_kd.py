"""CoT-reasoning distillation for representation-based (bi) students (MKD part (b)).

    L_pool = KL_q + KL_d,   KL_x = (1/|B_x|) Σ_{i∈B_x} KL(e_{x,i} ‖ w_{x,i})

per tower x ∈ {query, item}: e_x is the evidence distribution over that tower's tokens (uniform
over the word-pieces of verified evidence spans on that side) and w_x the tower's learned
token-pooling weights (masked softmax). B_x: rows with verified evidence on that side. The
teacher's reasoning thereby tells each tower which tokens its embedding should rest on.
Zhao et al., WWW 2025, arXiv 2411.13045, §3.3.2 (representation-based variant).
"""

from __future__ import annotations

import torch
from torch import nn

from distill.losses.evidence_kl import evidence_kl


class PoolingKDLoss(nn.Module):
    def forward(
        self,
        query_weights: torch.Tensor,
        query_evidence: torch.Tensor,
        query_mask: torch.Tensor,
        item_weights: torch.Tensor,
        item_evidence: torch.Tensor,
        item_mask: torch.Tensor,
    ) -> torch.Tensor:
        """*_weights, *_evidence [B, S_x]; *_mask [B] bool (rows with evidence on that side)."""
        return evidence_kl(query_evidence, query_weights, query_mask) + evidence_kl(
            item_evidence, item_weights, item_mask
        )
