"""Representation-based student: two towers with shared weights over query and item texts.

Each tower pools its token states with learned weights, w = masked_softmax(u·h_t) (u starts at
zero, i.e. mean pooling as all-MiniLM-L6-v2 was trained), and L2-normalises the result, so item
vectors can be precomputed and cached. Score: cos = q·d, grade logits_i = a_i·cos + b_i — the
``cosine_grade_head`` mapping of core/bundle.py, so the service computes grades from cached
vectors. Auxiliary heads predict the teacher's per-dimension verdicts from [q, d, |q−d|, q⊙d]
(training only; not exported).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from core.cot import DIMENSIONS, VERDICTS
from distill.students.backbone import load_bert


@dataclass
class TowerOutput:
    embedding: torch.Tensor  # [B, H], L2-normalised
    weights: torch.Tensor  # [B, S], pooling weights (0 on padding)


@dataclass
class BiOutput:
    logits: torch.Tensor  # [B, levels]
    cos: torch.Tensor  # [B]
    query: TowerOutput
    item: TowerOutput
    verdict_logits: torch.Tensor  # [B, dimensions, verdicts]


class BiStudent(nn.Module):
    def __init__(
        self, num_levels: int, num_layers: int | None = None, *, bert_config: dict[str, Any] | None = None
    ) -> None:
        super().__init__()
        self.bert = load_bert(num_layers, config=bert_config)
        hidden = self.bert.config.hidden_size
        self.pool_score = nn.Linear(hidden, 1)
        nn.init.zeros_(self.pool_score.weight)
        nn.init.zeros_(self.pool_score.bias)
        # Grade head starts as a soft threshold on cos (low cos → first level, high → last).
        span = torch.linspace(-1.0, 1.0, num_levels)
        self.grade_weight = nn.Parameter(10.0 * span)
        self.grade_bias = nn.Parameter(-5.0 * span)
        self.verdict_head = nn.Linear(4 * hidden, len(DIMENSIONS) * len(VERDICTS))

    def head_parameters(self) -> list[nn.Parameter]:
        return [
            *self.pool_score.parameters(),
            self.grade_weight,
            self.grade_bias,
            *self.verdict_head.parameters(),
        ]

    @property
    def embedding_dim(self) -> int:
        return self.bert.config.hidden_size

    def encode(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> TowerOutput:
        states = self.bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        scores = self.pool_score(states).squeeze(-1)
        scores = scores.masked_fill(attention_mask == 0, torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=-1)
        pooled = (weights.unsqueeze(-1) * states).sum(dim=1)
        return TowerOutput(embedding=F.normalize(pooled, dim=-1), weights=weights)

    def grade_logits(self, cos: torch.Tensor) -> torch.Tensor:
        return cos.unsqueeze(-1) * self.grade_weight + self.grade_bias

    def forward(self, query: dict[str, torch.Tensor], item: dict[str, torch.Tensor]) -> BiOutput:
        q = self.encode(**query)
        d = self.encode(**item)
        cos = (q.embedding * d.embedding).sum(dim=-1)
        features = torch.cat(
            [q.embedding, d.embedding, (q.embedding - d.embedding).abs(), q.embedding * d.embedding], dim=-1
        )
        verdict_logits = self.verdict_head(features).view(-1, len(DIMENSIONS), len(VERDICTS))
        return BiOutput(
            logits=self.grade_logits(cos), cos=cos, query=q, item=d, verdict_logits=verdict_logits
        )


class BiEmbedding(nn.Module):
    """Export view: (input_ids, attention_mask, token_type_ids) → L2-normalised embedding."""

    def __init__(self, student: BiStudent) -> None:
        super().__init__()
        self.student = student

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.student.encode(input_ids, attention_mask, token_type_ids).embedding
