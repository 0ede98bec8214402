"""MKD losses (Zhao et al., WWW 2025, arXiv 2411.13045), one small module each.

Every loss takes a per-row mask (rows without the needed supervision are excluded, not zeroed)
and returns a scalar tensor; a batch with no eligible row gives 0 with a gradient path, so the
training loop can always add it.
"""

from distill.losses.attention_kd import AttentionKDLoss
from distill.losses.hard_label import HardLabelLoss
from distill.losses.pooling_kd import PoolingKDLoss
from distill.losses.score_kd import ScoreDistributionKDLoss
from distill.losses.verdict_aux import VerdictAuxLoss

__all__ = [
    "AttentionKDLoss",
    "HardLabelLoss",
    "PoolingKDLoss",
    "ScoreDistributionKDLoss",
    "VerdictAuxLoss",
]
