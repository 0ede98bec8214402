"""Torch wrappers that give a BERT-family encoder the bundle's ONNX signature (see core/bundle.py).

Both take ``(input_ids, attention_mask, token_type_ids)`` and return one tensor, as
``onnx_bert.export_bert_onnx`` traces them:

* ``SequenceLogits`` (cross bundles): a sequence-classification model → ``logits`` [batch, levels].
* ``MeanPooledEmbedding`` (bi bundles): an encoder → L2-normalised mean of the last hidden states over
  ``attention_mask`` → ``embedding`` [batch, dim] (the sentence-transformers pooling of all-MiniLM-L6-v2).
"""

from __future__ import annotations

import torch
from torch import nn


class SequenceLogits(nn.Module):
    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        out = self.classifier(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        )
        return out.logits


class MeanPooledEmbedding(nn.Module):
    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        hidden = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        mean = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return nn.functional.normalize(mean, p=2, dim=-1)
