"""`relevance explain` output: the dimension table renders verdicts and evidence from a CoT record."""

from __future__ import annotations

from rich.console import Console

from core.cot import CoTRecord, DimensionJudgement, EvidenceSpan
from service.explain.cli import _print_explanation


def test_dimension_table_shows_values_verdicts_and_evidence() -> None:
    record = CoTRecord(
        teacher_id="llamacpp:smollm2",
        prompt_version="v1",
        pair_id="p",
        query="red leather sofa",
        item_id="s1",
        item_text="Three-seat sofa | color: blue",
        grade="Partial",
        grade_levels=["Irrelevant", "Partial", "Exact"],
        grade_distribution={"Irrelevant": 0.2, "Partial": 0.7, "Exact": 0.1},
        distribution_source="logits",
        rationale="A sofa, but blue.",
        dimensions=[
            DimensionJudgement(
                dimension="product_type",
                query_value="sofa",
                item_value="sofa",
                verdict="match",
                evidence=[EvidenceSpan(source="item", text="sofa", start=11, end=15, verified=True)],
            ),
            DimensionJudgement(
                dimension="color",
                query_value="red",
                item_value="blue",
                verdict="mismatch",
                evidence=[EvidenceSpan(source="query", text="crimson")],
            ),
        ],
    )
    body = {
        "query": "red leather sofa",
        "item_id": "s1",
        "explanation": record.model_dump(),
        "cached": True,
        "student": {"bundle": "b@1", "score": 0.61, "grade_distribution": None},
        "timings_ms": {"store_ms": 0.4, "student_ms": 3.0, "teacher_ms": 0.8, "total_ms": 4.5},
    }
    console = Console(record=True, width=160)
    _print_explanation(console, body)
    text = console.export_text()
    assert "grade Partial" in text and "Partial 0.70" in text
    assert "product_type" in text and "mismatch" in text
    assert 'item: "sofa"' in text and 'query: "crimson" (not found)' in text
    assert "A sofa, but blue." in text and "cached=True" in text and "score 0.610" in text
