"""The student kinds: everything on the training side that differs between a cross and a bi student.

``STUDENT_KINDS[config.kind]`` (``TrainConfig.student_kind``) is where a kind name is resolved; the
strategy it returns builds the model, encodes examples and maps evidence onto its inputs, pads a
batch, runs the training forward pass with the kind's CoT (and verdict) losses, scores a batch
through the bundle's score mapping, and supplies the ONNX export view and the manifest's
``score``. Torch and the model modules are imported inside the methods, so config validation and
example building do not load them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from core import score_mapping
from core.bundle import BundleManifest, CosineGradeHeadScore, ScoreMapping, SoftmaxScore
from core.grades import GRADE_LEVELS
from core.tokenization import BundleTokenizer, Encoded, pad_batch
from distill.students.evidence import EvidenceStats, RecordSpans, token_distribution

if TYPE_CHECKING:
    from distill.students.data import Example


class StudentKind(ABC):
    name: ClassVar[str]
    verdict_heads: ClassVar[bool] = False  # whether the verdict auxiliary loss (weights.verdict) applies

    @abstractmethod
    def model_class(self) -> type:
        """The torch module class of this kind's student."""

    def build(self, layers: int | None, *, bert_config: dict[str, Any] | None = None):
        """A student over the project's grade levels: pretrained backbone cut to ``layers``, or random
        weights shaped by ``bert_config`` (a checkpoint's)."""
        return self.model_class()(len(GRADE_LEVELS), layers, bert_config=bert_config)

    @abstractmethod
    def encode(
        self, examples: Sequence[Example], queries: list[str], items: list[str], tokenizer: BundleTokenizer
    ) -> None:
        """Set each example's encodings from its rendered query and item texts."""

    @abstractmethod
    def attach_evidence(self, example: Example, spans: RecordSpans, stats: EvidenceStats) -> bool:
        """Set the example's evidence targets from the teacher's spans; whether any span reached a token."""

    @abstractmethod
    def collate_inputs(self, examples: list[Example], pad_id: int) -> dict:
        """The padded model inputs and evidence targets (with row masks) of a batch."""

    @abstractmethod
    def loss_terms(self, model, batch: dict, weights, losses: dict) -> tuple[Any, dict]:
        """(grade logits, this kind's own loss terms: cot, verdict) of a training batch; ``weights`` is
        the config's LossWeights, a term with weight 0 is not computed."""

    @abstractmethod
    def scores(self, model, batch: dict, manifest: BundleManifest, device) -> np.ndarray:
        """Scores of a batch: the model's bundle output mapped by ``manifest`` as the service maps it."""

    @abstractmethod
    def export_module(self, model):
        """The module traced to model.onnx: the kind's output in ``core.bundle.ONNX_SIGNATURES``."""

    @abstractmethod
    def score_mapping(self, model) -> tuple[ScoreMapping, int | None]:
        """(the manifest's ``score``, its ``embedding_dim``) for this trained model."""


def _to(tensors: dict, device) -> dict:
    return {k: v.to(device) for k, v in tensors.items()}


def _tensors(encoded: list[Encoded], pad_id: int) -> dict:
    import torch

    return {k: torch.from_numpy(v) for k, v in pad_batch(encoded, pad_id).items()}


def _evidence_matrix(rows: list[np.ndarray | None], width: int):
    import torch

    out = torch.zeros(len(rows), width)
    mask = torch.zeros(len(rows), dtype=torch.bool)
    for r, row in enumerate(rows):
        if row is not None:
            out[r, : len(row)] = torch.from_numpy(row)
            mask[r] = True
    return out, mask


class CrossKind(StudentKind):
    """Interaction-based: one encoding of the (query, item) pair; CoT KD on [CLS] attention."""

    name = "cross"

    def model_class(self) -> type:
        from distill.students.cross import CrossStudent

        return CrossStudent

    def encode(self, examples, queries, items, tokenizer) -> None:
        for ex, encoded in zip(examples, tokenizer.encode_pairs(queries, items), strict=True):
            ex.pair = encoded

    def attach_evidence(self, example, spans, stats) -> bool:
        example.pair_evidence = token_distribution(example.pair, {0: spans.query, 1: spans.item}, stats)
        return example.pair_evidence is not None

    def collate_inputs(self, examples, pad_id) -> dict:
        pair = _tensors([ex.pair for ex in examples], pad_id)
        evidence, has_evidence = _evidence_matrix(
            [ex.pair_evidence for ex in examples], pair["input_ids"].shape[1]
        )
        return {"pair": pair, "pair_evidence": evidence, "has_pair_evidence": has_evidence}

    def loss_terms(self, model, batch, weights, losses):
        out = model(**batch["pair"], with_attention=weights.cot > 0)
        terms = {}
        if weights.cot:
            terms["cot"] = losses["attention"](
                out.cls_attention, batch["pair_evidence"], batch["has_pair_evidence"]
            )
        return out.logits, terms

    def scores(self, model, batch, manifest, device) -> np.ndarray:
        logits = model(**_to(batch["pair"], device)).logits
        return score_mapping.from_logits(manifest, logits.float().cpu().numpy())[0]

    def export_module(self, model):
        from distill.students.cross import CrossLogits

        return CrossLogits(model)

    def score_mapping(self, model) -> tuple[ScoreMapping, int | None]:
        return SoftmaxScore(), None


class BiKind(StudentKind):
    """Representation-based: query and item encoded apart; CoT KD on each tower's pooling weights,
    plus the verdict heads."""

    name = "bi"
    verdict_heads = True

    def model_class(self) -> type:
        from distill.students.bi import BiStudent

        return BiStudent

    def encode(self, examples, queries, items, tokenizer) -> None:
        for ex, query, item in zip(
            examples, tokenizer.encode_queries(queries), tokenizer.encode_items(items), strict=True
        ):
            ex.query, ex.item = query, item

    def attach_evidence(self, example, spans, stats) -> bool:
        example.query_evidence = token_distribution(example.query, {0: spans.query}, stats)
        example.item_evidence = token_distribution(example.item, {0: spans.item}, stats)
        return example.query_evidence is not None or example.item_evidence is not None

    def collate_inputs(self, examples, pad_id) -> dict:
        batch = {
            "query": _tensors([ex.query for ex in examples], pad_id),
            "item": _tensors([ex.item for ex in examples], pad_id),
        }
        batch["query_evidence"], batch["has_query_evidence"] = _evidence_matrix(
            [ex.query_evidence for ex in examples], batch["query"]["input_ids"].shape[1]
        )
        batch["item_evidence"], batch["has_item_evidence"] = _evidence_matrix(
            [ex.item_evidence for ex in examples], batch["item"]["input_ids"].shape[1]
        )
        return batch

    def loss_terms(self, model, batch, weights, losses):
        out = model(batch["query"], batch["item"])
        terms = {}
        if weights.cot:
            terms["cot"] = losses["pooling"](
                out.query.weights,
                batch["query_evidence"],
                batch["has_query_evidence"],
                out.item.weights,
                batch["item_evidence"],
                batch["has_item_evidence"],
            )
        if weights.verdict:
            terms["verdict"] = losses["verdict"](out.verdict_logits, batch["verdicts"])
        return out.logits, terms

    def scores(self, model, batch, manifest, device) -> np.ndarray:
        cos = model(_to(batch["query"], device), _to(batch["item"], device)).cos
        return score_mapping.from_cosine(manifest, cos.float().cpu().numpy())[0]

    def export_module(self, model):
        from distill.students.bi import BiEmbedding

        return BiEmbedding(model)

    def score_mapping(self, model) -> tuple[ScoreMapping, int | None]:
        return (
            CosineGradeHeadScore(
                weights=model.grade_weight.detach().tolist(), bias=model.grade_bias.detach().tolist()
            ),
            model.embedding_dim,
        )


STUDENT_KINDS: dict[str, StudentKind] = {kind.name: kind for kind in (CrossKind(), BiKind())}
