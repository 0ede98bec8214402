"""Hard-label cross-entropy on the human grade.

    L_CE = −(1/|B_l|) Σ_{i∈B_l} log softmax(z_i)[y_i]

over the rows B_l that carry a human label (``labels[i] >= 0``); unlabelled rows (−100) are
ignored. This is the supervised term of MKD (Zhao et al., WWW 2025, arXiv 2411.13045, §3.2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IGNORE = -100


class HardLabelLoss(nn.Module):
    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """logits [B, L]; labels [B] (grade index, or −100 when the pair has no human label)."""
        keep = labels != IGNORE
        if not bool(keep.any()):
            return logits.sum() * 0.0
        return F.cross_entropy(logits[keep], labels[keep])
