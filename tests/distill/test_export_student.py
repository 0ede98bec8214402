"""Export of students to bundles: parity checks pass on a faithful export and refuse a broken one."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import distill.export.student as export_module
from core.bundle import read_manifest
from distill.data.bundled import load_bundled
from distill.export.checks import ExportCheckError, check_reduced
from distill.export.student import export_student
from distill.students.backbone import tokenizer_file
from distill.students.config import TrainConfig
from distill.students.run_folder import save_run

# Starts servers, trains or exports models: not part of make test-fast.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dev_pairs():
    return load_bundled("dev")[:12]


def _run(tmp_path, kind: str):
    """An untrained 2-layer student saved as a training run (export does not care how it was trained)."""
    import torch

    torch.manual_seed(0)
    config = TrainConfig(name=f"tiny-{kind}", kind=kind, layers=2, max_tokens=32, max_query_tokens=16)
    model = config.student_kind.build(2)
    run_dir = tmp_path / "runs" / config.name
    save_run(run_dir, model, config, tokenizer_file())
    return run_dir


@pytest.mark.parametrize("kind", ["cross", "bi"])
def test_fp32_export_writes_a_checked_bundle(tmp_path, dev_pairs, kind):
    out = tmp_path / "bundle"
    manifest = export_student(_run(tmp_path, kind), out, dev_pairs, precision="fp32")
    assert read_manifest(out) == manifest
    assert manifest.kind == kind and manifest.provenance.precision == "fp32"
    checks = manifest.metrics["export_checks"]
    assert checks["fp32_max_abs_diff_vs_pytorch"] <= 1e-4
    assert manifest.metrics["dev"]["pairs"] == len(dev_pairs)
    if kind == "bi":
        assert manifest.score.method == "cosine_grade_head" and manifest.embedding_dim == 384

    # The service's scoring path (Scorer: template → tokeniser → batcher → ONNX → mapping) gives the
    # PyTorch student's scores.
    from distill.baselines.bundle import score_bundle
    from distill.students.config import make_tokenizer
    from distill.students.data import build_examples
    from distill.students.predict import predict_scores
    from distill.students.run_folder import load_run

    model, config = load_run(tmp_path / "runs" / f"tiny-{kind}")
    tokenizer = make_tokenizer(config, tokenizer_file())
    expected = predict_scores(
        model,
        manifest,
        build_examples(config.student_kind, dev_pairs, tokenizer, config.template),
        tokenizer.pad_id,
    )
    served, _, _ = score_bundle(out, dev_pairs)
    assert np.max(np.abs(served - expected)) <= 1e-4


def test_fp16_export_passes_rank_checks(tmp_path, dev_pairs):
    out = tmp_path / "fp16"
    manifest = export_student(_run(tmp_path, "cross"), out, dev_pairs, precision="fp16")
    checks = manifest.metrics["export_checks"]
    assert manifest.provenance.precision == "fp16" and read_manifest(out).provenance.precision == "fp16"
    assert checks["fp16_spearman_vs_fp32"] >= 0.99 and checks["fp16_ndcg@10_drop_vs_fp32"] <= 0.005


def test_int8_export_refused_when_quantisation_reorders_scores(tmp_path, dev_pairs):
    # An untrained head gives all but constant scores (spread ~1e-7), so int8 weight noise reorders
    # them: the export must refuse, say by how much, and write nothing.
    out = tmp_path / "int8"
    with pytest.raises(
        ExportCheckError, match=r"int8 export refused: Spearman vs fp32 is -?[0-9.]+, below 0.99 by"
    ):
        export_student(_run(tmp_path, "cross"), out, dev_pairs, precision="int8")
    assert not out.exists()


def test_broken_export_is_refused_with_the_measured_difference(tmp_path, dev_pairs, monkeypatch):
    real_export = export_module.export_bert_onnx

    def export_then_perturb(module, out_path, kind, **kw):
        real_export(module, out_path, kind, **kw)
        model = onnx.load(str(out_path))
        target = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))  # the biggest weight
        weights = numpy_helper.to_array(target).copy()
        weights += np.random.default_rng(0).normal(0, 0.05, weights.shape).astype(weights.dtype)
        target.CopyFrom(numpy_helper.from_array(weights, target.name))
        onnx.save(model, str(out_path))
        return out_path

    monkeypatch.setattr(export_module, "export_bert_onnx", export_then_perturb)
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "keep.txt").write_text("previous bundle")
    with pytest.raises(
        ExportCheckError, match=r"fp32 export refused: max \|ONNX − PyTorch\| .* is ([0-9.e-]+)"
    ):
        export_student(_run(tmp_path, "cross"), out, dev_pairs, precision="fp32")
    assert (out / "keep.txt").read_text() == "previous bundle"  # the old bundle is untouched
    assert not (out / "bundle.json").exists()


def test_reduced_precision_check_reports_each_failure_and_margin():
    fp32 = np.linspace(0, 1, 20)
    assert check_reduced("int8", fp32, fp32 + 1e-4, 0.8, 0.799)["int8_spearman_vs_fp32"] == pytest.approx(1.0)
    shuffled = np.random.default_rng(0).permutation(fp32)
    with pytest.raises(ExportCheckError) as info:
        check_reduced("fp16", fp32, shuffled, 0.80, 0.70)
    message = str(info.value)
    assert "fp16 export refused" in message
    assert "below 0.99 by" in message
    assert "drops by 0.1000 (0.8000 → 0.7000), above the limit 0.005 by 0.0950" in message


def test_exporting_to_the_served_folder_promotes_only_a_better_bundle(tmp_path, monkeypatch):
    """An untrained cross student is worse than the zero-shot default on bundled:dev: exporting it to
    models/student (what `make serve` would then serve) is refused with both sets of numbers, and
    nothing is written; --force writes it; an export to any other folder is not gated."""
    from pathlib import Path

    from typer.testing import CliRunner

    from distill.cli import app
    from service.settings import DEFAULT_BUNDLE

    default = Path.cwd() / DEFAULT_BUNDLE
    if not (default / "bundle.json").is_file():
        pytest.skip(f"{DEFAULT_BUNDLE} not built (make test builds it first)")
    run = _run(tmp_path, "cross")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / DEFAULT_BUNDLE).symlink_to(default)
    export = ["student", "export", str(run), "--precision", "fp32"]

    refused = CliRunner().invoke(app, [*export, "--out", "models/student"])
    assert refused.exit_code == 1, refused.output
    assert "not promoted to models/student: on bundled:dev" in refused.output
    assert (
        f"served {DEFAULT_BUNDLE}" in refused.output and "auc " in refused.output and " vs " in refused.output
    )
    assert not (tmp_path / "models" / "student").exists()

    elsewhere = CliRunner().invoke(app, [*export, "--out", "models/candidate"])
    assert elsewhere.exit_code == 0, elsewhere.output

    forced = CliRunner().invoke(app, [*export, "--out", "models/student", "--force"])
    assert forced.exit_code == 0, forced.output
    assert read_manifest(tmp_path / "models" / "student").kind == "cross"
    # The same student again is not better than itself: refused, and the served one is kept.
    again = CliRunner().invoke(app, [*export, "--out", "models/student"])
    assert again.exit_code == 1 and "served models/student" in again.output


def test_reduce_makes_a_checked_int8_copy_of_the_default_and_refuses_the_served_folder(tmp_path):
    """`relevance student reduce`: the zero-shot default (no training run) in int8, through the same
    parity gates as an export; the served folder and a non-fp32 source are refused by name."""
    from pathlib import Path

    from typer.testing import CliRunner

    from distill.cli import app
    from service.settings import DEFAULT_BUNDLE

    if not (DEFAULT_BUNDLE / "bundle.json").is_file():
        pytest.skip(f"{DEFAULT_BUNDLE} not built (make test builds it first)")
    out = tmp_path / "default-int8"
    done = CliRunner().invoke(app, ["student", "reduce", str(DEFAULT_BUNDLE), "--out", str(out)])
    assert done.exit_code == 0, done.output
    manifest, source = read_manifest(out), read_manifest(DEFAULT_BUNDLE)
    assert manifest.provenance.precision == "int8" and manifest.kind == source.kind == "bi"
    checks = manifest.metrics["export_checks"]
    assert checks["int8_spearman_vs_fp32"] > 0.9 and "int8_ndcg@10_drop_vs_fp32" in checks
    assert (out / "model.onnx").stat().st_size < (Path(DEFAULT_BUNDLE) / "model.onnx").stat().st_size / 2

    again = CliRunner().invoke(app, ["student", "reduce", str(out), "--out", str(tmp_path / "twice")])
    assert again.exit_code != 0 and "provenance.precision is 'int8'" in again.output
    assert not (tmp_path / "twice").exists()
    served = CliRunner().invoke(app, ["student", "reduce", str(DEFAULT_BUNDLE), "--out", "models/student"])
    assert served.exit_code != 0 and "is the served folder" in served.output
