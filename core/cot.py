"""The CoT record: the one schema the teacher writes and students, /explain and reports read.

A record is ELLM-rele's judgement of one (query, item) pair: per-dimension values and verdicts
with verbatim evidence spans, a final grade, a rationale, and the grade distribution read from
the verdict position's logits (or from self-consistency votes where a backend has no logprobs).
Parse failures are records too (``parse_ok=False`` with the raw output), never dropped.

Files of records are JSONL, read by ``read_records`` only; ``grade_distribution`` is the one rule
for whether (and which) grade distribution a record carries.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

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

# Dimensions the rule CoT (distill/teacher/bootstrap.py) writes besides DIMENSIONS.
OVERLAP_DIMENSION = "lexical_overlap"
EXCLUSION_DIMENSION = "exclusion"
BOOTSTRAP_DIMENSIONS: tuple[str, ...] = (EXCLUSION_DIMENSION, OVERLAP_DIMENSION)

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


class CoTFileError(ValueError):
    """A CoT record file (JSONL) that cannot be read; the message names the file and line."""


TornLine = Literal["error", "count", "cut"]


def read_records(
    path: str | Path, *, missing_ok: bool = False, torn: TornLine = "error"
) -> tuple[list[CoTRecord], int]:
    """The records of a CoT JSONL file and the number of torn last lines (0 or 1): the one reader.

    Every line ending in a newline must be a record (blank lines are allowed), else CoTFileError
    names the file and line. Records are written one line at a time with its newline, so a last line
    without one was torn by a kill. ``torn`` says what to do with it: "error" (CoTFileError), "count"
    (skip it, and say so: the count is returned) or "cut" (truncate the file before it, as a resumed
    annotation run does). A missing file is an error unless ``missing_ok`` (then: no records).
    """
    path = Path(path)
    if not path.is_file():
        if missing_ok and not path.exists():
            return [], 0
        raise CoTFileError(f"{path}: CoT record file not found")
    data = path.read_bytes()
    *complete, tail = data.split(b"\n")  # tail: bytes after the last newline, empty unless torn
    records: list[CoTRecord] = []
    for number, line in enumerate(complete, start=1):
        if not line.strip():
            continue
        try:
            records.append(CoTRecord.model_validate_json(line))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(root)"
            raise CoTFileError(f"{path}:{number}: not a CoT record ({where}: {first['msg']})") from exc
    if not tail.strip():
        return records, 0
    if torn == "error":
        raise CoTFileError(
            f"{path}:{len(complete) + 1}: torn last line (no newline; the run writing it was "
            "killed): resume the annotation run, which cuts it, or delete the line"
        )
    if torn == "cut":
        with path.open("r+b") as f:
            f.truncate(len(data) - len(tail))
    return records, 1


def grade_distribution(record: CoTRecord, levels: Sequence[str]) -> np.ndarray | None:
    """The record's grade distribution in ``levels`` order, or None: the one rule for "this record
    has a distribution". It has one when a backend read it (distribution_source is not "none") over
    every level, with finite non-negative values of positive sum; the result is renormalised. A
    partial distribution is none: training and evaluation must not see different teachers."""
    dist = record.grade_distribution
    if record.distribution_source == "none" or not dist or set(levels) - set(dist):
        return None
    probs = np.array([dist[level] for level in levels], dtype=np.float64)
    total = float(probs.sum())
    if not np.isfinite(total) or total <= 0 or (probs < 0).any():
        return None
    return probs / total
