"""Relevance-score-distribution distillation (MKD part (a)).

    L_KD = T² · (1/|B_t|) Σ_{i∈B_t} KL(p_t,i^T ‖ p_s,i^T)
    p_s^T = softmax(z_s / T),   p_t^T = softmax(log p_t / T)   (p_t^1 = p_t)

where p_t is the teacher's grade distribution read from ELLM-rele's verdict-token logits and B_t
the rows that have one. The T² factor keeps gradient magnitudes comparable across temperatures
(Hinton et al., 2015). Zhao et al., WWW 2025, arXiv 2411.13045, §3.3.1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_EPS = 1e-8


class ScoreDistributionKDLoss(nn.Module):
    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def forward(self, logits: torch.Tensor, teacher_probs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """logits [B, L] (student); teacher_probs [B, L] (rows sum to 1 where mask); mask [B] bool."""
        if not bool(mask.any()):
            return logits.sum() * 0.0
        t = self.temperature
        log_ps = F.log_softmax(logits[mask] / t, dim=-1)
        log_pt = F.log_softmax(torch.log(teacher_probs[mask].clamp_min(_EPS)) / t, dim=-1)
        kl = (log_pt.exp() * (log_pt - log_ps)).sum(dim=-1)
        return kl.mean() * t * t
