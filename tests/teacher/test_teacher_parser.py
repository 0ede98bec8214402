"""Parser of teacher outputs: valid, truncated, non-JSON and adversarial answers."""

from __future__ import annotations

import json

import pytest

from teacher.parser import locate_span, normalise_grade, parse_output
from teacher.prompt import PROMPT_VERSION, build_messages, prefill

LEVELS = ["Irrelevant", "Partial", "Exact"]
QUERY = "red nike running shoes"
ITEM = "Nike Men's Revolution 6 Running Shoe | color: Black/White"


def _answer(**overrides: object) -> str:
    answer = {
        "dimensions": [
            {
                "dimension": "brand",
                "query_value": "nike",
                "item_value": "Nike",
                "verdict": "match",
                "evidence": [{"source": "query", "text": "nike"}, {"source": "item", "text": "Nike"}],
            },
            {
                "dimension": "color",
                "query_value": "red",
                "item_value": "Black/White",
                "verdict": "mismatch",
                "evidence": [{"source": "item", "text": "Black/White"}],
            },
        ],
        "rationale": "Right brand and type, wrong colour.",
        "grade": "Partial",
    }
    answer.update(overrides)
    return json.dumps(answer)


def test_valid_output_parses_with_verified_offsets() -> None:
    parsed = parse_output(_answer(), QUERY, ITEM, LEVELS)
    assert parsed.ok, parsed.errors
    assert parsed.grade == "Partial"
    assert [d.dimension for d in parsed.dimensions] == ["brand", "color"]
    assert parsed.dimensions[1].verdict == "mismatch"
    for dim in parsed.dimensions:
        for span in dim.evidence:
            text = QUERY if span.source == "query" else ITEM
            assert span.verified and text[span.start : span.end] == span.text


def test_evidence_not_in_text_is_kept_unverified_and_counted() -> None:
    raw = _answer(dimensions=[{"dimension": "brand", "verdict": "match", "evidence": ["Adidas", "NIKE"]}])
    parsed = parse_output(raw, QUERY, ITEM, LEVELS)
    assert parsed.ok  # an unverified span is not a parse failure, it is counted
    spans = parsed.dimensions[0].evidence
    assert [(s.text, s.verified) for s in spans] == [("Adidas", False), ("nike", True)]
    assert spans[0].start is None and parsed.unverified_evidence == 1


def test_evidence_source_is_corrected_to_where_the_span_is() -> None:
    raw = _answer(
        dimensions=[
            {"dimension": "color", "verdict": "mismatch", "evidence": [{"source": "item", "text": "red"}]}
        ]
    )
    span = parse_output(raw, QUERY, ITEM, LEVELS).dimensions[0].evidence[0]
    assert (span.source, span.start, span.end, span.verified) == ("query", 0, 3, True)


def test_truncated_output_keeps_what_parsed() -> None:
    raw = _answer()
    truncated = raw[: raw.index('"rationale"') + 20]
    parsed = parse_output(truncated, QUERY, ITEM, LEVELS)
    assert not parsed.ok
    assert any("no grade" in e for e in parsed.errors)
    assert [d.dimension for d in parsed.dimensions] == ["brand", "color"]


def test_non_json_output_is_a_parse_error() -> None:
    parsed = parse_output("I think this product is relevant.", QUERY, ITEM, LEVELS)
    assert not parsed.ok and parsed.grade is None
    assert parsed.errors == ["no JSON object in the output"]


def test_markdown_fenced_and_slightly_broken_json_is_repaired() -> None:
    raw = "```json\n{'dimensions': [], 'rationale': 'ok', 'grade': 'Exact',}\n```"
    parsed = parse_output(raw, QUERY, ITEM, LEVELS)
    assert parsed.ok, parsed.errors
    assert parsed.grade == "Exact"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Exact", "Exact"),
        ("exact match", "Exact"),
        ("Partially relevant", "Partial"),
        ("IRRELEVANT.", "Irrelevant"),
        ("Exact or Partial", None),  # ambiguous
        ("relevant", None),
        ("2", None),
        (3, None),
    ],
)
def test_grade_normalisation(value: object, expected: str | None) -> None:
    assert normalise_grade(value, LEVELS) == expected


def test_unknown_grade_and_verdict_are_errors_not_drops() -> None:
    raw = _answer(grade="Somewhat", dimensions=[{"dimension": "colour", "verdict": "kinda", "evidence": []}])
    parsed = parse_output(raw, QUERY, ITEM, LEVELS)
    assert not parsed.ok and parsed.grade is None
    assert any("unknown or ambiguous grade 'Somewhat'" in e for e in parsed.errors)
    assert any("unknown verdict 'kinda'" in e for e in parsed.errors)
    # The judgement is kept (dimension normalised: colour → color), its verdict defaulted.
    assert [(d.dimension, d.verdict) for d in parsed.dimensions] == [("color", "not_stated")]


def test_dimensions_as_object_and_verdict_synonyms() -> None:
    raw = json.dumps(
        {"dimensions": {"Brand": {"verdict": "Matches"}, "size": {"verdict": "not stated"}}, "grade": "Exact"}
    )
    parsed = parse_output(raw, QUERY, ITEM, LEVELS)
    assert parsed.ok, parsed.errors
    assert [(d.dimension, d.verdict) for d in parsed.dimensions] == [
        ("brand", "match"),
        ("size", "not_stated"),
    ]


def test_locate_span_ignores_case_and_whitespace() -> None:
    assert locate_span("running   SHOE", ITEM) == (
        ITEM.index("Running"),
        ITEM.index("Running") + len("Running Shoe"),
    )
    assert locate_span("   ", ITEM) is None


def test_prompt_puts_grade_last_and_score_prefill_ends_at_verdict() -> None:
    system = build_messages(QUERY, ITEM, "cot", LEVELS)[0]["content"]
    example = json.loads(system[system.rindex("\n{") + 1 :])
    assert list(example)[-1] == "grade"
    assert prefill("score").endswith('"grade": "')
    assert PROMPT_VERSION


def test_teacher_package_imports_without_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys, distill.teacher, distill.teacher.annotate, distill.teacher.collaborative, "
        "teacher.backends.llamacpp, teacher.backends.openai_http, distill.teacher.cli; "
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
