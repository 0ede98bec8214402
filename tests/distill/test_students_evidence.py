"""Evidence span → word-piece distributions, on the real all-MiniLM-L6-v2 tokenizer."""

from __future__ import annotations

import numpy as np
import pytest
from tokenizers import Tokenizer

from core.cot import CoTRecord, DimensionJudgement, EvidenceSpan
from core.tokenization import BundleTokenizer
from distill.students.backbone import tokenizer_file
from distill.students.evidence import EvidenceStats, record_spans, token_distribution

QUERY = "hydroflask water bottle"
ITEM = "Hydro Flask Wide Mouth Bottle 32 oz | color: black"


def _span(source: str, text: str, sub: str, verified: bool = True, start: int | None = None) -> EvidenceSpan:
    s = text.index(sub) if start is None else start
    return EvidenceSpan(source=source, text=sub, start=s, end=s + len(sub), verified=verified)


def _record(spans: list[EvidenceSpan], query: str = QUERY, item_text: str = ITEM) -> CoTRecord:
    return CoTRecord(
        teacher_id="t",
        prompt_version="v1",
        pair_id="p",
        query=query,
        item_id="i",
        item_text=item_text,
        grade="Exact",
        grade_levels=["Irrelevant", "Partial", "Exact"],
        dimensions=[DimensionJudgement(dimension="brand", verdict="match", evidence=spans)],
    )


@pytest.fixture(scope="module")
def tok():
    path = tokenizer_file()
    return BundleTokenizer(
        path, max_pair_tokens=64, max_query_tokens=16, max_item_tokens=64
    ), Tokenizer.from_file(str(path))


def _selected(enc, dist, vocab: Tokenizer) -> list[tuple[int | None, str]]:
    return [(enc.sequence_ids[t], vocab.id_to_token(enc.ids[t])) for t in np.flatnonzero(dist)]


def test_span_splitting_a_word_selects_every_overlapping_word_piece(tok):
    bundle_tok, vocab = tok
    enc = bundle_tok.encode_pairs([QUERY], [ITEM])[0]
    pieces = [vocab.id_to_token(i) for i, s in zip(enc.ids, enc.sequence_ids, strict=True) if s == 0]
    assert pieces[:3] == ["hydro", "##fl", "##ask"]  # the premise of this test: the word is split
    stats = EvidenceStats()
    # "hydrof" ends inside "##fl": hydro + ##fl are selected, ##ask is not.
    spans = record_spans(
        _record([_span("query", QUERY, "hydrof"), _span("item", ITEM, "Bottle")]), QUERY, ITEM, stats
    )
    dist = token_distribution(enc, {0: spans.query, 1: spans.item}, stats)
    assert _selected(enc, dist, vocab) == [(0, "hydro"), (0, "##fl"), (1, "bottle")]
    assert np.allclose(dist[dist > 0], 1 / 3) and dist.sum() == pytest.approx(1.0)
    assert stats.spans_used == 2 and stats.spans_total == 2


def test_item_span_maps_to_item_sequence_not_same_word_in_query(tok):
    bundle_tok, vocab = tok
    enc = bundle_tok.encode_pairs([QUERY], [ITEM])[0]
    stats = EvidenceStats()
    spans = record_spans(_record([_span("item", ITEM, "Bottle")]), QUERY, ITEM, stats)
    dist = token_distribution(enc, {0: spans.query, 1: spans.item}, stats)
    assert _selected(enc, dist, vocab) == [
        (1, "bottle")
    ]  # "bottle" of the query (sequence 0) is not selected


def test_unverified_bad_and_mismatched_spans_are_skipped_and_counted(tok):
    bundle_tok, _ = tok
    stats = EvidenceStats()
    record = _record(
        [
            _span("query", QUERY, "water", verified=False),  # teacher could not verify it
            EvidenceSpan(source="item", text="Steel", start=None, end=None, verified=True),  # not found
            _span("item", ITEM, "Flask", start=0),  # offsets point at other text
            _span("item", ITEM, "black", start=len(ITEM) - 5),  # valid
        ]
    )
    spans = record_spans(record, QUERY, ITEM, stats)
    assert spans.query == [] and spans.item == [(len(ITEM) - 5, len(ITEM))]
    assert (stats.spans_unverified, stats.spans_bad_offsets, stats.spans_total) == (2, 1, 4)

    # The student renders a different item text: every item span is skipped, the record counted.
    stats = EvidenceStats()
    spans = record_spans(
        _record([_span("item", ITEM, "Bottle"), _span("query", QUERY, "water")]),
        QUERY,
        ITEM + " | brand: Hydro Flask",
        stats,
    )
    assert spans.item == [] and len(spans.query) == 1
    assert stats.records_item_text_mismatch == 1 and stats.spans_text_mismatch == 1
    assert stats.records_query_text_mismatch == 0


def test_span_past_truncation_is_counted_and_gives_no_distribution(tok):
    _, vocab = tok
    short = BundleTokenizer(tokenizer_file(), max_pair_tokens=8, max_query_tokens=4, max_item_tokens=8)
    enc = short.encode_pairs([QUERY], [ITEM])[0]
    stats = EvidenceStats()
    spans = record_spans(_record([_span("item", ITEM, "black")]), QUERY, ITEM, stats)
    assert token_distribution(enc, {1: spans.item}, stats) is None
    assert stats.spans_truncated == 1 and stats.spans_used == 0
