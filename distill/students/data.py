"""Training examples for the students: labelled pairs + (optional) matched teacher CoT records.

Every text goes through service.text_template and every encoding through
service.tokenization.BundleTokenizer — the code the service runs — so there is no train/serve skew.
Teacher records are matched to pairs by ``pair_id``, else by (query, item id); unmatched and
unusable records are counted in ``TeacherReport``, never silently dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

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


@dataclass
class TeacherReport:
    records: int = 0
    matched: int = 0
    unmatched: int = 0  # records for pairs not in the training set (e.g. dev pairs)
    duplicates: int = 0  # later records for an already-matched pair (the first one is kept)
    parse_failed: int = 0  # parse_ok=False: no supervision taken from them
    with_distribution: int = 0
    no_distribution: int = 0  # distribution_source "none", empty, or levels not on the project scale
    with_verdicts: int = 0
    evidence_skipped_disagree: int = 0  # teacher grade != human label (with --cot-agree-only)
    evidence: EvidenceStats = field(default_factory=EvidenceStats)

    def as_dict(self) -> dict:
        out = asdict(self)
        out["evidence"] = self.evidence.as_dict()
        return out


def match_records(pairs: Sequence[LabelledPair], records: Sequence[CoTRecord],
                  report: TeacherReport) -> dict[int, CoTRecord]:
    """Pair index → its teacher record (by pair_id, else by (query, item id))."""
    by_id = {p.pair_id: i for i, p in enumerate(pairs)}
    by_key = {(p.query, p.item.id): i for i, p in enumerate(pairs)}
    matched: dict[int, CoTRecord] = {}
    for record in records:
        report.records += 1
        index = by_id.get(record.pair_id)
        if index is None:
            index = by_key.get((record.query, record.item_id))
        if index is None:
            report.unmatched += 1
        elif index in matched:
            report.duplicates += 1
        else:
            matched[index] = record
    report.matched = len(matched)
    return matched


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
                   template: TextTemplate, records: dict[int, CoTRecord] | None = None,
                   report: TeacherReport | None = None, cot_agree_only: bool = True) -> list[Example]:
    """Encode ``pairs`` for a ``kind`` student and attach the teacher's targets where matched."""
    records = records or {}
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
        record = records.get(i)
        if record is not None:
            _attach_teacher(ex, kind, record, queries[i], items[i], pair.label, report, cot_agree_only)
        examples.append(ex)
    return examples


def _attach_teacher(ex: Example, kind: str, record: CoTRecord, query_text: str, item_text: str,
                    label: str | None, report: TeacherReport, cot_agree_only: bool) -> None:
    if not record.parse_ok:
        report.parse_failed += 1
        return
    ex.teacher_probs = teacher_distribution(record)
    if ex.teacher_probs is None:
        report.no_distribution += 1
    else:
        report.with_distribution += 1
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
