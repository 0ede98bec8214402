"""A training run's configuration: which student, which losses with which weights, which data.

Stored as the run folder's config.json (distill/students/run_folder.py) and partly copied into the
exported bundle's manifest (template, token limits, provenance).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.text_template import DEFAULT_TEMPLATE, TextTemplate
from distill.students.kinds import STUDENT_KINDS, StudentKind

# A student's kind by name (`relevance student train --kind`): one member per strategy in STUDENT_KINDS.
Kind = StrEnum("Kind", [(name, name) for name in STUDENT_KINDS], module=__name__)


class SelectMetric(StrEnum):
    """The dev metric early stopping follows."""

    ndcg_at_10 = "ndcg@10"
    auc = "auc"  # Exact vs rest


class LossWeights(BaseModel):
    """Weight of each MKD term; 0 switches a term off."""

    model_config = ConfigDict(extra="forbid")
    hard: float = Field(default=1.0, ge=0)  # cross-entropy on the human label
    score_kd: float = Field(default=0.0, ge=0)  # KL to the teacher's grade distribution
    cot: float = Field(default=0.0, ge=0)  # evidence KL: attention (cross) or pooling weights (bi)
    verdict: float = Field(default=0.0, ge=0)  # per-dimension verdict CE (bi only)


class TrainConfig(BaseModel):
    # Enum fields hold their plain values, defaults included: the checkpoint pickles the kind, and a
    # weights-only torch.load refuses classes.
    model_config = ConfigDict(extra="forbid", use_enum_values=True, validate_default=True)

    name: str = Field(min_length=1)
    kind: Kind = Kind.cross
    layers: int = Field(default=4, ge=1)
    # A trained run of the same kind whose first ``layers`` layers, embeddings and heads start this
    # student (a teacher's weights as the warm start) instead of all-MiniLM-L6-v2's; None: MiniLM.
    init_from: str | None = None
    max_tokens: int = Field(default=64, ge=8)  # pair (cross) / item (bi) limit
    max_query_tokens: int = Field(default=32, ge=4)  # bi query tower limit
    epochs: int = Field(default=3, ge=1)
    max_steps: int | None = Field(default=None, ge=1)  # stop after this many optimiser steps in total
    batch_size: int = Field(default=16, ge=1)
    lr: float = Field(default=5e-5, gt=0)  # backbone
    head_lr: float = Field(default=1e-3, gt=0)  # freshly initialised heads and pooling scorer
    weight_decay: float = Field(default=0.01, ge=0)
    warmup_ratio: float = Field(default=0.1, ge=0, le=1)
    temperature: float = Field(default=2.0, gt=0)
    patience: int = Field(default=2, ge=1)  # epochs without a dev gain (select_metric) before stopping
    # Early-stopping metric on dev. NDCG@10 by default; "auc" (Exact vs rest) where few dev queries
    # have two grades (NDCG is then defined on a handful of queries only).
    select_metric: SelectMetric = SelectMetric.ndcg_at_10
    seed: int = 13
    threads: int = Field(default=2, ge=1)  # CPU threads (torch.set_num_threads)
    cot_agree_only: bool = True  # CoT evidence only where the teacher's grade equals the human label
    weights: LossWeights = Field(default_factory=LossWeights)
    template: TextTemplate = Field(default_factory=lambda: DEFAULT_TEMPLATE)
    train_data: str = "bundled:train"
    dev_data: str = "bundled:dev"
    teacher: list[str] = Field(default_factory=list)  # files read for every signal they carry
    teacher_scores: list[str] = Field(default_factory=list)  # files read for the grade distribution only
    teacher_cot: list[str] = Field(default_factory=list)  # files read for verdicts and evidence only

    @property
    def student_kind(self) -> StudentKind:
        return STUDENT_KINDS[self.kind]

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.weights.verdict > 0 and not self.student_kind.verdict_heads:
            with_heads = ", ".join(name for name, kind in STUDENT_KINDS.items() if kind.verdict_heads)
            raise ValueError(
                f"weights.verdict (verdict auxiliary heads) applies to {with_heads} students only"
            )
        if not any(self.weights.model_dump().values()):
            raise ValueError("all loss weights are 0: nothing to train")
        if self.weights.score_kd and not (self.teacher or self.teacher_scores):
            raise ValueError("the score_kd weight needs teacher records (--teacher or --teacher-scores FILE)")
        if (self.weights.cot or self.weights.verdict) and not (self.teacher or self.teacher_cot):
            raise ValueError("cot / verdict weights need teacher records (--teacher or --teacher-cot FILE)")
        return self

    def teacher_files(self) -> list[tuple[str, str]]:
        """(path, use) of every teacher file, in precedence order: --teacher, --teacher-scores, --teacher-cot."""
        return (
            [(p, "all") for p in self.teacher]
            + [(p, "scores") for p in self.teacher_scores]
            + [(p, "cot") for p in self.teacher_cot]
        )


def make_tokenizer(config: TrainConfig, tokenizer_file: str | Path):
    """The service's tokenizer with this run's token limits (what the exported bundle will use)."""
    from core.tokenization import BundleTokenizer

    return BundleTokenizer(
        tokenizer_file,
        max_pair_tokens=config.max_tokens,
        max_query_tokens=config.max_query_tokens,
        max_item_tokens=config.max_tokens,
    )
