"""Interaction-based student: a BERT cross-encoder over the (query, item) pair with a grade head on [CLS].

For CoT attention distillation the forward pass can also return the last layer's attention from
the first token ([CLS]) to every token, averaged over heads (``cls_attention``, rows sum to 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from distill.students.backbone import load_bert


@dataclass
class CrossOutput:
    logits: torch.Tensor  # [B, levels]
    cls_attention: torch.Tensor | None  # [B, S]


class CrossStudent(nn.Module):
    def __init__(
        self,
        num_levels: int,
        num_layers: int | None = None,
        *,
        bert_config: dict[str, Any] | None = None,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.bert = load_bert(num_layers, config=bert_config)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.bert.config.hidden_size, num_levels)

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.head.parameters())

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor,
        with_attention: bool = False,
    ) -> CrossOutput:
        out = self.bert(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            output_attentions=with_attention,
        )
        logits = self.head(self.dropout(out.last_hidden_state[:, 0]))
        cls_attention = out.attentions[-1][:, :, 0, :].mean(dim=1) if with_attention else None
        return CrossOutput(logits=logits, cls_attention=cls_attention)


class CrossLogits(nn.Module):
    """Export view: (input_ids, attention_mask, token_type_ids) → logits, as core/bundle.py specifies."""

    def __init__(self, student: CrossStudent) -> None:
        super().__init__()
        self.student = student

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.student(input_ids, attention_mask, token_type_ids).logits
