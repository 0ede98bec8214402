"""The CoT record: the one schema the teacher writes and students, /explain and reports read.

A record is ELLM-rele's judgement of one (query, item) pair: per-dimension values and verdicts
with verbatim evidence spans, a final grade, a rationale, and the grade distribution read from
the verdict position's logits (or from self-consistency votes where a backend has no logprobs).
Parse failures are records too (``parse_ok=False`` with the raw output), never dropped.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

COT_SCHEMA_VERSION = 1

# Relevance dimensions, in prompt order.
DIMENSIONS: tuple[str, ...] = (
    "product_type",
    "brand",
    "model",
    "color",
    "material",
    "style",
    "size",
    "quantity",
    "use",
)

Verdict = Literal["match", "partial", "mismatch", "not_stated"]
VERDICTS: tuple[str, ...] = ("match", "partial", "mismatch", "not_stated")

DistributionSource = Literal["logits", "logprobs", "votes", "none"]


class EvidenceSpan(BaseModel):
    """A verbatim substring of the query or the item text that a verdict rests on."""

    model_config = ConfigDict(extra="forbid")
    source: Literal["query", "item"]
    text: str
    start: int | None = None  # character offsets in the rendered text; None when not found
    end: int | None = None
    verified: bool = False  # True iff text[start:end] == span text


class DimensionJudgement(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dimension: str
    query_value: str | None = None
    item_value: str | None = None
    verdict: Verdict = "not_stated"
    evidence: list[EvidenceSpan] = Field(default_factory=list)


class CoTRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = COT_SCHEMA_VERSION
    teacher_id: str
    prompt_version: str
    mode: Literal["cot", "score"] = "cot"  # score: no reasoning, the verdict read right after the prompt
    pair_id: str
    query_id: str | None = None
    query: str
    item_id: str
    item_text: str  # the rendered item text the teacher saw (evidence offsets refer to it)
    dimensions: list[DimensionJudgement] = Field(default_factory=list)
    grade: str | None = None  # one of grade_levels, or None when no verdict could be read
    grade_levels: list[str]
    grade_distribution: dict[str, float] = Field(default_factory=dict)  # sums to 1 when present
    distribution_source: DistributionSource = "none"
    votes: int | None = None  # number of self-consistency samples when source == "votes"
    rationale: str | None = None
    label: str | None = None  # human label, when the pair had one
    parse_ok: bool = True
    parse_errors: list[str] = Field(default_factory=list)
    raw_output: str = ""
    created_at: str = ""
