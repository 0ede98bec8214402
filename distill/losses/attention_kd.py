"""CoT-reasoning distillation for interaction-based (cross) students (MKD part (b)).

    L_att = (1/|B_e|) Σ_{i∈B_e} KL(e_i ‖ a_i),   a_i = (1/H) Σ_h A^{(last)}_{h, 0, :}

e_i is the evidence distribution over the pair's input tokens (uniform over the word-pieces of
the teacher's verified evidence spans) and a_i the student's last-layer attention from the first
token ([CLS]) to every token, averaged over heads. B_e: rows with verified evidence. The teacher's
reasoning thereby tells the student *where* to look. Zhao et al., WWW 2025, arXiv 2411.13045, §3.3.2.
"""

from __future__ import annotations

import torch
from torch import nn

from distill.losses.evidence_kl import evidence_kl


class AttentionKDLoss(nn.Module):
    def forward(
        self, cls_attention: torch.Tensor, evidence: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """cls_attention [B, S] (head-averaged, rows sum to 1); evidence [B, S]; mask [B] bool."""
        return evidence_kl(evidence, cls_attention, mask)
