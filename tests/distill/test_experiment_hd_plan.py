"""The Home Depot chain's plan, without running it: run names carry the score-KD setting, the sweep
is laid out around the chain's setting, and a bad setting is refused."""

from __future__ import annotations

import json

import pytest

from distill.experiments.hd import KD_CHOSEN, Budget, Experiment


def test_kd_students_carry_their_setting_and_the_twin_does_not(tmp_path):
    names = Experiment(tmp_path, Budget.full).student_names(0, "cross2")
    w, t = KD_CHOSEN
    assert names == {
        "label": "cross2-label-s0",
        "mkd": f"cross2-mkd-w{w:g}-t{t:g}-s0",
        "score-kd": f"cross2-score-kd-w{w:g}-t{t:g}-s0",
        "label-warm": "cross2-label-warm-s0",
    }
    other = Experiment(tmp_path, Budget.full, kd=(1.0, 2.0)).student_names(1, "bi6")
    assert other == {"label": "bi6-label-s1", "mkd": "bi6-mkd-w1-t2-s1", "score-kd": "bi6-score-kd-w1-t2-s1"}


def test_the_sweep_moves_one_knob_at_a_time_around_the_chains_setting(tmp_path):
    # Around the trainer's defaults (1, 2) it is the first round's grid, as run on 2026-12-03.
    first = Experiment(tmp_path, Budget.full, kd=(1.0, 2.0), sweep=True).sweep_names("cross2")
    assert list(first) == [(1.0, 2.0), (3.0, 2.0), (1.0, 4.0), (1.0, 1.0), (0.3, 2.0)]
    assert first[(3.0, 2.0)] == "cross2-mkd-w3-t2-s0"
    second = Experiment(tmp_path, Budget.full, kd=(3.0, 2.0), sweep=True).sweep_names("cross2")
    assert list(second) == [(3.0, 2.0), (9.0, 2.0), (3.0, 4.0), (3.0, 1.0), (0.9, 2.0)]
    # The centre is the chain's own MKD student: the sweep reuses it.
    assert second[(3.0, 2.0)] == Experiment(tmp_path, Budget.full).student_names(0, "cross2")["mkd"]


def test_the_kd_setting_reaches_the_training_commands(tmp_path):
    steps = Experiment(tmp_path, Budget.full, seeds=(0,), families=("cross2",), kd=(9.0, 4.0)).steps()
    train = {s.name: s.argv for s in steps if s.name.startswith("train cross2-")}
    for run in ("cross2-mkd-w9-t4-s0", "cross2-score-kd-w9-t4-s0"):
        argv = train[f"train {run}"]
        assert argv[argv.index("--w-score-kd") + 1] == "9" and argv[argv.index("--temperature") + 1] == "4"
    assert "--w-score-kd" not in train["train cross2-label-s0"]


@pytest.mark.parametrize("kd", [(0.0, 2.0), (3.0, -1.0)])
def test_a_setting_that_is_not_positive_is_refused(tmp_path, kd):
    with pytest.raises(ValueError, match="score-KD weight and temperature"):
        Experiment(tmp_path, Budget.full, kd=kd)


def test_other_student_steps_reach_every_student_and_its_name(tmp_path):
    plan_steps = Experiment(tmp_path, Budget.full, student_steps=2000).student_names(0, "cross2")
    assert plan_steps == Experiment(tmp_path, Budget.full).student_names(0, "cross2")  # the plan's: reused
    longer = Experiment(
        tmp_path, Budget.full, seeds=(0,), families=("cross2",), kd=(9.0, 2.0), student_steps=6000
    )
    assert longer.student_names(0, "cross2") == {
        "label": "cross2-label-n6000-s0",
        "mkd": "cross2-mkd-w9-t2-n6000-s0",
        "score-kd": "cross2-score-kd-w9-t2-n6000-s0",
        "label-warm": "cross2-label-warm-n6000-s0",
    }
    train = {s.name: s.argv for s in longer.steps() if s.name.startswith("train ")}
    for name, argv in train.items():
        student = name.startswith("train cross2-")  # the teacher keeps its one epoch
        assert (argv[argv.index("--max-steps") + 1] if "--max-steps" in argv else None) == (
            "6000" if student else None
        )
        # 6,000 steps of 16 pairs are 2.1 epochs of the 45,854 train pairs: the twin needs 3 to get them all.
        assert argv[argv.index("--epochs") + 1] == ("3" if student else "1"), name
    default = {
        s.name: s.argv for s in Experiment(tmp_path, Budget.full).steps() if s.name.startswith("train ")
    }
    assert all(argv[argv.index("--epochs") + 1] == "1" for argv in default.values())


def test_no_student_steps_is_refused(tmp_path):
    with pytest.raises(ValueError, match="optimiser steps must be at least 1"):
        Experiment(tmp_path, Budget.full, student_steps=0)


def test_a_round_with_other_settings_writes_its_own_student_reports(tmp_path):
    assert Experiment(tmp_path, Budget.full).eval_dir("dev", "cross2").name == "eval-dev-cross2"
    other = Experiment(tmp_path, Budget.full, kd=(9.0, 2.0), student_steps=6000)
    assert other.eval_dir("dev", "cross2").name == "eval-dev-cross2-w9-t2-n6000"
    assert other.eval_dir("dev").name == "eval-dev"  # the baselines and teachers do not depend on them


def test_an_eval_report_counts_as_done_only_with_every_system_scored(tmp_path):
    one_seed = Experiment(tmp_path, Budget.full, seeds=(0,), families=("cross2",))
    three = Experiment(tmp_path, Budget.full, seeds=(0, 1, 2), families=("cross2",))
    [step] = [s for s in three.steps() if s.name.endswith("(eval-dev-cross2)")]
    assert step.missing() == [str(step.done)]
    # The report a one-seed round wrote: the same folder, fewer systems.
    [first] = [s for s in one_seed.steps() if s.name.endswith("(eval-dev-cross2)")]
    assert first.done == step.done
    step.done.parent.mkdir(parents=True)
    scored = {f"s{i}": {"info": {"spec": spec}} for i, spec in enumerate(first.systems)}
    step.done.write_text(json.dumps({"sections": {"All queries": {"systems": scored}}}))
    assert first.missing() == []
    assert step.missing() == [s for s in step.systems if s not in first.systems]
    assert any("-s1" in spec for spec in step.missing())


def test_a_round_of_twins_and_full_mkd_trains_and_compares_only_those(tmp_path):
    exp = Experiment(
        tmp_path, Budget.full, seeds=(1, 2), families=("cross2",), kd=(9.0, 2.0), variants=("label", "mkd")
    )
    assert exp.student_names(1, "cross2") == {"label": "cross2-label-s1", "mkd": "cross2-mkd-w9-t2-s1"}
    steps = exp.steps()
    trained = [s.name for s in steps if s.name.startswith("train cross2-")]
    assert trained == [f"train cross2-{v}-s{seed}" for seed in (1, 2) for v in ("label", "mkd-w9-t2")]
    [dev] = [s for s in steps if s.name.endswith("(eval-dev-cross2-w9-t2)")]
    compared = [dev.argv[i + 1] for i, a in enumerate(dev.argv) if a == "--compare"]
    assert compared == [
        f"{exp.spec(f'cross2-mkd-w9-t2-s{s}')},{exp.spec(f'cross2-label-s{s}')}" for s in (1, 2)
    ]
    assert not any("warm-start" in s.name for s in steps)
    assert [s["role"] for s in exp.manifest()["students"]] == ["label-only", "mkd"] * 2


@pytest.mark.parametrize("variants", [("mkd",), ("label", "label"), ("label", "kd")])
def test_variants_without_the_twin_or_unknown_are_refused(tmp_path, variants):
    with pytest.raises(ValueError, match="label among them"):
        Experiment(tmp_path, Budget.full, variants=variants)


def test_the_gap_row_of_a_round_without_score_kd(tmp_path):
    from distill.experiments.hd import _gap_row

    row = _gap_row(0, {"label": 0.6, "score-kd": None, "mkd": 0.72}, 0.75)
    assert row == "| 0 | 0.600 | not trained | 0.720 | 0.750 | 80% | — |"
    assert "not all evaluated" in _gap_row(0, {"label": None, "score-kd": 0.7, "mkd": 0.72}, 0.75)
