"""The CoT record file's one reader and the one rule for "this record has a distribution" (core/cot.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.cot import CoTFileError, CoTRecord, read_records


def _record(pair_id: str) -> CoTRecord:
    return CoTRecord(teacher_id="t", prompt_version="v", pair_id=pair_id, query="q", item_id="i", item_text="x",
                     grade_levels=["Irrelevant", "Partial", "Exact"])  # fmt: skip


def test_corrupt_line_in_the_middle_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(_record("a").model_dump_json() + "\n{not json}\n" + _record("b").model_dump_json() + "\n")
    with pytest.raises(CoTFileError, match=r"bad\.jsonl:2: not a CoT record"):
        read_records(path)


def test_torn_tail_is_an_error_or_counted_and_only_cut_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "torn.jsonl"
    whole = _record("a").model_dump_json() + "\n"
    path.write_text(whole + '{"teacher_id": "t", "prom')
    with pytest.raises(CoTFileError, match=r"torn\.jsonl:2: torn last line"):
        read_records(path)
    records, torn = read_records(path, torn="count")
    assert (len(records), torn) == (1, 1) and path.read_text() != whole
    records, torn = read_records(path, torn="cut")
    assert (len(records), torn) == (1, 1) and path.read_text() == whole


def test_a_partial_distribution_is_no_distribution_for_training_and_eval_alike(tmp_path: Path) -> None:
    from core.cot import grade_distribution
    from distill.eval.systems import record_distribution

    levels = ["Irrelevant", "Partial", "Exact"]
    partial = _record("a").model_copy(
        update={
            "grade_distribution": {"Exact": 0.9, "Partial": 0.1},
            "distribution_source": "logits",
            "grade": "Exact",
        }
    )
    assert grade_distribution(partial, levels) is None
    # eval scores such a record by its grade (one-hot), never by the partial distribution
    assert list(record_distribution(partial)) == [0.0, 0.0, 1.0]
    whole = partial.model_copy(
        update={"grade_distribution": {"Exact": 2.0, "Partial": 1.0, "Irrelevant": 1.0}}
    )
    assert list(grade_distribution(whole, levels)) == [0.25, 0.25, 0.5]
