"""`relevance experiment hd --budget smoke`: the whole Home Depot chain on the bundled split in a few
steps, so the recipe cannot rot; a rerun skips every step."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.bundle import read_manifest
from core.cot import grade_distribution, read_records
from core.grades import GRADE_LEVELS
from distill.experiments.hd import KD_CHOSEN, Budget, Experiment
from service.settings import DEFAULT_BUNDLE

# Trains four students and scores them: not part of make test-fast.
pytestmark = pytest.mark.slow


@pytest.mark.timeout(1200)  # about 4 min on a quiet 2-core machine; twice that beside a training run
def test_the_smoke_chain_writes_bundles_records_a_report_and_experiment_json_and_resumes(tmp_path):
    if not (DEFAULT_BUNDLE / "bundle.json").is_file():
        pytest.skip(f"{DEFAULT_BUNDLE} not built (make test builds it first)")
    relevance = str(Path(sys.executable).with_name("relevance"))
    command = [relevance, "experiment", "hd", "--budget", "smoke", "--root", str(tmp_path)]
    first = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]

    report = tmp_path / "reports" / "experiments" / "hd-smoke"
    manifest = json.loads((report / "experiment.json").read_text())
    assert {s["role"] for s in manifest["students"]} == {"label-only", "mkd"}
    assert {(s["kind"], s["role"]) for s in manifest["students"]} == {
        (k, r) for k in ("cross", "bi") for r in ("label-only", "mkd")
    }
    for student in manifest["students"] + manifest["ablations"]:
        assert read_manifest(student["path"]).kind == student["kind"]
        assert Path(student["path"]).name.startswith("hd-smoke-")
        if student["role"] != "label-only":
            family = "cross2" if student["kind"] == "cross" else "bi6"
            assert Path(student["twin"]).name == f"hd-smoke-{family}-label-s{student['seed']}"
    assert {(s["kind"], s["role"]) for s in manifest["ablations"]} == {
        ("cross", "score-kd"),
        ("cross", "label-warm"),
        ("bi", "score-kd"),
    }
    # The cross KD students and the ablation start from the teacher's run; the twin from MiniLM. No bi
    # student is warm-started: all start from all-MiniLM-L6-v2, the zero-shot default's weights.
    for name, warm in (("cross2-label-s0", False), ("cross2-mkd-w3-t2-s0", True), ("cross2-label-warm-s0", True),
                       ("bi6-label-s0", False), ("bi6-mkd-w3-t2-s0", False)):  # fmt: skip
        config = json.loads((tmp_path / "runs" / "hd-smoke" / name / "config.json").read_text())
        assert (config["init_from"] == str(tmp_path / "runs" / "hd-smoke" / "teacher-cross6")) is warm, name
        assert config["kind"] == ("bi" if name.startswith("bi6") else "cross"), name
    # The shipped teacher is rung (c), the ensemble over rung (a) (a cross bundle) and the cheap judges.
    teacher = manifest["teacher"]["spec"]
    assert teacher == f"ensemble:{tmp_path / 'models' / 'teachers' / 'hd-smoke-ensemble'}"
    rung_a = manifest["teacher"]["rungs"]["a"]
    assert read_manifest(rung_a.removeprefix("bundle:")).kind == "cross"
    records, _ = read_records(tmp_path / "runs" / "hd-smoke" / "teacher-c.jsonl")
    assert records and all(grade_distribution(r, GRADE_LEVELS) is not None for r in records)
    assert all(r.dimensions for r in records)  # the rule CoT travels in the ensemble's records
    assert sum(r.label is None for r in records) > 0  # the transfer pairs were labelled by the teacher
    systems = json.loads((report / "eval-dev" / "metrics.json").read_text())["sections"]["All queries"][
        "systems"
    ]
    assert {
        "bundle:minilm-zero-shot-bi",
        "bm25",
        "bundle:hd-smoke-teacher-cross6",
        "ensemble:hd-smoke-ensemble",
    } <= set(systems)
    students = json.loads((report / "eval-dev-bi6" / "metrics.json").read_text())["sections"]["All queries"]
    assert {"bundle:minilm-zero-shot-bi", "bundle:hd-smoke-bi6-mkd-w3-t2-s0"} <= set(students["systems"])
    summary = (report / "summary.md").read_text()
    assert "| bundle:hd-smoke-cross2-mkd-w3-t2-s0 − bundle:hd-smoke-cross2-label-s0 | " in summary
    assert "| bundle:hd-smoke-bi6-mkd-w3-t2-s0 − bundle:minilm-zero-shot-bi | " in summary
    # A gap table per family, on all dev queries and the long-tail slice.
    assert summary.count("gap closed by MKD") == 4 and "| 0 | not all evaluated" not in summary
    ablation = json.loads((report / "eval-dev-warm-start-cross2" / "metrics.json").read_text())
    assert "bundle:hd-smoke-cross2-label-warm-s0" in ablation["sections"]["All queries"]["systems"]

    again = subprocess.run(command, capture_output=True, text=True, timeout=120)
    # Every step with an output marker is skipped; the transfer set checks its own options.
    markers = sum(step.done is not None for step in Experiment(tmp_path, Budget.smoke).steps())
    assert markers == 24
    assert (
        again.returncode == 0
        and again.stdout.count("already there") == markers
        and "already built with these options" in again.stdout
    ), again.stdout

    # The KD weight/temperature sweep on the same root: the prefix and the centre (the chain's own MKD
    # student) are reused, the four other settings trained and evaluated against it.
    sweep = subprocess.run([*command, "--sweep", "--students", "cross2"], capture_output=True, text=True,
                           timeout=900)  # fmt: skip
    assert sweep.returncode == 0, sweep.stdout[-3000:] + sweep.stderr[-3000:]
    assert "train cross2-mkd-w3-t2-s0: already there" in sweep.stdout
    experiment = Experiment(tmp_path, Budget.smoke, families=("cross2",), sweep=True)
    settings = experiment.sweep_names("cross2")
    assert len(settings) == 5 and settings[KD_CHOSEN] == "cross2-mkd-w3-t2-s0"
    for (weight, temperature), run in settings.items():
        config = json.loads((tmp_path / "runs" / "hd-smoke" / run / "config.json").read_text())
        assert (config["weights"]["score_kd"], config["temperature"]) == (weight, temperature), run
        assert config["weights"]["cot"] == 0.5 and config["teacher_cot"], run
    table = (report / "sweep.md").read_text()
    assert table.count("\n| ") == 6 and "not evaluated" not in table, table  # header + 5 settings
    assert "| 3 | 2 | " in table and "| 0.9 | 2 | " in table and "| 9 | 2 | " in table and "centre" in table
