"""Collaborative annotation: a CoT is kept only where both annotators and the human label agree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.cot import read_records
from distill.data.bundled import load_bundled
from distill.teacher.collaborative import collaborate, majority

pytestmark = pytest.mark.llm


def test_majority_and_share() -> None:
    assert majority(["Exact", "Partial", "Exact"]) == ("Exact", 2 / 3)
    assert majority(["Partial", "Exact"]) == ("Partial", 0.5)  # tie: the first reached
    assert majority([None, None]) == (None, 0.0)


async def test_kept_only_where_annotators_and_label_agree(tmp_path: Path) -> None:
    pairs = load_bundled("dev")[:3]
    summary = await collaborate(
        pairs,
        tmp_path,
        annotators=("llamacpp", "llamacpp?temperature=0.5"),
        samples=2,
        mode="score",
        progress=False,
    )
    a_records, _ = read_records(tmp_path / "annotator_a.jsonl")
    b_records, _ = read_records(tmp_path / "annotator_b.jsonl")
    # Greedy annotator: its two samples coincide and are judged once; the sampled one twice.
    assert len(a_records) == 3 and len(b_records) == 6
    assert summary["teacher_ids"]["b"] == [
        "llamacpp:SmolLM2-135M-Instruct.Q4_1@t0.5s0",
        "llamacpp:SmolLM2-135M-Instruct.Q4_1@t0.5s1",
    ]

    grade_a = {r.pair_id: r.grade for r in a_records}
    expected = [p.pair_id for p in pairs if grade_a[p.pair_id] == p.label]  # score mode: annotators agree
    kept, _ = read_records(tmp_path / "kept.jsonl")
    assert [r.pair_id for r in kept] == expected
    assert all(r.grade == r.label for r in kept)
    assert summary["annotator_agreement"] == 1.0
    assert summary["kept"] == len(expected) and summary["pairs"] == 3
    assert summary["annotator_a_human_agreement"] == round(len(expected) / 3, 4)
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
