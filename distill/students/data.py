"""Training examples for the students: labelled pairs + (optional) merged teacher signals.

Every text goes through service.text_template and every encoding through
service.tokenization.BundleTokenizer — the code the service runs — so there is no train/serve skew.
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
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import ValidationError

from distill.data.schema import GRADE_LEVELS, LabelledPair
from distill.students.evidence import EvidenceStats, record_spans, token_distribution
from distill.teacher.cot import DIMENSIONS, VERDICTS, CoTRecord
from service.text_template import TextTemplate
from service.tokenization import BundleTokenizer, Encoded, pad_batch

IGNORE = -100


class TeacherFileError(ValueError):
    """A teacher record file that cannot be read; the message names the file and line."""


def read_teacher_records(path: str | Path) -> list[CoTRecord]:
    """One CoTRecord JSON per line (blank lines allowed)."""
    path = Path(path)
    if not path.is_file():
        raise TeacherFileError(f"teacher record file {path} does not exist")
    records = []
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                records.append(CoTRecord.model_validate_json(line))
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or "(root)"
                raise TeacherFileError(f"{path}:{line_no}: not a CoT record ({where}: {first['msg']})") from exc
    return records


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


def merge_teacher(pairs: Sequence[LabelledPair], sources: Sequence[TeacherSource],
                  report: TeacherReport) -> dict[int, PairTeacher]:
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
                probs = teacher_distribution(record)
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


def teacher_distribution(record: CoTRecord) -> np.ndarray | None:
    """The record's grade distribution in GRADE_LEVELS order, or None when it has none we can use."""
    if record.distribution_source == "none" or not record.grade_distribution:
        return None
    if set(GRADE_LEVELS) - set(record.grade_distribution):
        return None
    probs = np.array([record.grade_distribution[g] for g in GRADE_LEVELS], dtype=np.float32)
    total = float(probs.sum())
    if not np.isfinite(total) or total <= 0 or (probs < 0).any():
        return None
    return probs / total


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


def build_examples(kind: str, pairs: Sequence[LabelledPair], tokenizer: BundleTokenizer,
                   template: TextTemplate, teacher: dict[int, PairTeacher] | None = None,
                   report: TeacherReport | None = None, cot_agree_only: bool = True) -> list[Example]:
    """Encode ``pairs`` for a ``kind`` student and attach the teacher's targets where merged."""
    teacher = teacher or {}
    report = report or TeacherReport()
    queries = [template.query_text(p.query) for p in pairs]
    items = [template.item_text(p.item.as_mapping()) for p in pairs]
    if kind == "cross":
        pair_enc = tokenizer.encode_pairs(queries, items)
    else:
        query_enc = tokenizer.encode_queries(queries)
        item_enc = tokenizer.encode_items(items)
    examples = []
    for i, pair in enumerate(pairs):
        label = GRADE_LEVELS.index(pair.label) if pair.label in GRADE_LEVELS else IGNORE
        ex = Example(label=label, teacher_probs=None, verdicts=np.full(len(DIMENSIONS), IGNORE, dtype=np.int64))
        if kind == "cross":
            ex.pair = pair_enc[i]
        else:
            ex.query, ex.item = query_enc[i], item_enc[i]
        signals = teacher.get(i)
        if signals is not None:
            ex.teacher_probs = signals.probs
            if signals.cot is not None:
                _attach_cot(ex, kind, signals.cot, queries[i], items[i], pair.label, report, cot_agree_only)
        examples.append(ex)
    return examples


def _attach_cot(ex: Example, kind: str, record: CoTRecord, query_text: str, item_text: str,
                label: str | None, report: TeacherReport, cot_agree_only: bool) -> None:
    ex.verdicts = verdict_targets(record)
    report.with_verdicts += bool((ex.verdicts != IGNORE).any())
    # The paper keeps CoT only where the teacher agrees with the human label: reasoning behind a
    # wrong verdict points at the wrong words.
    if cot_agree_only and label is not None and record.grade != label:
        report.evidence_skipped_disagree += 1
        return
    spans = record_spans(record, query_text, item_text, report.evidence)
    if kind == "cross":
        ex.pair_evidence = token_distribution(ex.pair, {0: spans.query, 1: spans.item}, report.evidence)
        found = ex.pair_evidence is not None
    else:
        ex.query_evidence = token_distribution(ex.query, {0: spans.query}, report.evidence)
        ex.item_evidence = token_distribution(ex.item, {0: spans.item}, report.evidence)
        found = ex.query_evidence is not None or ex.item_evidence is not None
    report.evidence.records_with_evidence += found


def _evidence_matrix(rows: list[np.ndarray | None], width: int):
    import torch

    out = torch.zeros(len(rows), width)
    mask = torch.zeros(len(rows), dtype=torch.bool)
    for r, row in enumerate(rows):
        if row is not None:
            out[r, : len(row)] = torch.from_numpy(row)
            mask[r] = True
    return out, mask


def _tensors(encoded: list[Encoded], pad_id: int) -> dict:
    import torch

    return {k: torch.from_numpy(v) for k, v in pad_batch(encoded, pad_id).items()}


def collate(examples: list[Example], kind: str, pad_id: int, num_levels: int) -> dict:
    """Pad a batch and stack its targets (masks mark rows that carry each kind of supervision)."""
    import torch

    probs = torch.zeros(len(examples), num_levels)
    has_probs = torch.zeros(len(examples), dtype=torch.bool)
    for r, ex in enumerate(examples):
        if ex.teacher_probs is not None:
            probs[r] = torch.from_numpy(ex.teacher_probs)
            has_probs[r] = True
    batch = {
        "labels": torch.tensor([ex.label for ex in examples], dtype=torch.long),
        "teacher_probs": probs,
        "has_teacher_probs": has_probs,
        "verdicts": torch.from_numpy(np.stack([ex.verdicts for ex in examples])),
    }
    if kind == "cross":
        batch["pair"] = _tensors([ex.pair for ex in examples], pad_id)
        width = batch["pair"]["input_ids"].shape[1]
        batch["pair_evidence"], batch["has_pair_evidence"] = _evidence_matrix(
            [ex.pair_evidence for ex in examples], width)
    else:
        batch["query"] = _tensors([ex.query for ex in examples], pad_id)
        batch["item"] = _tensors([ex.item for ex in examples], pad_id)
        batch["query_evidence"], batch["has_query_evidence"] = _evidence_matrix(
            [ex.query_evidence for ex in examples], batch["query"]["input_ids"].shape[1])
        batch["item_evidence"], batch["has_item_evidence"] = _evidence_matrix(
            [ex.item_evidence for ex in examples], batch["item"]["input_ids"].shape[1])
    return batch
