"""`relevance eval run` end to end on a tiny generated set: BM25 and teacher annotations → report files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.cot import CoTRecord
from core.grades import GRADE_LEVELS
from core.text_template import DEFAULT_TEMPLATE
from distill.cli import app
from distill.data.loaders import load_pairs

# Starts servers, trains or exports models: not part of make test-fast.
pytestmark = pytest.mark.slow

COLOURS = ["red", "blue", "green", "black", "white", "grey", "pink", "brown"]
THINGS = ["sofa", "lamp", "rug", "chair", "table", "desk", "bed", "shelf"]


def _write_set(path: Path) -> None:
    rows = []
    for c in COLOURS:
        for t in THINGS:
            # Words no item has: long-tail queries, and the negation slice too.
            q = f"{c} {t}" + (" handmade not vintage" if c == "brown" else "")
            other_c = COLOURS[(COLOURS.index(c) + 1) % len(COLOURS)]
            other_t = THINGS[(THINGS.index(t) + 1) % len(THINGS)]
            rows += [
                {"query": q, "item_id": f"{c}-{t}", "title": f"{c.title()} {t} deluxe", "label": "Exact"},
                {
                    "query": q,
                    "item_id": f"{other_c}-{t}",
                    "title": f"{other_c.title()} {t} deluxe",
                    "label": "Partial",
                },
                {
                    "query": q,
                    "item_id": f"{other_c}-{other_t}",
                    "title": f"{other_c.title()} {other_t} deluxe",
                    "label": "Irrelevant",
                },
            ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")


def _write_annotations(data: Path, path: Path, skip: int) -> None:
    """A teacher whose grade distributions put 0.8 on the human label (one pair left unannotated)."""
    lines = []
    for n, pair in enumerate(load_pairs(data).pairs):
        if n == skip:
            continue
        dist = {g: (0.8 if g == pair.label else 0.1) for g in GRADE_LEVELS}
        record = CoTRecord(
            teacher_id="test",
            prompt_version="v1",
            pair_id=pair.pair_id,
            query=pair.query,
            item_id=pair.item.id,
            item_text=DEFAULT_TEMPLATE.item_text(pair.item.as_mapping()),
            grade=pair.label,
            grade_levels=list(GRADE_LEVELS),
            grade_distribution=dist,
            distribution_source="logits",
        )
        lines.append(record.model_dump_json())
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_eval_writes_report_folder(tmp_path):
    data, ann, out = tmp_path / "pairs.jsonl", tmp_path / "teacher.jsonl", tmp_path / "report"
    _write_set(data)
    _write_annotations(data, ann, skip=0)
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "run",
            "--data",
            str(data),
            "--split",
            "all",
            "--system",
            "bm25",
            "--system",
            f"annotations:{ann}",
            "--out",
            str(out),
            "--slice",
            "long-tail",
            "--slice",
            "negation",
            "--resamples",
            "50",
        ],
    )
    assert result.exit_code == 0, result.output
    for name in ("metrics.json", "report.md", "per_query_ndcg10.png", "calibration.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"]["pairs_dropped_unscored"] == 1
    assert metrics["data"]["unscored_per_system"] == {"bm25": 0, "annotations:teacher": 1}
    section = metrics["sections"]["All queries"]
    assert section["pairs"] == 3 * 64 - 1 and section["queries"] == 64
    teacher = section["systems"]["annotations:teacher"]
    assert teacher["info"]["records"] == 3 * 64 - 1
    # The teacher's distributions encode the labels: perfect ranking and grades.
    assert teacher["metrics"]["auc_relevant"]["value"] == pytest.approx(1.0)
    assert teacher["metrics"]["macro_f1"]["value"] == pytest.approx(1.0)
    assert teacher["metrics"]["ndcg@10"]["value"] == pytest.approx(1.0)
    bm25 = section["systems"]["bm25"]["metrics"]
    assert 0.5 < bm25["auc_relevant"]["value"] <= 1.0  # the exact item shares both words with the query
    assert bm25["macro_f1"]["value"] is None  # scores only and no calibration split with --split all
    assert section["comparisons"][0]["a"] == "annotations:teacher"
    assert metrics["sections"]["Long-tail queries"]["queries"] == len(THINGS)
    assert metrics["sections"]["Negation queries"]["queries"] == len(THINGS)
    report = (out / "report.md").read_text()
    assert "| system | NDCG@10 | NDCG@all | MAP |" in report and "![calibration](calibration.png)" in report


def test_eval_dev_split_calibrates_score_only_systems(tmp_path):
    data, out = tmp_path / "pairs.jsonl", tmp_path / "report"
    _write_set(data)
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "run",
            "--data",
            str(data),
            "--split",
            "dev",
            "--system",
            "bm25",
            "--out",
            str(out),
            "--resamples",
            "20",
        ],
    )
    assert result.exit_code == 0, result.output
    bm25 = json.loads((out / "metrics.json").read_text())["sections"]["All queries"]["systems"]["bm25"]
    assert "calibration pairs" in bm25["predictions"]
    assert bm25["metrics"]["macro_f1"]["value"] is not None and bm25["metrics"]["ece"]["value"] is not None


def test_eval_reports_bad_input_clearly(tmp_path):
    runner = CliRunner()
    missing = runner.invoke(
        app,
        [
            "eval",
            "run",
            "--data",
            str(tmp_path / "nope.jsonl"),
            "--system",
            "bm25",
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert missing.exit_code == 2 and "nope.jsonl: no such file or folder" in missing.output
    data = tmp_path / "pairs.jsonl"
    _write_set(data)
    bad = runner.invoke(
        app, ["eval", "run", "--data", str(data), "--system", "magic", "--out", str(tmp_path / "r")]
    )
    assert bad.exit_code == 2 and "system 'magic' is not one of" in bad.output
    unlabelled = tmp_path / "unlabelled.jsonl"
    unlabelled.write_text('{"query": "sofa", "item_id": "1", "title": "Sofa"}\n', encoding="utf-8")
    nolabel = runner.invoke(
        app, ["eval", "run", "--data", str(unlabelled), "--system", "bm25", "--out", str(tmp_path / "r")]
    )
    assert nolabel.exit_code == 2 and "1 pairs have no label (e.g. generic:" in nolabel.output


def test_eval_scores_the_default_bundle_through_the_service_scorer(tmp_path):
    bundle = Path(__file__).resolve().parents[2] / "models" / "minilm-zero-shot-bi"
    if not (bundle / "bundle.json").is_file():
        pytest.skip(f"{bundle} not built (make test builds it with `relevance student build-default`)")
    data, out = tmp_path / "pairs.jsonl", tmp_path / "report"
    _write_set(data)
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "run",
            "--data",
            str(data),
            "--split",
            "all",
            "--system",
            "bm25",
            "--system",
            f"bundle:{bundle}",
            "--out",
            str(out),
            "--resamples",
            "20",
        ],
    )
    assert result.exit_code == 0, result.output
    systems = json.loads((out / "metrics.json").read_text())["sections"]["All queries"]["systems"]
    minilm = systems["bundle:minilm-zero-shot-bi"]
    assert minilm["info"]["kind"] == "bi"
    assert minilm["metrics"]["auc_exact"]["value"] > 0.6  # colour + thing match is easy for MiniLM


def _report(folder: Path, diffs: dict[str, tuple[float, float, float]]) -> Path:
    from distill.eval.report import METRICS

    metrics = {
        m: {"diff": diffs.get(m, (0.0, -0.1, 0.1))[0], "ci95": list(diffs.get(m, (0.0, -0.1, 0.1))[1:])}
        for m in METRICS
    }
    section = {"comparisons": [{"a": "bundle:kd", "b": "bundle:label", "metrics": metrics}]}
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps({"sections": {"All queries": section}}))
    return folder


def test_eval_seeds_averages_paired_differences_and_counts_significant_ones(tmp_path):
    a = _report(tmp_path / "s1", {"auc_exact": (0.04, 0.01, 0.07)})
    b = _report(tmp_path / "s2", {"auc_exact": (-0.02, -0.05, 0.01)})
    c = _report(tmp_path / "s3", {"auc_exact": (0.01, -0.02, 0.04)})
    result = CliRunner().invoke(app, ["eval", "seeds", str(a), str(b), str(c)])
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.startswith("| bundle:kd − bundle:label"))
    assert "+0.010 (-0.020…+0.040; ↑1 ↓0)" in row  # mean of +0.04, −0.02, +0.01; only s1's CI is above 0
    missing = CliRunner().invoke(app, ["eval", "seeds", str(a), "--section", "Negation queries"])
    assert missing.exit_code == 2 and "has no section 'Negation queries'" in missing.output


def test_systems_with_the_same_file_name_keep_apart(tmp_path):
    data, out = tmp_path / "pairs.jsonl", tmp_path / "report"
    _write_set(data)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _write_annotations(data, tmp_path / "a" / "oof.jsonl", skip=0)
    _write_annotations(data, tmp_path / "b" / "oof.jsonl", skip=1)
    specs = [f"annotations:{tmp_path / 'a' / 'oof.jsonl'}", f"annotations:{tmp_path / 'b' / 'oof.jsonl'}"]
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "run",
            "--data",
            str(data),
            "--split",
            "all",
            "--system",
            specs[0],
            "--system",
            specs[1],
            "--system",
            "bm25",
            "--out",
            str(out),
            "--resamples",
            "20",
        ],
    )
    assert result.exit_code == 0, result.output
    systems = json.loads((out / "metrics.json").read_text())["sections"]["All queries"]["systems"]
    assert list(systems) == [*specs, "bm25"]


def test_an_unreadable_annotation_line_fails_the_run_naming_file_and_line(tmp_path: Path) -> None:
    data, ann = tmp_path / "pairs.jsonl", tmp_path / "teacher.jsonl"
    _write_set(data)
    _write_annotations(data, ann, skip=0)
    with ann.open("a", encoding="utf-8") as f:
        f.write("not json\n")
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "run",
            "--data",
            str(data),
            "--split",
            "all",
            "--system",
            "bm25",
            "--system",
            f"annotations:{ann}",
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code != 0
    assert f"{ann}:{3 * 64}: not a CoT record" in result.output


def test_compare_adds_paired_differences_between_any_two_systems(tmp_path):
    data, a, b = tmp_path / "pairs.jsonl", tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    _write_set(data)
    _write_annotations(data, a, skip=0)
    _write_annotations(data, b, skip=1)
    args = [
        "eval",
        "run",
        "--data",
        str(data),
        "--split",
        "all",
        "--resamples",
        "20",
        "--out",
        str(tmp_path / "r"),
    ]
    args += ["--system", "bm25", "--system", f"annotations:{a}", "--system", f"annotations:{b}"]
    # The second --compare is also a later-vs-first pair: reported once.
    result = CliRunner().invoke(
        app, [*args, "--compare", f"annotations:{b},annotations:{a}", "--compare", f"annotations:{a},bm25"]
    )
    assert result.exit_code == 0, result.output
    comparisons = json.loads((tmp_path / "r" / "metrics.json").read_text())["sections"]["All queries"][
        "comparisons"
    ]
    assert [(c["a"], c["b"]) for c in comparisons] == [
        ("annotations:a", "bm25"),
        ("annotations:b", "bm25"),
        ("annotations:b", "annotations:a"),
    ]
    # Both teachers put 0.8 on every label: on the pairs both scored, the difference is 0.
    assert comparisons[2]["metrics"]["ndcg@10"]["diff"] == pytest.approx(0.0)

    typo = CliRunner().invoke(app, [*args, "--compare", "annotations:c,bm25"])
    assert (
        typo.exit_code == 2
        and "--compare names ['annotations:c'], which are not --system specs" in typo.output
    )
    malformed = CliRunner().invoke(app, [*args, "--compare", "bm25"])
    assert malformed.exit_code == 2 and "'bm25' is not 'A,B'" in malformed.output
