"""Merging teacher signals: the grade distribution from one file, verdicts and evidence from another."""

from __future__ import annotations

import numpy as np
import pytest

from core.cot import CoTRecord, DimensionJudgement
from core.grades import GRADE_LEVELS
from core.text_template import DEFAULT_TEMPLATE
from distill.data.bundled import load_bundled
from distill.students.backbone import tokenizer_file
from distill.students.config import TrainConfig, make_tokenizer
from distill.students.data import IGNORE, TeacherReport, TeacherSource, build_examples, merge_teacher
from distill.teacher.bootstrap import bootstrap_record

# Starts servers, trains or exports models: not part of make test-fast.
pytestmark = pytest.mark.slow

SCORES_A = {"Irrelevant": 0.1, "Partial": 0.2, "Exact": 0.7}
SCORES_C = {"Irrelevant": 0.6, "Partial": 0.3, "Exact": 0.1}


def _score_record(pair, distribution: dict[str, float], *, with_cot: bool = False) -> CoTRecord:
    """A score-mode teacher record (distribution, no reasoning) unless ``with_cot``."""
    dims = [DimensionJudgement(dimension="brand", verdict="mismatch")] if with_cot else []
    return CoTRecord(
        teacher_id="teacher-a",
        prompt_version="v1",
        mode="cot" if with_cot else "score",
        pair_id=pair.pair_id,
        query=DEFAULT_TEMPLATE.query_text(pair.query),
        item_id=pair.item.id,
        item_text=DEFAULT_TEMPLATE.item_text(pair.item.as_mapping()),
        grade="Exact",
        grade_levels=list(GRADE_LEVELS),
        grade_distribution=distribution,
        distribution_source="logits",
        dimensions=dims,
    )


@pytest.fixture(scope="module")
def pairs():
    """Train pairs whose bootstrap (label + lexical-overlap) record carries evidence."""
    found = [p for p in load_bundled("train") if bootstrap_record(p, DEFAULT_TEMPLATE).dimensions[0].evidence]
    return found[:6]


def _examples(pairs, sources, report, kind="cross"):
    config = TrainConfig(name="t", kind=kind, max_tokens=64)
    merged = merge_teacher(pairs, sources, report)
    return build_examples(
        config.student_kind, pairs, make_tokenizer(config, tokenizer_file()), DEFAULT_TEMPLATE, merged, report
    )


@pytest.mark.parametrize("kind", ["cross", "bi"])
def test_merged_example_has_distribution_of_a_and_evidence_of_b(pairs, kind):
    # File A covers pairs 0-3 (distribution), file B pairs 2-5 (evidence): 2 and 3 get both,
    # 0-1 only the distribution, 4-5 only the evidence.
    a = TeacherSource("a.jsonl", "scores", [_score_record(p, SCORES_A) for p in pairs[:4]])
    b = TeacherSource("b.jsonl", "cot", [bootstrap_record(p, DEFAULT_TEMPLATE) for p in pairs[2:]])
    report = TeacherReport()
    examples = _examples(pairs, [a, b], report, kind)

    expected = np.array([SCORES_A[g] for g in GRADE_LEVELS], dtype=np.float32)
    for ex in examples[:4]:
        np.testing.assert_allclose(ex.teacher_probs, expected, rtol=1e-6)
    for ex in examples[4:]:
        assert ex.teacher_probs is None  # B's records carry no distribution (distribution_source "none")
    evidence = [ex.pair_evidence if kind == "cross" else ex.item_evidence for ex in examples]
    assert [e is not None for e in evidence] == [False, False, True, True, True, True]
    for e in evidence[2:]:
        assert e.sum() == pytest.approx(1.0)
    assert (report.train_pairs, report.with_distribution, report.with_cot) == (6, 4, 4)
    assert report.evidence.records_with_evidence == 4
    assert [(s.distribution_used, s.cot_used) for s in report.sources] == [(4, 0), (0, 4)]
    assert report.sources[1].no_distribution == 0  # a cot-only file is not asked for distributions


def test_use_restricts_signals_and_first_file_wins(pairs):
    # A cot-mode record read as "scores" gives its distribution only; a later "all" file still
    # supplies the CoT, and its distribution loses to the earlier file's.
    a = TeacherSource("a.jsonl", "scores", [_score_record(pairs[0], SCORES_A, with_cot=True)])
    c = TeacherSource(
        "c.jsonl",
        "all",
        [_score_record(pairs[0], SCORES_C, with_cot=True), _score_record(pairs[1], SCORES_C)],
    )
    report = TeacherReport()
    ex0, ex1, *rest = _examples(pairs, [a, c], report)

    assert ex0.teacher_probs[GRADE_LEVELS.index("Exact")] == pytest.approx(0.7)  # from a, not c
    assert ex0.verdicts.tolist().count(IGNORE) == len(ex0.verdicts) - 1  # c's "brand" verdict
    assert ex1.teacher_probs[GRADE_LEVELS.index("Exact")] == pytest.approx(0.1)
    assert (ex1.verdicts == IGNORE).all()
    assert all(ex.teacher_probs is None for ex in rest)
    sa, sc = report.sources
    assert (sa.distribution_used, sa.cot_used) == (1, 0)
    assert (sc.distribution_used, sc.distribution_shadowed, sc.cot_used, sc.no_cot) == (1, 1, 1, 1)
    assert (report.with_distribution, report.with_cot, report.with_verdicts) == (2, 1, 1)


def test_train_cli_merges_files_and_refuses_a_term_with_no_coverage(tmp_path):
    from typer.testing import CliRunner

    from distill.cli import app

    train = load_bundled("train")
    scores = tmp_path / "scores.jsonl"
    scores.write_text("".join(_score_record(p, SCORES_A).model_dump_json() + "\n" for p in train[:10]))
    runner = CliRunner()
    # Score-mode records carry no evidence: --w-cot would silently train without its term.
    result = runner.invoke(
        app,
        [
            "student",
            "train",
            "--name",
            "x",
            "--teacher-scores",
            str(scores),
            "--teacher-cot",
            str(scores),
            "--w-score-kd",
            "1",
            "--w-cot",
            "0.5",
            "--runs-dir",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 2
    assert "the cot weight is > 0 but no training pair got usable evidence spans" in result.output
    assert "score_kd weight" not in result.output  # 10 pairs did get a distribution
    assert not (tmp_path / "x").exists()

    result = runner.invoke(
        app, ["student", "train", "--name", "x", "--teacher-scores", str(scores), "--w-cot", "0.5"]
    )
    assert result.exit_code == 2 and "--teacher-cot" in result.output

    bad = tmp_path / "cot.jsonl"
    bad.write_text(bootstrap_record(train[0], DEFAULT_TEMPLATE).model_dump_json() + "\n{}\n")
    result = runner.invoke(
        app,
        [
            "student",
            "train",
            "--name",
            "x",
            "--teacher-scores",
            str(scores),
            "--teacher-cot",
            str(bad),
            "--w-cot",
            "0.5",
            "--runs-dir",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 2 and f"{bad}:2: not a CoT record" in result.output
