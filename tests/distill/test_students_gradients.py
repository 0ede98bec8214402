"""`relevance student gradients`: per-term gradient cosines of a run (distill/students/gradients.py).

The check that pins the arithmetic: where the teacher's distribution is the human label's one-hot and
T = 1, score KD is the hard-label cross-entropy minus a constant, so their gradients are the same
vector (cosine 1) on every batch. The CoT term has its own direction (not asserted beyond range)."""

from __future__ import annotations

import math

import pytest

from core.cot import CoTRecord, DimensionJudgement, EvidenceSpan
from core.grades import GRADE_LEVELS
from core.text_template import DEFAULT_TEMPLATE
from distill.data.bundled import load_bundled
from distill.students.config import LossWeights, TrainConfig
from distill.students.data import TeacherSource
from distill.students.gradients import format_report, term_gradients
from distill.students.loop import train

# Trains a model: not part of make test-fast.
pytestmark = pytest.mark.slow


def _one_hot_record(pair) -> CoTRecord:
    query = DEFAULT_TEMPLATE.query_text(pair.query)
    item_text = DEFAULT_TEMPLATE.item_text(pair.item.as_mapping())
    word = query.split()[0]
    return CoTRecord(
        teacher_id="test-teacher", prompt_version="v1", pair_id=pair.pair_id, query=query,
        item_id=pair.item.id, item_text=item_text, grade=pair.label, grade_levels=list(GRADE_LEVELS),
        grade_distribution={g: float(g == pair.label) for g in GRADE_LEVELS}, distribution_source="logits",
        dimensions=[DimensionJudgement(dimension="product_type", verdict="match", evidence=[
            EvidenceSpan(source="query", text=word, start=0, end=len(word), verified=True)])],
        label=pair.label,
    )  # fmt: skip


@pytest.fixture(scope="module")
def mkd_run(tmp_path_factory):
    pairs = load_bundled("train")[:16]
    sources = [TeacherSource("records.jsonl", "all", [_one_hot_record(p) for p in pairs])]
    config = TrainConfig(
        name="mkd", kind="cross", layers=2, max_tokens=32, epochs=1, max_steps=2, batch_size=4,
        temperature=1.0, weights=LossWeights(hard=1.0, score_kd=3.0, cot=0.5), teacher=["records.jsonl"],
    )  # fmt: skip
    run_dir = tmp_path_factory.mktemp("runs") / config.name
    train(config, pairs, load_bundled("dev")[:6], run_dir, teacher=sources)
    return run_dir, pairs, sources


@pytest.mark.parametrize("at", ["start", "trained"])
def test_score_kd_on_one_hot_targets_points_where_the_hard_label_does(mkd_run, at):
    run_dir, pairs, sources = mkd_run
    report = term_gradients(run_dir, pairs, sources, at=at, batches=3, seed=1)
    assert (report.batches, report.batch_size) == (3, 4)
    assert report.weights == {"hard": 1.0, "score_kd": 3.0, "cot": 0.5}
    cosines = {c.terms: c for c in report.cosines}
    assert set(cosines) == {("hard", "score_kd"), ("hard", "cot"), ("score_kd", "cot")}
    same = cosines[("hard", "score_kd")]
    assert same.mean == pytest.approx(1.0, abs=1e-4) and same.batches == 3 and same.negative_share == 0
    # Same direction, three times the weight: the norms say so too.
    assert report.norms["score_kd"] == pytest.approx(3 * report.norms["hard"], rel=1e-3)
    cot = cosines[("score_kd", "cot")]
    assert -1 <= cot.ci[0] <= cot.mean <= cot.ci[1] <= 1 and math.isfinite(report.norms["cot"])
    assert "score_kd · cot" in format_report(report)


def test_a_run_with_one_term_has_nothing_to_compare(tmp_path):
    pairs = load_bundled("train")[:8]
    config = TrainConfig(name="label", layers=1, max_tokens=32, epochs=1, max_steps=1, batch_size=4)
    train(config, pairs, load_bundled("dev")[:6], tmp_path / "label")
    with pytest.raises(ValueError, match="one loss term \\(hard\\): nothing to compare"):
        term_gradients(tmp_path / "label", pairs, [], at="start", batches=2)
