"""Teacher evidence spans → distributions over a student's input word-pieces.

A CoT record's evidence spans carry character offsets into the texts the teacher saw: the
record's ``query`` (source ``query``) and ``item_text`` (source ``item``). A span maps to every
word-piece of the matching sequence whose character range overlaps it, so a span that splits a
word (``"bott"`` in ``"bottles"``) still selects the word-piece(s) it touches. The target
distribution is **uniform over the union of the selected word-pieces** (the teacher names which
words matter, not how much), zero elsewhere, including on special tokens.

Nothing is silently dropped: ``EvidenceStats`` counts spans that are unverified, lie outside the
text, or fall past the truncation limit, and records whose query / item text differ from the
student's rendered text (their offsets would point at the wrong characters, so their evidence is
skipped; their grade distribution is still usable).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from core.cot import CoTRecord
from core.tokenization import Encoded

Span = tuple[int, int]


@dataclass
class EvidenceStats:
    records: int = 0
    records_with_evidence: int = 0
    records_query_text_mismatch: int = 0  # query spans skipped
    records_item_text_mismatch: int = 0  # item spans skipped
    spans_total: int = 0
    spans_used: int = 0
    spans_unverified: int = 0  # verified=False or no offsets
    spans_bad_offsets: int = 0  # offsets outside the text, or text[start:end] != span text
    spans_text_mismatch: int = 0  # its side's text differs from the student's text
    spans_truncated: int = 0  # no word-piece left after truncation

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class RecordSpans:
    query: list[Span]
    item: list[Span]

    def __bool__(self) -> bool:
        return bool(self.query or self.item)


def record_spans(record: CoTRecord, query_text: str, item_text: str, stats: EvidenceStats) -> RecordSpans:
    """The verified spans of ``record`` whose offsets are valid in the student's texts."""
    stats.records += 1
    query_ok = record.query == query_text
    item_ok = record.item_text == item_text
    stats.records_query_text_mismatch += not query_ok
    stats.records_item_text_mismatch += not item_ok
    sides: dict[str, list[Span]] = {"query": [], "item": []}
    for judgement in record.dimensions:
        for span in judgement.evidence:
            stats.spans_total += 1
            if not span.verified or span.start is None or span.end is None:
                stats.spans_unverified += 1
                continue
            text, ok = (query_text, query_ok) if span.source == "query" else (item_text, item_ok)
            if not ok:
                stats.spans_text_mismatch += 1
                continue
            if not (0 <= span.start < span.end <= len(text)) or text[span.start : span.end] != span.text:
                stats.spans_bad_offsets += 1
                continue
            sides[span.source].append((span.start, span.end))
    return RecordSpans(query=sides["query"], item=sides["item"])


def token_distribution(
    encoded: Encoded, spans_by_sequence: dict[int, list[Span]], stats: EvidenceStats
) -> np.ndarray | None:
    """Uniform distribution over the word-pieces the spans overlap; None if no span reaches a token.

    ``spans_by_sequence`` keys are tokenizer sequence ids: for a pair encoding 0 = query, 1 = item;
    for a single-text encoding 0 = that text. Offsets of a pair encoding are per sequence.
    """
    selected = np.zeros(len(encoded), dtype=bool)
    for sequence, spans in spans_by_sequence.items():
        for start, end in spans:
            hit = False
            for t, (seq_id, (tok_start, tok_end)) in enumerate(
                zip(encoded.sequence_ids, encoded.offsets, strict=True)
            ):
                if seq_id == sequence and tok_start < end and tok_end > start:
                    selected[t] = True
                    hit = True
            if hit:
                stats.spans_used += 1
            else:
                stats.spans_truncated += 1
    if not selected.any():
        return None
    return selected.astype(np.float32) / float(selected.sum())
