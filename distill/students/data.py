"""Training examples for the students: labelled pairs + (optional) merged teacher signals.

Every text goes through core.text_template and every encoding through
core.tokenization.BundleTokenizer — the code the service runs — so there is no train/serve skew.
A teacher file is read for one or both signals: the grade distribution (score-distribution KD)
and the CoT (per-dimension verdicts and evidence spans). Records are matched to pairs by
``pair_id``, else by (query, item id); per pair and signal, the first file (in the order given)
whose record carries a usable form of that signal supplies it, so a distribution from one teacher
and evidence from another can train the same example. Unmatched and unusable records are counted
per file in ``TeacherReport``, never silently dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

from core.cot import DIMENSIONS, VERDICTS, CoTRecord, grade_distribution
from core.grades import GRADE_LEVELS
from core.text_template import TextTemplate
from core.tokenization import BundleTokenizer, Encoded
from distill.data.schema import LabelledPair
from distill.students.evidence import EvidenceStats, record_spans

if TYPE_CHECKING:
    from distill.students.kinds import StudentKind

IGNORE = -100


Use = Literal["all", "scores", "cot"]


@dataclass
class TeacherSource:
    """The records of one teacher file and which signals are taken from it."""

    path: str
    use: Use  # all: distribution and CoT; scores: distribution only; cot: verdicts and evidence only
    records: list[CoTRecord]


@dataclass
class SourceReport:
    path: str
    use: Use
    records: int = 0
    matched: int = 0
    unmatched: int = 0  # records for pairs not in the training set (e.g. dev pairs)
    duplicates: int = 0  # later records for a pair already matched in this file (the first is kept)
    parse_failed: int = 0  # parse_ok=False: no supervision taken from them
    no_distribution: int = 0  # distribution_source "none", empty, or levels not on the project scale
    no_cot: int = 0  # no per-dimension judgement (e.g. score-mode records)
    distribution_used: int = 0
    cot_used: int = 0
    distribution_shadowed: int = 0  # ignored: the pair already had a distribution from an earlier file
    cot_shadowed: int = 0  # ignored: the pair already had a CoT record from an earlier file


@dataclass
class TeacherReport:
    """Coverage of each signal over the training pairs, and what each file contributed."""

    train_pairs: int = 0
    with_distribution: int = 0
    with_cot: int = 0  # pairs with a CoT record (evidence is counted in ``evidence``)
    with_verdicts: int = 0  # pairs with at least one verdict on a known dimension
    evidence_skipped_disagree: int = 0  # CoT grade != human label (with --cot-agree-only)
    evidence: EvidenceStats = field(default_factory=EvidenceStats)
    sources: list[SourceReport] = field(default_factory=list)

    def as_dict(self) -> dict:
        out = asdict(self)
        out["evidence"] = self.evidence.as_dict()
        return out


@dataclass
class PairTeacher:
    """The merged teacher signals of one training pair."""

    probs: np.ndarray | None = None
    cot: CoTRecord | None = None


def merge_teacher(
    pairs: Sequence[LabelledPair], sources: Sequence[TeacherSource], report: TeacherReport
) -> dict[int, PairTeacher]:
    """Pair index → its teacher signals: per signal, the first source (in order) that supplies it."""
    by_id = {p.pair_id: i for i, p in enumerate(pairs)}
    by_key = {(p.query, p.item.id): i for i, p in enumerate(pairs)}
    merged: dict[int, PairTeacher] = {}
    for source in sources:
        stats = SourceReport(path=source.path, use=source.use)
        report.sources.append(stats)
        seen: set[int] = set()
        for record in source.records:
            stats.records += 1
            index = by_id.get(record.pair_id)
            if index is None:
                index = by_key.get((record.query, record.item_id))
            if index is None:
                stats.unmatched += 1
                continue
            if index in seen:
                stats.duplicates += 1
                continue
            seen.add(index)
            stats.matched += 1
            if not record.parse_ok:
                stats.parse_failed += 1
                continue
            slot = merged.setdefault(index, PairTeacher())
            if source.use in ("all", "scores"):
                probs = grade_distribution(record, GRADE_LEVELS)
                probs = None if probs is None else probs.astype(np.float32)
                if probs is None:
                    stats.no_distribution += 1
                elif slot.probs is not None:
                    stats.distribution_shadowed += 1
                else:
                    slot.probs = probs
                    stats.distribution_used += 1
            if source.use in ("all", "cot"):
                if not record.dimensions:
                    stats.no_cot += 1
                elif slot.cot is not None:
                    stats.cot_shadowed += 1
                else:
                    slot.cot = record
                    stats.cot_used += 1
    report.train_pairs = len(pairs)
    report.with_distribution = sum(t.probs is not None for t in merged.values())
    report.with_cot = sum(t.cot is not None for t in merged.values())
    return merged


def verdict_targets(record: CoTRecord) -> np.ndarray:
    targets = np.full(len(DIMENSIONS), IGNORE, dtype=np.int64)
    for judgement in record.dimensions:
        if judgement.dimension in DIMENSIONS:
            targets[DIMENSIONS.index(judgement.dimension)] = VERDICTS.index(judgement.verdict)
    return targets


@dataclass
class Example:
    label: int  # grade index, or IGNORE
    teacher_probs: np.ndarray | None
    verdicts: np.ndarray  # [len(DIMENSIONS)]
    pair: Encoded | None = None  # cross
    pair_evidence: np.ndarray | None = None
    query: Encoded | None = None  # bi
    item: Encoded | None = None
    query_evidence: np.ndarray | None = None
    item_evidence: np.ndarray | None = None


def build_examples(
    kind: StudentKind,
    pairs: Sequence[LabelledPair],
    tokenizer: BundleTokenizer,
    template: TextTemplate,
    teacher: dict[int, PairTeacher] | None = None,
    report: TeacherReport | None = None,
    cot_agree_only: bool = True,
) -> list[Example]:
    """Encode ``pairs`` for a ``kind`` student and attach the teacher's targets where merged."""
    teacher = teacher or {}
    report = report or TeacherReport()
    queries = [template.query_text(p.query) for p in pairs]
    items = [template.item_text(p.item.as_mapping()) for p in pairs]
    examples = [
        Example(
            label=GRADE_LEVELS.index(p.label) if p.label in GRADE_LEVELS else IGNORE,
            teacher_probs=None,
            verdicts=np.full(len(DIMENSIONS), IGNORE, dtype=np.int64),
        )
        for p in pairs
    ]
    kind.encode(examples, queries, items, tokenizer)
    for i, (pair, ex) in enumerate(zip(pairs, examples, strict=True)):
        signals = teacher.get(i)
        if signals is not None:
            ex.teacher_probs = signals.probs
            if signals.cot is not None:
                _attach_cot(ex, kind, signals.cot, queries[i], items[i], pair.label, report, cot_agree_only)
    return examples


def _attach_cot(
    ex: Example,
    kind: StudentKind,
    record: CoTRecord,
    query_text: str,
    item_text: str,
    label: str | None,
    report: TeacherReport,
    cot_agree_only: bool,
) -> None:
    ex.verdicts = verdict_targets(record)
    report.with_verdicts += bool((ex.verdicts != IGNORE).any())
    # The paper keeps CoT only where the teacher agrees with the human label: reasoning behind a
    # wrong verdict points at the wrong words.
    if cot_agree_only and label is not None and record.grade != label:
        report.evidence_skipped_disagree += 1
        return
    spans = record_spans(record, query_text, item_text, report.evidence)
    report.evidence.records_with_evidence += kind.attach_evidence(ex, spans, report.evidence)


def collate(examples: list[Example], kind: StudentKind, pad_id: int, num_levels: int) -> dict:
    """Pad a batch and stack its targets (masks mark rows that carry each kind of supervision)."""
    import torch

    probs = torch.zeros(len(examples), num_levels)
    has_probs = torch.zeros(len(examples), dtype=torch.bool)
    for r, ex in enumerate(examples):
        if ex.teacher_probs is not None:
            probs[r] = torch.from_numpy(ex.teacher_probs)
            has_probs[r] = True
    return {
        "labels": torch.tensor([ex.label for ex in examples], dtype=torch.long),
        "teacher_probs": probs,
        "has_teacher_probs": has_probs,
        "verdicts": torch.from_numpy(np.stack([ex.verdicts for ex in examples])),
        **kind.collate_inputs(examples, pad_id),
    }
