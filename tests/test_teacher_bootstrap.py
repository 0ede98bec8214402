"""Label-conditioned bootstrap rationales: verified overlap spans, label as grade, no fake distribution."""

from distill.data.schema import Item, LabelledPair
from distill.students.data import teacher_distribution
from distill.students.evidence import EvidenceStats, record_spans
from distill.teacher.bootstrap import bootstrap_record, overlap_spans
from service.text_template import DEFAULT_TEMPLATE


def _pair(query: str, title: str, label: str | None = "Exact") -> LabelledPair:
    return LabelledPair(query_id="q1", query=query, item=Item(id="i1", title=title), label=label)


def test_overlap_spans_are_whole_words_with_exact_offsets():
    query = "Red leather sofa for the living room"
    item = "Three-seat sofa | color: RED | material: leather-look fabric"
    spans = overlap_spans(query, item)
    texts = [(s.source, s.text) for s in spans]
    # "for"/"the" are stopwords; "living"/"room" are absent; a hyphen bounds a word, so "leather"
    # is found in "leather-look" (lexical overlap, not meaning: that is all this heuristic sees).
    assert texts == [("query", "Red"), ("item", "RED"), ("query", "leather"), ("item", "leather"),
                     ("query", "sofa"), ("item", "sofa")]
    for span in spans:
        text = query if span.source == "query" else item
        assert span.verified and text[span.start:span.end] == span.text


def test_record_carries_label_and_evidence_the_students_accept():
    pair = _pair("usb c cable 2m", "Anker USB C cable, 2m braided")
    record = bootstrap_record(pair)
    assert record.grade == "Exact" and record.label == "Exact" and record.parse_ok
    assert record.distribution_source == "none" and teacher_distribution(record) is None
    stats = EvidenceStats()
    spans = record_spans(record, DEFAULT_TEMPLATE.query_text(pair.query),
                         DEFAULT_TEMPLATE.item_text(pair.item.as_mapping()), stats)
    assert len(spans.query) == 3 and len(spans.item) == 3  # usb, cable, 2m ("c" is one character)
    assert stats.spans_unverified == 0 and stats.spans_bad_offsets == 0


def test_unlabelled_pair_is_kept_as_a_failed_record():
    record = bootstrap_record(_pair("lamp", "Desk lamp", label=None))
    assert not record.parse_ok and record.parse_errors and record.grade is None
