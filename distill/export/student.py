"""A trained student (runs/<name>/) → a model bundle in fp32, int8 or fp16 ONNX.

The fp32 ONNX model is always built first and checked against PyTorch; int8 (dynamic, per-channel
QInt8 weights) and fp16 (float16 weights, float32 inputs/outputs) are derived from it and checked
against it (distill/export/checks.py). A bundle that fails a check is not written.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from collections.abc import Callable, Sequence
from enum import StrEnum
from pathlib import Path

from core.bundle import MODEL_FILE, TOKENIZER_FILE, BundleManifest, Provenance, read_manifest, write_manifest
from distill.data.schema import LabelledPair
from distill.export.checks import bundle_scores, check_fp32, check_reduced
from distill.export.onnx_bert import export_bert_onnx, quantize_int8


class Precision(StrEnum):
    """The bundle's weights: fp32, or derived from fp32 and checked against it."""

    fp32 = "fp32"
    int8 = "int8"  # dynamic, per-channel QInt8
    fp16 = "fp16"  # float16 weights, float32 inputs and outputs


def _provenance(model, config, precision: str, created_by: str) -> Provenance:
    from distill.students.backbone import BACKBONE_NAME

    return Provenance(
        base_model=f"{BACKBONE_NAME} (first {model.bert.config.num_hidden_layers} layers)",
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        created_by=created_by,
        train_data=config.train_data,
        teacher=", ".join(f"{path} ({use})" for path, use in config.teacher_files()),
        precision=precision,
        run=config.name,
        losses=config.weights.model_dump(),
        temperature=config.temperature,
        layers=config.layers,
        epochs=config.epochs,
        seed=config.seed,
    )


def _reduce(precision: str, fp32_path: Path, out_path: Path) -> None:
    if precision == "int8":
        quantize_int8(fp32_path, out_path)
    else:
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        onnx.save(convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=True), str(out_path))


def _derive_checked(
    precision: str,
    fp32_dir: Path,
    bundle_dir: Path,
    manifest: BundleManifest,
    dev_pairs: Sequence[LabelledPair],
    fp32_scores,
) -> tuple[dict, dict[str, float]]:
    """Derive the int8/fp16 bundle of the fp32 bundle in ``fp32_dir`` into ``bundle_dir`` and run the
    reduced-precision gates against the fp32 scores; (its dev metrics, the check figures), or
    ExportCheckError."""
    from distill.students.predict import ranking_metrics

    bundle_dir.mkdir(parents=True)
    _reduce(precision, fp32_dir / MODEL_FILE, bundle_dir / MODEL_FILE)
    shutil.copyfile(fp32_dir / TOKENIZER_FILE, bundle_dir / TOKENIZER_FILE)
    write_manifest(bundle_dir, manifest)  # a whole bundle, so the checks score it with the service's Scorer
    scores = bundle_scores(bundle_dir, dev_pairs)
    dev = ranking_metrics(dev_pairs, scores)
    fp32_ndcg = ranking_metrics(dev_pairs, fp32_scores)["ndcg@10"]
    return dev, check_reduced(precision, fp32_scores, scores, fp32_ndcg, dev["ndcg@10"])


def reduce_bundle(
    fp32_bundle: str | Path,
    out_dir: str | Path,
    dev_pairs: Sequence[LabelledPair],
    *,
    precision: Precision = Precision.fp16,
    created_by: str = "reduce_bundle",
) -> BundleManifest:
    """An int8/fp16 copy of an existing fp32 bundle (e.g. the zero-shot default, which has no training
    run), checked against it with the same gates as ``export_student``; nothing is written if a check fails."""
    if precision not in (Precision.int8, Precision.fp16):
        raise ValueError(f"precision must be int8 or fp16, not {precision!r}")
    fp32_bundle, out_dir = Path(fp32_bundle), Path(out_dir)
    source = read_manifest(fp32_bundle)
    if source.provenance.precision != "fp32":
        raise ValueError(
            f"{fp32_bundle}/bundle.json: provenance.precision is {source.provenance.precision!r}; "
            "only an fp32 bundle can be reduced"
        )
    if not any(p.label for p in dev_pairs):
        raise ValueError("export checks need labelled dev pairs")
    manifest = source.model_copy(deep=True)
    manifest.provenance.precision = precision
    manifest.provenance.created_by = created_by
    manifest.provenance.created_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    fp32_scores = bundle_scores(fp32_bundle, dev_pairs)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}-") as tmp:
        staged = Path(tmp) / "bundle"
        dev, checks = _derive_checked(precision, fp32_bundle, staged, manifest, dev_pairs, fp32_scores)
        manifest.metrics = {
            **source.metrics,
            "dev": dev,
            "export_checks": {**source.metrics.get("export_checks", {}), **checks},
        }
        write_manifest(staged, manifest)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staged.rename(out_dir)
    return read_manifest(out_dir)  # as written: with the files' checksums


def export_student(
    run_dir: str | Path,
    out_dir: str | Path,
    dev_pairs: Sequence[LabelledPair],
    *,
    precision: Precision = Precision.int8,
    name: str | None = None,
    version: str | None = None,
    created_by: str = "relevance student export",
    accept: Callable[[Path], dict] | None = None,
) -> BundleManifest:
    """Export, check and write the bundle; raises ExportCheckError (nothing written) when a check fails.

    ``accept``, when given, is called with the checked bundle's folder before ``out_dir`` is touched:
    it raises to refuse the bundle (the promotion gate, distill/export/promotion.py), or returns
    figures recorded in bundle.json under ``metrics.promotion``."""
    import torch

    from distill.students import run_folder
    from distill.students.config import make_tokenizer
    from distill.students.data import build_examples
    from distill.students.predict import predict_scores, ranking_metrics, student_manifest

    if precision not in tuple(Precision):
        raise ValueError(f"precision must be one of {', '.join(Precision)}, not {precision!r}")
    if not any(p.label for p in dev_pairs):
        raise ValueError("export checks need labelled dev pairs")
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    model, config = run_folder.load_run(run_dir)
    kind = config.student_kind
    manifest = student_manifest(
        model,
        config,
        name=name,
        version=version or dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S"),
        provenance=_provenance(model, config, precision, created_by),
    )

    run_tokenizer = run_dir / run_folder.TOKENIZER_FILE
    tokenizer = make_tokenizer(config, run_tokenizer)
    examples = build_examples(kind, dev_pairs, tokenizer, config.template)
    torch.set_num_threads(config.threads)
    torch_scores = predict_scores(model, manifest, examples, tokenizer.pad_id)

    with tempfile.TemporaryDirectory(prefix="export-") as tmp:
        fp32_dir = Path(tmp) / "fp32"
        fp32_dir.mkdir()
        export_bert_onnx(kind.export_module(model), fp32_dir / MODEL_FILE, kind.name)
        shutil.copyfile(run_tokenizer, fp32_dir / TOKENIZER_FILE)
        write_manifest(fp32_dir, manifest)  # a whole bundle, so the checks score it with the service's Scorer
        fp32_scores = bundle_scores(fp32_dir, dev_pairs)
        checks = check_fp32(torch_scores, fp32_scores)
        fp32_dev = ranking_metrics(dev_pairs, fp32_scores)
        bundle_dir, dev = fp32_dir, fp32_dev
        if precision != "fp32":
            bundle_dir = Path(tmp) / precision
            dev, reduced_checks = _derive_checked(
                precision, fp32_dir, bundle_dir, manifest, dev_pairs, fp32_scores
            )
            checks |= reduced_checks

        run_metrics = run_folder.read_metrics(run_dir)
        manifest.metrics = {
            "dev": {"data": config.dev_data, **dev},
            "export_checks": checks,
            "train": {
                "best_epoch": run_metrics.get("best_epoch"),
                "seconds": run_metrics.get("seconds"),
                "teacher": run_metrics.get("teacher"),
            },
        }
        if accept is not None:
            manifest.metrics["promotion"] = accept(bundle_dir)
        write_manifest(bundle_dir, manifest)
        # Replace the target only now that every check passed.
        staging = out_dir.with_name(out_dir.name + ".incoming")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(bundle_dir, staging)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)
    return read_manifest(out_dir)  # as written: with the files' checksums
