"""Two-step training smoke runs of both students with every MKD term on (tiny: 2 layers, a few pairs)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.cot import CoTRecord, DimensionJudgement, EvidenceSpan
from core.grades import GRADE_LEVELS
from core.text_template import DEFAULT_TEMPLATE
from distill.data.bundled import load_bundled
from distill.students.config import LossWeights, TrainConfig, make_tokenizer
from distill.students.data import TeacherReport, TeacherSource, build_examples, merge_teacher
from distill.students.kinds import STUDENT_KINDS
from distill.students.loop import train
from distill.students.predict import predict_scores, student_manifest
from distill.students.run_folder import load_run

# Starts servers, trains or exports models: not part of make test-fast.
pytestmark = pytest.mark.slow


def _teacher_record(
    pair, *, grade: str | None = None, distribution: dict[str, float] | None = None, with_cot: bool = True
) -> CoTRecord:
    """A record as the teacher writes it: evidence = the query's first word, found in the rendered texts."""
    query = DEFAULT_TEMPLATE.query_text(pair.query)
    item_text = DEFAULT_TEMPLATE.item_text(pair.item.as_mapping())
    word = query.split()[0]
    spans = [EvidenceSpan(source="query", text=word, start=0, end=len(word), verified=True)]
    title_word = item_text.split()[0]
    spans.append(EvidenceSpan(source="item", text=title_word, start=0, end=len(title_word), verified=True))
    return CoTRecord(
        teacher_id="test-teacher",
        prompt_version="v1",
        pair_id=pair.pair_id,
        query=query,
        item_id=pair.item.id,
        item_text=item_text,
        grade=grade or pair.label,
        grade_levels=list(GRADE_LEVELS),
        grade_distribution=distribution
        if distribution is not None
        else {"Irrelevant": 0.2, "Partial": 0.3, "Exact": 0.5},
        distribution_source="logits" if distribution != {} else "none",
        dimensions=[DimensionJudgement(dimension="product_type", verdict="match", evidence=spans)]
        if with_cot
        else [],
        label=pair.label,
    )


@pytest.fixture(scope="module")
def data():
    train_pairs = load_bundled("train")[:8]
    dev_pairs = load_bundled("dev")[:6]
    records = [_teacher_record(p) for p in train_pairs[:5]]
    records.append(
        _teacher_record(
            train_pairs[5], grade="Irrelevant" if train_pairs[5].label != "Irrelevant" else "Exact"
        )
    )  # disagrees with the human label
    records.append(_teacher_record(dev_pairs[0]))  # not a training pair
    return train_pairs, dev_pairs, records


def test_teacher_records_are_matched_and_counted(data):
    train_pairs, _, records = data
    report = TeacherReport()
    matched = merge_teacher(train_pairs, [TeacherSource("t.jsonl", "all", records + [records[0]])], report)
    [source] = report.sources
    assert (source.records, source.matched, source.unmatched, source.duplicates) == (8, 6, 1, 1)
    assert (report.with_distribution, report.with_cot) == (6, 6)
    config = TrainConfig(name="t", weights=LossWeights(score_kd=1, cot=1), teacher=["x"], max_tokens=32)
    from distill.students.backbone import tokenizer_file

    examples = build_examples(
        STUDENT_KINDS["cross"],
        train_pairs,
        make_tokenizer(config, tokenizer_file()),
        DEFAULT_TEMPLATE,
        matched,
        report,
    )
    assert sum(ex.teacher_probs is not None for ex in examples) == 6
    assert report.evidence_skipped_disagree == 1  # its distribution is used, its evidence is not
    with_evidence = [ex for ex in examples if ex.pair_evidence is not None]
    assert len(with_evidence) == 5 == report.evidence.records_with_evidence
    for ex in with_evidence:
        assert ex.pair_evidence.sum() == pytest.approx(1.0)


@pytest.mark.parametrize(
    "kind,weights",
    [
        ("cross", LossWeights(hard=1.0, score_kd=0.5, cot=0.5)),
        ("bi", LossWeights(hard=1.0, score_kd=0.5, cot=0.5, verdict=0.5)),
    ],
)
def test_two_step_training_run(tmp_path, data, kind, weights):
    train_pairs, dev_pairs, records = data
    config = TrainConfig(
        name=f"smoke-{kind}",
        kind=kind,
        layers=2,
        max_tokens=32,
        max_query_tokens=16,
        epochs=1,
        max_steps=2,
        batch_size=4,
        weights=weights,
        teacher=["records.jsonl"],
    )
    run_dir = tmp_path / config.name
    result = train(
        config, train_pairs, dev_pairs, run_dir, teacher=[TeacherSource("records.jsonl", "all", records)]
    )

    assert result.history[0]["steps"] == 2
    losses = result.history[0]["train_loss"]
    assert set(losses) == {k for k, v in weights.model_dump().items() if v}
    assert all(np.isfinite(v) and v >= 0 for v in losses.values())
    assert losses["cot"] > 0  # evidence-carrying rows were present and the student does not match them yet
    assert result.teacher["sources"][0]["matched"] == 6
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["best_dev"]["pairs"] == len(dev_pairs)

    # The saved checkpoint reloads to the same dev scores, and training changed the weights.
    model, saved = load_run(run_dir)
    assert saved == config
    from distill.students.backbone import tokenizer_file

    tokenizer = make_tokenizer(config, tokenizer_file())
    examples = build_examples(config.student_kind, dev_pairs, tokenizer, config.template)
    scores = predict_scores(model, student_manifest(model, config), examples, tokenizer.pad_id)
    assert scores.shape == (len(dev_pairs),) and ((scores >= 0) & (scores <= 1)).all()
    fresh = config.student_kind.build(2)
    # The backbone starts from the same pretrained weights every time, so a difference is training's.
    changed = any(
        not torch.equal(a, b)
        for a, b in zip(fresh.bert.state_dict().values(), model.bert.state_dict().values(), strict=True)
    )
    assert changed


def test_config_refuses_kd_without_teacher_and_verdict_on_cross():
    with pytest.raises(ValueError, match="teacher records"):
        TrainConfig(name="x", weights=LossWeights(score_kd=1.0))
    with pytest.raises(ValueError, match="bi students only"):
        TrainConfig(name="x", kind="cross", weights=LossWeights(verdict=1.0), teacher=["t.jsonl"])


def test_train_cli_errors_name_the_problem(tmp_path):
    from typer.testing import CliRunner

    from distill.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["student", "train", "--name", "x", "--w-score-kd", "1"])
    assert (
        result.exit_code == 2
        and "needs teacher records (--teacher or --teacher-scores FILE)" in result.output
    )

    missing = tmp_path / "missing.jsonl"
    result = runner.invoke(
        app, ["student", "train", "--name", "x", "--teacher", str(missing), "--w-score-kd", "1"]
    )
    assert result.exit_code == 2 and f"{missing}: CoT record file not found" in result.output

    bad = tmp_path / "records.jsonl"
    good = _teacher_record(load_bundled("train")[0]).model_dump_json()
    bad.write_text(good + "\n" + '{"teacher_id": "t"}\n', encoding="utf-8")
    result = runner.invoke(
        app,
        [
            "student",
            "train",
            "--name",
            "x",
            "--teacher",
            str(bad),
            "--w-score-kd",
            "1",
            "--runs-dir",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 2 and f"{bad}:2: not a CoT record" in result.output
    assert not (tmp_path / "x").exists()


def test_init_from_starts_a_shallower_student_from_a_runs_bottom_layers_and_head(tmp_path, data):
    from distill.students.backbone import tokenizer_file
    from distill.students.run_folder import init_from_run, save_run

    teacher_config = TrainConfig(name="teacher", kind="cross", layers=3)
    teacher = STUDENT_KINDS["cross"].build(3)
    with torch.no_grad():  # make the run's weights differ from MiniLM's, so a copy is visible
        for p in teacher.parameters():
            p.add_(0.01)
    save_run(tmp_path / "teacher", teacher, teacher_config, tokenizer_file())

    student = STUDENT_KINDS["cross"].build(2)
    init_from_run(student, tmp_path / "teacher", "cross")
    theirs = teacher.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in student.state_dict().items())
    assert student.bert.config.num_hidden_layers == 2

    with pytest.raises(ValueError, match="it has 3 layers, this student asks for 4"):
        init_from_run(STUDENT_KINDS["cross"].build(4), tmp_path / "teacher", "cross")
    with pytest.raises(ValueError, match="a cross run cannot start a bi student"):
        init_from_run(STUDENT_KINDS["bi"].build(2), tmp_path / "teacher", "bi")
    with pytest.raises(FileNotFoundError, match="not a trained student run"):
        init_from_run(student, tmp_path / "nowhere", "cross")

    # Through the training loop: the config records the start, and training moves off it.
    train_pairs, dev_pairs, _ = data
    config = TrainConfig(
        name="warm", layers=2, epochs=1, max_steps=1, batch_size=4, init_from=str(tmp_path / "teacher")
    )
    train(config, train_pairs, dev_pairs, tmp_path / "warm")
    model, saved = load_run(tmp_path / "warm")
    assert saved.init_from == str(tmp_path / "teacher")
    # One step at lr 5e-5 moves a weight by about 5e-5; MiniLM's start is 0.01 away.
    start = theirs["bert.embeddings.word_embeddings.weight"]
    assert (model.bert.embeddings.word_embeddings.weight - start).abs().max() < 1e-3
