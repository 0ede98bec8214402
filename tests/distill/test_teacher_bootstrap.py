"""Label-conditioned bootstrap rationales: verified overlap spans, label as grade, no fake distribution."""

from core.cot import grade_distribution
from core.item import Item
from core.text_template import DEFAULT_TEMPLATE
from distill.data.schema import LabelledPair
from distill.students.evidence import EvidenceStats, record_spans
from distill.teacher.bootstrap import bootstrap_record, overlap_spans


def _pair(query: str, title: str, label: str | None = "Exact") -> LabelledPair:
    return LabelledPair(query_id="q1", query=query, item=Item(id="i1", title=title), label=label)


def test_overlap_spans_are_whole_words_with_exact_offsets():
    query = "Red leather sofa for the living room"
    item = "Three-seat sofa | color: RED | material: leather-look fabric"
    spans = overlap_spans(query, item)
    texts = [(s.source, s.text) for s in spans]
    # "for"/"the" are stopwords; "living"/"room" are absent; a hyphen bounds a word, so "leather"
    # is found in "leather-look" (lexical overlap, not meaning: that is all this heuristic sees).
    assert texts == [
        ("query", "Red"),
        ("item", "RED"),
        ("query", "leather"),
        ("item", "leather"),
        ("query", "sofa"),
        ("item", "sofa"),
    ]
    for span in spans:
        text = query if span.source == "query" else item
        assert span.verified and text[span.start : span.end] == span.text


def test_record_carries_label_and_evidence_the_students_accept():
    pair = _pair("usb c cable 2m", "Anker USB C cable, 2m braided")
    record = bootstrap_record(pair)
    assert record.grade == "Exact" and record.label == "Exact" and record.parse_ok
    assert record.distribution_source == "none" and grade_distribution(record, record.grade_levels) is None
    stats = EvidenceStats()
    spans = record_spans(
        record,
        DEFAULT_TEMPLATE.query_text(pair.query),
        DEFAULT_TEMPLATE.item_text(pair.item.as_mapping()),
        stats,
    )
    assert len(spans.query) == 3 and len(spans.item) == 3  # usb, cable, 2m ("c" is one character)
    assert stats.spans_unverified == 0 and stats.spans_bad_offsets == 0


def test_unlabelled_pair_is_kept_as_a_failed_record():
    record = bootstrap_record(_pair("lamp", "Desk lamp", label=None))
    assert not record.parse_ok and record.parse_errors and record.grade is None


def _judgements(record, dimension):
    return [j for j in record.dimensions if j.dimension == dimension]


def test_attribute_dimensions_are_judged_with_spans_on_both_sides():
    pair = _pair("red leather sofa 84 inch", "Blue Leather Sofa, 84 Inch, 3-seat")
    record = bootstrap_record(pair, attributes=True)
    assert (record.teacher_id, record.prompt_version) == (
        "bootstrap:label+attributes+overlap",
        "bootstrap-v2",
    )
    (color,) = _judgements(record, "color")
    assert (color.verdict, color.query_value, color.item_value) == ("mismatch", "red", "Blue")
    (material,) = _judgements(record, "material")
    assert material.verdict == "match" and [s.text for s in material.evidence] == ["leather", "Leather"]
    (size,) = _judgements(record, "size")
    assert size.verdict == "match" and [s.text for s in size.evidence] == ["84 inch", "84 Inch"]
    # Words cited by an attribute are not repeated as overlap; "sofa" is.
    (overlap,) = _judgements(record, "lexical_overlap")
    assert [s.text for s in overlap.evidence if s.source == "query"] == ["sofa"]
    for judgement in record.dimensions:
        for span in judgement.evidence:
            text = record.query if span.source == "query" else record.item_text
            assert span.verified and text[span.start : span.end] == span.text


def test_an_attribute_the_item_does_not_state_cites_the_query_only():
    (color,) = _judgements(
        bootstrap_record(_pair("black desk lamp", "LED desk lamp"), attributes=True), "color"
    )
    assert color.verdict == "not_stated" and [s.source for s in color.evidence] == ["query"]


def test_negated_query_words_are_judged_against_the_item():
    def exclusion(title):
        record = bootstrap_record(_pair("paper bags without handles", title), attributes=True)
        (judgement,) = _judgements(record, "exclusion")
        return judgement.verdict, [s.text for s in judgement.evidence]

    assert exclusion("Kraft Paper Bags with Handles, 50 pack") == ("mismatch", ["without handles", "Handles"])
    assert exclusion("Flat Paper Bags Without Handle") == ("match", ["without handles", "Handle"])
    assert exclusion("Handle-free paper bags") == ("match", ["without handles", "Handle"])
    assert exclusion("Brown paper bags") == ("not_stated", ["without handles"])


def test_overlap_only_records_are_unchanged_without_attributes():
    record = bootstrap_record(_pair("red sofa without legs", "Red sofa with legs"))
    assert (record.teacher_id, record.prompt_version) == ("bootstrap:label+lexical-overlap", "bootstrap-v1")
    assert [j.dimension for j in record.dimensions] == ["lexical_overlap"]
    assert [s.text for s in record.dimensions[0].evidence if s.source == "query"] == ["red", "sofa", "legs"]
